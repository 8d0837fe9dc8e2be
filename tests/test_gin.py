"""Tests of the GIN augmentation (fedgin.augment.gin) and the augmentation registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedgin.augment import AUGMENTATIONS, GIN, build_augmentation
from fedgin.augment.gin import GINNetwork


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _frob(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1).double(), dim=1)


def _reference(x: torch.Tensor, net: GINNetwork, per_sample: bool, eps: float = 1e-5) -> torch.Tensor:
    """Naive per-sample loop with true k x k kernels, F.leaky_relu and explicit blend / renormalisation."""
    b, c = x.shape[:2]
    kmax = net.weights[0].shape[-1]
    outs = []
    for i in range(b):
        j = i if per_sample else 0
        h = x[i : i + 1].double()
        for layer, (w, bias) in enumerate(zip(net.weights, net.biases)):
            c_out = w.shape[0] // (b if per_sample else 1)
            k = int(net.kernel_sizes[j, layer])
            o = (kmax - k) // 2
            wi = w[j * c_out : (j + 1) * c_out, :, o : o + k, o : o + k].double()
            h = F.conv2d(h, wi, bias[j * c_out : (j + 1) * c_out].double(), padding=k // 2)
            if layer < len(net.slopes):
                h = F.leaky_relu(h, negative_slope=float(net.slopes[layer][j]))
        a = float(net.alpha[i])
        mix = a * h + (1 - a) * x[i : i + 1].double()
        outs.append(mix * torch.linalg.vector_norm(x[i].double()) / (torch.linalg.vector_norm(mix) + eps))
    return torch.cat(outs)


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (2, 1, 20, 12), (4, 3, 17, 33), (3, 5, 8, 9)])
def test_shape_and_dtype_kept(shape, per_sample):
    x = torch.randn(shape)
    y = GIN(per_sample=per_sample)(x, _gen(0))
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x, atol=1e-3)  # it does augment


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("c", [1, 3])
def test_per_sample_frobenius_norm_preserved(c, per_sample):
    # very different scales per sample: a global (batch) renormalisation would fail this
    x = torch.randn(4, c, 24, 20) * torch.tensor([0.1, 1.0, 10.0, 100.0]).view(4, 1, 1, 1)
    y = GIN(per_sample=per_sample)(x, _gen(1))
    torch.testing.assert_close(_frob(y), _frob(x), rtol=1e-4, atol=0)


def test_alpha_zero_is_identity():
    x = torch.randn(3, 2, 16, 16)
    y = GIN(alpha_range=(0.0, 0.0))(x, _gen(2))
    torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("slope", ["random", "fixed"])
@pytest.mark.parametrize("c", [1, 3])
def test_matches_naive_per_sample_loop(c, slope, per_sample):
    gin = GIN(slope=slope, per_sample=per_sample)
    x = torch.randn(5, c, 14, 11, dtype=torch.float64)
    net = gin.sample_network(5, c, "cpu", _gen(3))
    ks = net.kernel_sizes
    assert set(ks.unique().tolist()) == {1, 3}  # both sizes are exercised (seeded)
    y = gin.apply_network(x, net)
    torch.testing.assert_close(y, _reference(x, net, per_sample), rtol=1e-9, atol=1e-9)
    # and forward with the same seed draws that same network
    torch.testing.assert_close(gin(x, _gen(3)), y, rtol=0, atol=0)


def test_network_draws_shapes_and_ranges():
    gin = GIN()
    net = gin.sample_network(64, 1, "cpu", _gen(4))
    assert [tuple(w.shape) for w in net.weights] == [(128, 1, 3, 3), (128, 2, 3, 3), (128, 2, 3, 3), (64, 2, 3, 3)]
    assert [tuple(b.shape) for b in net.biases] == [(128,), (128,), (128,), (64,)]
    assert net.kernel_sizes.shape == (64, 4)
    # k = 1 kernels are zero outside their centre
    w0 = net.weights[0].view(64, 2, 1, 3, 3)
    k1 = net.kernel_sizes[:, 0] == 1
    assert 0 < int(k1.sum()) < 64
    ring = torch.ones(3, 3, dtype=torch.bool)
    ring[1, 1] = False
    assert (w0[k1][..., ring] == 0).all()
    assert (w0[~k1][..., ring] != 0).all()
    assert (w0[..., 1, 1] != 0).all()
    # weights ~ N(0, 1), no fan-in scaling
    w_all = torch.cat([w.view(64, -1, 3, 3)[..., 1, 1].flatten() for w in net.weights])
    assert 0.8 < float(w_all.std()) < 1.2
    b_all = torch.cat(net.biases)
    assert 0.8 < float(b_all.std()) < 1.2 and abs(float(b_all.mean())) < 0.2
    # slopes: one per activated layer per sample, ~ U(0.01, 0.3)
    assert len(net.slopes) == 3
    s = torch.stack(net.slopes)
    assert s.shape == (3, 64)
    assert float(s.min()) >= 0.01 and float(s.max()) <= 0.3
    assert float(s.std()) > 0.03
    a = net.alpha
    assert a.shape == (64,) and float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.std()) > 0.1


def test_fixed_slope_is_0_01_and_shared_network():
    net = GIN(slope="fixed", per_sample=False).sample_network(8, 1, "cpu", _gen(5))
    assert all(torch.equal(s, torch.full((1,), 0.01)) for s in net.slopes)
    assert net.weights[0].shape == (2, 1, 3, 3) and net.kernel_sizes.shape == (1, 4)
    assert net.alpha.shape == (8,)  # alpha stays per sample


def test_shift_equivariance_away_from_borders():
    # content inside [14, 26)^2 of a 40x40 image; the 4-layer 3x3 receptive field reaches 4 px, the
    # zero-padding border effects reach 4 px into the image: with shifts of <= 3 px both stay apart.
    x = torch.zeros(3, 2, 40, 40, dtype=torch.float64)
    x[:, :, 14:26, 14:26] = torch.randn(3, 2, 12, 12, dtype=torch.float64)
    shifts = (3, -2)
    xs = torch.roll(x, shifts, dims=(2, 3))
    gin = GIN(kernel_sizes=(3,))
    y = gin(x, _gen(6))
    ys = gin(xs, _gen(6))
    torch.testing.assert_close(_frob(ys), _frob(y), rtol=1e-10, atol=0)
    crop = (slice(None), slice(None), slice(8, 32), slice(8, 32))
    torch.testing.assert_close(ys[crop], torch.roll(y, shifts, dims=(2, 3))[crop], rtol=1e-9, atol=1e-9)


def test_pointwise_when_kernel_size_one():
    # with k = 1 only, g is a per-pixel map: it commutes with any permutation of pixels
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    perm = torch.randperm(120, generator=_gen(7))
    xp = x.flatten(2)[..., perm].view_as(x)
    gin = GIN(kernel_sizes=(1,))
    y, yp = gin(x, _gen(8)), gin(xp, _gen(8))
    torch.testing.assert_close(yp, y.flatten(2)[..., perm].view_as(x), rtol=1e-10, atol=1e-10)
    # while 3x3 kernels mix neighbours
    gin3 = GIN(kernel_sizes=(3,))
    y3, y3p = gin3(x, _gen(8)), gin3(xp, _gen(8))
    assert not torch.allclose(y3p, y3.flatten(2)[..., perm].view_as(x), atol=1e-3)


def test_each_sample_gets_its_own_network():
    x = torch.randn(1, 1, 16, 16).expand(4, 1, 16, 16).contiguous()
    y = GIN(alpha_range=(1.0, 1.0))(x, _gen(9))
    for i in range(4):
        for j in range(i + 1, 4):
            assert (y[i] - y[j]).abs().max() > 1e-3
    # per_sample=False: one network for the whole batch
    ys = GIN(alpha_range=(1.0, 1.0), per_sample=False)(x, _gen(9))
    for i in range(1, 4):
        torch.testing.assert_close(ys[i], ys[0], rtol=1e-6, atol=1e-6)
    # ... but alpha is still drawn per sample
    yb = GIN(per_sample=False)(x, _gen(9))
    assert (yb[0] - yb[1]).abs().max() > 1e-3


def test_reproducible_with_seed():
    x = torch.randn(4, 1, 32, 32)
    gin = GIN()
    torch.testing.assert_close(gin(x, _gen(10)), gin(x, _gen(10)), rtol=0, atol=0)
    assert (gin(x, _gen(10)) - gin(x, _gen(11))).abs().max() > 1e-3
    # default RNG
    torch.manual_seed(12)
    a = gin(x)
    torch.manual_seed(12)
    b = gin(x)
    c = gin(x)  # a new network at every call
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_no_parameters_no_buffers_no_grad():
    gin = GIN()
    assert list(gin.parameters()) == [] and list(gin.buffers()) == []
    assert gin.state_dict() == {}
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    with torch.enable_grad():
        y = gin(x, _gen(13))
    assert not y.requires_grad and y.grad_fn is None


def test_autocast_and_dtypes():
    x = torch.randn(3, 1, 32, 32)
    gin = GIN()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gin(x, _gen(14))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(_frob(y), _frob(x), rtol=1e-4, atol=0)
    # bf16 convs: close to, but not bit-identical with, the float32 result
    y32 = gin(x, _gen(14))
    assert not torch.equal(y, y32)
    assert float((y - y32).norm() / y32.norm()) < 0.1
    for dt in (torch.float64, torch.bfloat16, torch.float16):
        yd = gin(x.to(dt), _gen(14))
        assert yd.dtype == dt and torch.isfinite(yd).all()


def test_input_and_generator_validation():
    gin = GIN()
    with pytest.raises(ValueError, match="4-D"):
        gin(torch.randn(1, 16, 16))
    with pytest.raises(ValueError, match="floating"):
        gin(torch.zeros(1, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="generator"):
        gin(torch.empty(1, 1, 8, 8, device="meta"), _gen(0))  # CPU generator, meta input
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            gin(torch.randn(1, 1, 8, 8), _gen(0, "cuda"))
    with pytest.raises(ValueError):
        GIN(kernel_sizes=(2,))
    with pytest.raises(ValueError):
        GIN(slope="learned")
    with pytest.raises(ValueError):
        gin.apply_network(torch.randn(3, 1, 8, 8), gin.sample_network(2, 1))
    assert gin(torch.randn(0, 1, 8, 8)).shape == (0, 1, 8, 8)


def test_registry():
    assert {"none", "gin"} <= set(AUGMENTATIONS)
    x = torch.randn(2, 1, 8, 8)
    assert build_augmentation("none")(x, _gen(0)) is x
    g = build_augmentation("gin", slope="fixed", per_sample=False)
    assert isinstance(g, GIN) and g.slope == "fixed" and not g.per_sample
    with pytest.raises(ValueError, match="gin"):
        build_augmentation("nope")
