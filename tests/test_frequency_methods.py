"""Tests of the frequency-domain augmentations (fedgin.augment.frequency): RaffeSDG and FMAug."""

from __future__ import annotations

import math

import pytest
import torch

from fedgin.augment.frequency import (
    FMAug,
    FMAugDraw,
    RaffeSDG,
    butterworth_filter,
    butterworth_highpass,
    gaussian_blur,
    high_frequency_component,
    raffesdg_cutoff_ratios,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 3, c: int = 1, h: int = 48, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    smooth = torch.exp(-(yy**2 + xx**2) / 0.2)
    x = 2.0 * smooth + 0.3 * torch.randn(b, c, h, w, generator=g)
    return (x - x.mean()) / x.std()


# ---------------------------------------------------------------------------------------------------------- RaffeSDG
def test_cutoff_bank_matches_reference():
    r = raffesdg_cutoff_ratios()
    assert len(r) == 12 and r[0] == 0.0 and math.isclose(r[-1], 0.1)
    assert RaffeSDG().cutoffs_px(256, 256) == [1] * 7 + [2, 4, 5, 8, 12]
    assert RaffeSDG().cutoffs_px(512, 512) == [1, 1, 1, 1, 1, 2, 3, 5, 8, 11, 17, 25]
    assert RaffeSDG().bank_size == 48


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("d0", [1, 2, 5, 25])
def test_butterworth_response(order, d0):
    h, w = 64, 96
    filt = butterworth_highpass(h, w, d0, order)
    assert filt.shape == (h, w)
    # DC gain is exactly 1 / (1 + d0^(2n)) (the "+1" in D + 1 keeps it finite), below 1/2 for every d0 >= 1
    assert math.isclose(float(filt[0, 0]), 1.0 / (1.0 + d0 ** (2 * order)), rel_tol=1e-5)
    assert float(filt[0, 0]) <= 0.5 + 1e-7
    # distance measured to the nearest corner: the four corners are all close to DC
    for i, j in [(0, w - 1), (h - 1, 0), (h - 1, w - 1)]:
        assert float(filt[i, j]) < float(filt[h // 2, w // 2])
    # far above the cutoff the filter passes (D = 32 at (32, 0))
    far = 1.0 / (1.0 + (d0 / 33.0) ** (2 * order))
    assert math.isclose(float(filt[h // 2, 0]), far, rel_tol=1e-5)
    if d0 <= 5:
        assert float(filt[h // 2, w // 2]) > 0.97
    # monotone non-decreasing in D along the first row up to the Nyquist column
    row = filt[0, : w // 2 + 1]
    assert bool((row[1:] >= row[:-1]).all())


def test_highpass_linear_step_kills_dc():
    x = torch.full((2, 1, 32, 32), 3.0)
    # the linear step scales a constant exactly by the DC gain ...
    for d0, n in [(1, 1), (2, 2), (25, 3)]:
        y = butterworth_filter(x, d0, n)
        gain = 1.0 / (1.0 + d0 ** (2 * n))
        assert torch.allclose(y, torch.full_like(y, 3.0 * gain), atol=1e-5)
    # ... so for a cutoff well above 1 px the constant (DC) is removed: mean within 1e-5 of the input mean
    y = butterworth_filter(x, 12, 3)  # gain 1 / (1 + 12^6) ~ 3e-7
    assert float(y.mean().abs()) < 1e-5 * 3.0
    # and a high frequency (checkerboard, D = Nyquist) passes almost untouched
    cb = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    cb = cb.float().expand(1, 1, 32, 32)
    assert torch.allclose(butterworth_filter(cb, 2, 2), cb, atol=1e-3)


def test_highpass_matches_full_fft_reference():
    x = _batch(2, 2, 24, 30, seed=3).double()
    d0 = torch.tensor([[1.0, 5.0], [2.0, 12.0]], dtype=torch.float64)
    n = torch.tensor([[1.0, 3.0], [2.0, 1.0]], dtype=torch.float64)
    got = butterworth_filter(x, d0, n).abs()
    for b in range(2):
        for c in range(2):
            filt = butterworth_highpass(24, 30, float(d0[b, c]), int(n[b, c])).double()
            ref = torch.fft.ifft2(torch.fft.fft2(x[b, c]) * filt).abs()
            assert torch.allclose(got[b, c], ref, atol=1e-6)  # H built in float32 here


def test_raffesdg_forward_properties():
    x = _batch(4, 2, 48, 40)
    aug = RaffeSDG()
    y = aug(x, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert not y.requires_grad
    flat = y.reshape(4, -1).double()
    assert torch.allclose(flat.mean(1), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(flat.std(1, correction=0), torch.ones(4, dtype=torch.float64), atol=1e-4)
    assert not torch.allclose(y, x, atol=1e-2)
    assert torch.equal(y, aug(x, generator=_gen(1)))
    assert not torch.equal(y, aug(x, generator=_gen(2)))


def test_raffesdg_draw_and_mix():
    aug = RaffeSDG()
    d = aug.sample(64, 1, 32, 32, generator=_gen(5))
    assert d.d0_px.shape == (2, 64, 1) and d.mask.shape == (64, 1, 32, 32)
    assert float(d.mask.min()) >= 0.0 and float(d.mask.max()) <= 1.0
    assert torch.allclose(d.mask.amin(dim=(1, 2, 3)), torch.zeros(64)) and torch.allclose(
        d.mask.amax(dim=(1, 2, 3)), torch.ones(64)
    )
    # smooth: neighbouring pixels differ far less than the [0, 1] range
    assert float((d.mask[..., 1:, :] - d.mask[..., :-1, :]).abs().mean()) < 0.1
    frac_id = float(aug.sample(4000, 1, 8, 8, generator=_gen(6)).identity.float().mean())
    assert abs(frac_id - 0.25) < 0.02
    assert set(d.order.unique().tolist()) <= {1.0, 2.0, 3.0}
    assert set(d.d0_px.unique().tolist()) <= set(float(v) for v in aug.cutoffs_px(32, 32))

    # mask = 1 everywhere and both views identity -> z-scored robust min-max of x = z-score of x
    x = _batch(2, 1, 32, 32, seed=7)
    ones = torch.ones(2, 2, 1, dtype=torch.bool)
    draw = type(d)(d0_px=torch.ones(2, 2, 1), order=torch.ones(2, 2, 1), identity=ones, mask=torch.ones(2, 1, 32, 32))
    y = aug.apply(x, draw)
    z = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), correction=0, keepdim=True)
    assert torch.allclose(y, z, atol=1e-4)
    # the mask weighs view 1: with mask 0 the (filtered) view 2 alone decides the output
    draw2 = type(d)(
        d0_px=torch.tensor([1.0, 12.0]).view(2, 1, 1).expand(2, 2, 1),
        order=torch.ones(2, 2, 1),
        identity=torch.tensor([True, False]).view(2, 1, 1).expand(2, 2, 1),
        mask=torch.zeros(2, 1, 32, 32),
    )
    y2 = aug.apply(x, draw2)
    assert not torch.allclose(y2, z, atol=1e-2)


# ------------------------------------------------------------------------------------------------------------- FMAug
def test_fmaug_bank():
    aug = FMAug()
    assert len(aug.bank) == 20 and aug.bank[0] == (5, 2.0) and aug.bank[-1] == (43, 21.0)


def test_hfc_of_constant_is_zero_and_blur_preserves_constant():
    x = torch.full((2, 1, 40, 36), 5.0)
    for w, s in FMAug().bank:
        assert torch.allclose(gaussian_blur(x, w, s), x, atol=1e-4)
        hfc = high_frequency_component(x, w, s, normalize=False)
        assert float(hfc.abs().max()) < 1e-4
        assert float(high_frequency_component(x, w, s).abs().max()) < 1e-3  # z-score of ~0 stays ~0
    # a linear ramp is a low frequency in the interior too (replicate padding only affects the borders)
    ramp = torch.linspace(0, 1, 36).expand(1, 1, 40, 36).contiguous()
    hfc = high_frequency_component(ramp, 5, 2.0, normalize=False)
    assert float(hfc[..., :, 3:-3].abs().max()) < 1e-5


def test_gaussian_blur_matches_2d_conv():
    x = _batch(2, 2, 20, 26, seed=4).double()
    w, s = 7, 3.0
    i = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    k = torch.exp(-0.5 * (i / s) ** 2)
    k = k / k.sum()
    k2 = (k[:, None] * k[None, :]).view(1, 1, w, w).expand(4, 1, w, w)
    xp = torch.nn.functional.pad(x.reshape(1, 4, 20, 26), (3, 3, 3, 3), mode="replicate")
    ref = torch.nn.functional.conv2d(xp, k2, groups=4).view_as(x)
    assert torch.allclose(gaussian_blur(x, w, s), ref, atol=1e-10)


def test_fmaug_cutmix_regions():
    x = _batch(3, 2, 48, 40, seed=2)
    aug = FMAug()
    draw = FMAugDraw(filter_a=0, filter_b=7, y0=5, x0=9, box_h=20, box_w=13)
    y = aug.apply(x, draw)
    hfc_a = high_frequency_component(x, *aug.bank[0])
    hfc_b = high_frequency_component(x, *aug.bank[7])
    inside = torch.zeros(48, 40, dtype=torch.bool)
    inside[5:25, 9:22] = True
    assert torch.allclose(y[..., inside], hfc_b[..., inside], atol=1e-6)
    assert torch.allclose(y[..., ~inside], hfc_a[..., ~inside], atol=1e-6)
    assert not torch.allclose(hfc_a[..., inside], hfc_b[..., inside], atol=1e-2)
    # each HFC is z-scored per image
    flat = hfc_a.reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.std(1, correction=0), torch.ones(3), atol=1e-4)


def test_fmaug_sample_and_forward():
    aug = FMAug()
    for seed in range(200):
        d = aug.sample(30, 20, generator=_gen(seed))
        assert d.filter_a != d.filter_b and 0 <= d.filter_a < 20 and 0 <= d.filter_b < 20
        assert 0 <= d.box_h < 30 and 0 <= d.box_w < 20
        assert d.y0 + d.box_h <= 30 and d.x0 + d.box_w <= 20
    x = _batch(2, 1, 30, 20)
    y = aug(x, generator=_gen(11))
    d = aug.sample(30, 20, generator=_gen(11))
    assert torch.equal(y, aug.apply(x, d))
    assert torch.equal(y, aug(x, generator=_gen(11)))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all() and not y.requires_grad


# -------------------------------------------------------------------------------------------------------------- both
@pytest.mark.parametrize("cls", [RaffeSDG, FMAug])
def test_contract(cls):
    aug = cls()
    assert list(aug.parameters()) == [] and list(aug.buffers()) == []
    x = _batch(2, 1, 32, 32).requires_grad_(True)
    y = aug(x, generator=_gen(0))
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(ValueError):
        aug(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError):
        aug(torch.zeros(2, 1, 1, 32, 32))
    # empty batch
    assert aug(torch.zeros(0, 1, 16, 16)).shape == (0, 1, 16, 16)


@pytest.mark.parametrize("cls", [RaffeSDG, FMAug])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_autocast_and_dtype(cls, dtype):
    aug = cls()
    x = _batch(2, 1, 32, 32).to(dtype)
    ref = aug(x, generator=_gen(3))
    assert ref.dtype == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = aug(x, generator=_gen(3))
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert torch.equal(y, ref)  # filters run in full precision with autocast off: autocast changes nothing
