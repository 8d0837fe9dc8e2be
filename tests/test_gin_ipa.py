"""GIN-IPA: three views, complementary blending by a smooth field, and the consistency loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedgin.augment import GINIPA
from fedgin.augment.ipa import smooth_field
from fedgin.engine import Engine, SliceSet, TrainConfig
from fedgin.engine.trainer import consistency_loss


def test_field_is_smooth_and_in_unit_range():
    m = smooth_field(3, 64, 48, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 64, 48) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert float(m.amax((2, 3)).min()) > 0.99 and float(m.amin((2, 3)).max()) < 0.01
    assert float((m[..., 1:, :] - m[..., :-1, :]).abs().max()) < 0.2  # no jumps between neighbours


def test_first_two_views_blend_two_gin_draws_the_opposite_ways():
    x = torch.randn(2, 1, 32, 32)
    aug = GINIPA()
    out = aug(x, generator=torch.Generator().manual_seed(3))
    assert out.shape == (6, 1, 32, 32) and aug.views == 3
    g = torch.Generator().manual_seed(3)
    g1, g2, g3 = (aug.gin(x, generator=g) for _ in range(3))
    m = smooth_field(2, 32, 32, generator=g)
    torch.testing.assert_close(out[:2], g1 * m + g2 * (1 - m))
    torch.testing.assert_close(out[2:4], g1 * (1 - m) + g2 * m)
    torch.testing.assert_close(out[:2] + out[2:4], g1 + g2)  # complementary
    torch.testing.assert_close(out[4:], g3)


def test_consistency_loss_is_the_original_codes_kl_of_the_mean_to_each_view():
    """One pixel, two classes, views p1 = p2 = (0.5, 0.5), p3 = (0.9, 0.1): p̄ = (19/30, 11/30); the loss is
    KL(p̄ ‖ p_v) summed over the classes, averaged over the 3 views and the 2 classes (KLDivLoss "mean")."""
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(0.9), math.log(0.1)]]).view(3, 2, 1, 1)
    views = [(0.5, 0.5), (0.5, 0.5), (0.9, 0.1)]
    mean = (19 / 30, 11 / 30)
    by_hand = sum(m * math.log(m / q) for v in views for m, q in zip(mean, v)) / (3 * 2)
    assert float(consistency_loss(logits, 3)) == pytest.approx(by_hand, rel=1e-5)  # 0.0543...
    reverse = sum(q * math.log(q / m) for v in views for m, q in zip(mean, v)) / (3 * 2)
    assert abs(by_hand - reverse) > 1e-3  # the direction matters on this input
    # binary: one sigmoid channel is the two classes (1 - p, p)
    binary = torch.tensor([0.0, 0.0, math.log(0.1 / 0.9)]).view(3, 1, 1, 1)
    assert float(consistency_loss(binary, 3)) == pytest.approx(by_hand, rel=1e-5)


def test_consistency_loss_is_zero_only_for_agreeing_views():
    same = torch.randn(2, 3, 8, 8).repeat(3, 1, 1, 1)
    assert float(consistency_loss(same, 3)) < 1e-6
    assert float(consistency_loss(torch.randn(6, 3, 8, 8), 3)) > 1e-3
    assert float(consistency_loss(torch.randn(6, 1, 8, 8), 3)) > 1e-3  # binary (sigmoid) case


def test_engine_trains_gin_ipa(toy_sites):
    cfg = TrainConfig.from_dict({"method": "gin-ipa", "batch_size": 4,
                                 "model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}})
    engine = Engine(["disc", "square"], cfg, device="cpu")
    stats = engine.train_steps(SliceSet([toy_sites["site-ct"]], "training"), 2)
    assert np.isfinite(stats.mean_loss)
