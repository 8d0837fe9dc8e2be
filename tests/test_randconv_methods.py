"""Tests of the RC-Unet (fedgin.augment.randconv) and Pro-RandConv (fedgin.augment.prorandconv) augmentations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fedgin.augment.prorandconv import ProRandConv, deform_conv2d, smooth_noise
from fedgin.augment.randconv import RCUNetAug, random_linear_conv_stack


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).flatten(1).abs().amax(dim=1) > 1e-6


# ----------------------------------------------------------------------------------------------------- RC-Unet


def test_rc_conv_stack_is_linear_and_weights_follow_he_truncated_normal():
    aug = RCUNetAug(p=1.0)
    params = aug.sample(4, 2, generator=_gen(0))
    assert len(params.weights) == 3 and all(w.shape == (8, 1, 3, 3) for w in params.weights)
    # different kernels per layer and per image/channel
    assert not torch.allclose(params.weights[0], params.weights[1])
    assert not torch.allclose(params.weights[0][0], params.weights[0][1])
    x, z = torch.randn(4, 2, 16, 12, dtype=torch.float64), torch.randn(4, 2, 16, 12, dtype=torch.float64)
    ws = [w.double() for w in params.weights]
    a, b = 2.5, -0.7
    torch.testing.assert_close(
        random_linear_conv_stack(a * x + b * z, ws),
        a * random_linear_conv_stack(x, ws) + b * random_linear_conv_stack(z, ws),
    )
    # truncated normal: |w| <= 2 sigma of the underlying normal, and std ~ sqrt(2 / 9) (Keras HeNormal)
    big = torch.cat([w.flatten() for w in RCUNetAug(p=1.0).sample(4000, 1, generator=_gen(1)).weights])
    sigma = (2.0 / 9.0) ** 0.5 / 0.87962566103423978
    assert big.abs().max() <= 2 * sigma + 1e-6
    assert big.abs().max() > 1.9 * sigma
    assert abs(big.std().item() - (2.0 / 9.0) ** 0.5) < 0.01


def test_rc_matches_naive_per_image_reference():
    aug = RCUNetAug(p=1.0)
    x = torch.randn(3, 2, 15, 11) * 2 + 1
    params = aug.sample(3, 2, generator=_gen(2))
    y = aug.apply(x, params)
    for i in range(3):
        for c in range(2):
            v = x[i, c].double()
            h = ((v - v.min()) / (v.max() - v.min()))[None, None]
            for w in params.weights:
                h = F.conv2d(h, w[i * 2 + c : i * 2 + c + 1].double(), padding=1)
            h = (h - h.min()) / (h.max() - h.min())
            ref = (h - h.mean()) / h.std(unbiased=False) * v.std(unbiased=False) + v.mean()
            torch.testing.assert_close(y[i, c].double(), ref[0, 0], rtol=1e-4, atol=1e-4)


def test_rc_keeps_per_image_mean_std_and_differs_per_image():
    x1 = torch.randn(1, 1, 32, 32) * 3 + 5
    x = x1.expand(6, 1, 32, 32).contiguous()
    y = RCUNetAug(p=1.0)(x, _gen(3))
    assert _changed(x, y).all()
    for i in range(1, 6):  # identical inputs, different kernels per image
        assert not torch.allclose(y[0], y[i], atol=1e-3)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.std(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)


def test_rc_probability():
    x = torch.randn(400, 1, 8, 8)
    assert torch.equal(RCUNetAug(p=0.0)(x, _gen(4)), x)
    y = RCUNetAug(p=0.5)(x, _gen(5))
    changed = _changed(x, y)
    assert 0.4 < changed.float().mean().item() < 0.6
    assert torch.equal(y[~changed], x[~changed])  # unselected images are untouched, bit for bit
    params = RCUNetAug(p=0.5).sample(400, 1, generator=_gen(5))
    assert torch.equal(params.selected, changed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rc_shape_dtype_seed(dtype):
    x = torch.randn(4, 3, 20, 17).to(dtype)
    aug = RCUNetAug(p=1.0)
    y = aug(x, _gen(6))
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y.float()).all()
    assert torch.equal(y, aug(x, _gen(6)))
    assert not torch.equal(y, aug(x, _gen(7)))


def test_rc_constant_image_is_finite():
    x = torch.full((2, 1, 8, 8), 3.0)
    y = RCUNetAug(p=1.0)(x, _gen(8))
    torch.testing.assert_close(y, x)


# ------------------------------------------------------------------------------------------------ Pro-RandConv


@pytest.mark.parametrize("c", [1, 3])
def test_deform_conv_zero_offsets_equals_conv2d(c):
    x = torch.randn(2, c, 13, 9, dtype=torch.float64)
    w = torch.randn(c, c, 3, 3, dtype=torch.float64)
    out = deform_conv2d(x, w, torch.zeros(2, 18, 13, 9, dtype=torch.float64))
    torch.testing.assert_close(out, F.conv2d(x, w, padding=1), rtol=1e-9, atol=1e-9)


def test_deform_conv_offset_convention():
    # channels (2t, 2t+1) = (row, column) displacement of tap t, in pixels; zero outside the image
    x = torch.randn(1, 1, 10, 12, dtype=torch.float64)
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    # every tap displaced by +1 column: out[:, j] = conv(x)[:, j + 1] (conv evaluated one column past the edge)
    off = torch.zeros(1, 18, 10, 12, dtype=torch.float64)
    off[:, 1::2] = 1.0
    wide = F.conv2d(x, w, padding=(1, 2))  # column index i <-> column i - 1
    torch.testing.assert_close(deform_conv2d(x, w, off), wide[..., 2:14])
    # half a pixel down: bilinear average of conv rows i and i + 1
    off = torch.zeros(1, 18, 10, 12, dtype=torch.float64)
    off[:, 0::2] = 0.5
    tall = F.conv2d(x, w, padding=(2, 1))  # row index i <-> row i - 1
    torch.testing.assert_close(deform_conv2d(x, w, off), 0.5 * (tall[..., 1:11, :] + tall[..., 2:12, :]))


def test_prorandconv_repeats_one_block():
    aug = ProRandConv(p=1.0)
    x = torch.randn(2, 1, 24, 24)
    for seed in range(6):
        params = aug.sample(2, 1, 24, 24, generator=_gen(seed))
        if params.repeats >= 2:
            break
    assert params.repeats >= 2
    once = dataclasses.replace(params, repeats=1)
    y = x
    for _ in range(params.repeats):
        y = aug.apply(y, once)
    torch.testing.assert_close(aug.apply(x, params), y, rtol=1e-5, atol=1e-5)
    # and repeating changes the result (L matters)
    assert not torch.allclose(aug.apply(x, once), aug.apply(x, params), atol=1e-3)
    # forward uses the sampled L with the same draw order
    torch.testing.assert_close(aug(x, _gen(seed)), aug.apply(x, params))
    # L ~ U{1..10}
    ls = {aug.sample(1, 1, 8, 8, generator=_gen(s)).repeats for s in range(200)}
    assert ls == set(range(1, 11))


def test_prorandconv_params_distribution():
    aug = ProRandConv()
    p_small = aug.sample(2, 3, 32, 32, generator=_gen(10))
    assert p_small.weight.shape == (3, 3, 3, 3) and p_small.offsets.shape == (2, 18, 32, 32)
    assert p_small.gamma.shape == (3,) and p_small.beta.shape == (3,)
    sd_small = [aug.sample(1, 1, 32, 32, generator=_gen(s)).sigma_delta for s in range(100)]
    sd_big = [aug.sample(1, 1, 224, 224, generator=_gen(s)).sigma_delta for s in range(20)]
    assert max(sd_small) <= 0.2 and max(sd_big) > 0.3
    # Gaussian window: centre tap largest on average
    ws = torch.stack([aug.sample(1, 1, 8, 8, generator=_gen(s)).weight.abs()[0, 0] for s in range(300)]).mean(0)
    assert ws[1, 1] > ws[0, 0] and ws[1, 1] > ws[0, 1]


def test_prorandconv_offsets_are_smooth():
    params = ProRandConv().sample(2, 1, 64, 64, generator=_gen(11))
    off = params.offsets
    a, b = off[..., :, :-1].flatten(), off[..., :, 1:].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.5
    a, b = off[..., :-1, :].flatten(), off[..., 1:, :].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.5
    torch.testing.assert_close(off.std().item() / params.sigma_delta, 1.0, rtol=0.02, atol=0)
    white = smooth_noise((2, 18, 64, 64), 0.0, generator=_gen(11))
    a, b = white[..., :, :-1].flatten(), white[..., :, 1:].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_prorandconv_range_shape_dtype_seed(dtype):
    x = (torch.randn(3, 2, 20, 18) * 5).to(dtype)
    aug = ProRandConv(p=1.0)
    y = aug(x, _gen(12))
    assert y.shape == x.shape and y.dtype == dtype
    assert y.abs().max() <= 1.0
    assert (y.float().abs() < 1.0).float().mean() > 0.99
    assert torch.equal(y, aug(x, _gen(12)))
    assert not torch.equal(y, aug(x, _gen(13)))


def test_prorandconv_probability():
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(ProRandConv(p=0.0)(x, _gen(14)), x)
    aug = ProRandConv()  # default p = 0.5
    applied = [aug.sample(1, 1, 8, 8, generator=_gen(s)).applied for s in range(200)]
    assert 0.35 < sum(applied) / 200 < 0.65


# ------------------------------------------------------------------------------------------------------- both


@pytest.mark.parametrize("make", [lambda: RCUNetAug(p=1.0), lambda: ProRandConv(p=1.0)])
def test_common_contract(make):
    aug = make()
    assert list(aug.parameters()) == [] and list(aug.buffers()) == []
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    y = aug(x, _gen(20))
    assert not y.requires_grad and y.grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = aug(x.detach(), _gen(20))
    assert ya.dtype == torch.float32 and torch.isfinite(ya).all()
    torch.testing.assert_close(ya, y.detach())  # computed in float32 despite autocast
    with pytest.raises(ValueError):
        aug(torch.randn(1, 16, 16))
    with pytest.raises(ValueError):
        aug(torch.randn(1, 1, 1, 16, 16))
    with pytest.raises(ValueError):
        aug(torch.zeros(1, 1, 8, 8, dtype=torch.int64))
    assert aug(torch.randn(0, 1, 8, 8), _gen(0)).shape == (0, 1, 8, 8)
