"""The organ-aware slice sampler (``TrainConfig.sampler = "organ"``, the FedGIN authors' ``clients/sampler.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from fedgin.engine import Engine, SliceSet, TrainConfig
from fedgin.engine.data import organ_batches


def test_every_batch_holds_organ_and_background_slices_in_proportion():
    pool = np.arange(100, 300)
    fg = np.zeros(200, bool)
    fg[:20] = True  # 10 % of the slices show the organ
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(50):
        batches = organ_batches(pool, fg, 8, rng)
        assert len(batches) == 200 // 8
        for b in batches:
            assert len(b) == 8 and len(set(b.tolist())) == 8 and set(b.tolist()) <= set(pool.tolist())
            n_fg = int(np.isin(b, pool[fg]).sum())
            assert 1 <= n_fg <= 7
            shares.append(n_fg / 8)
    # Binomial(8, 0.1) floored at 1: E = 0.1 * 8 + P(0) = 0.8 + 0.9^8 = 1.23 organ slices per batch
    assert np.mean(shares) == pytest.approx((0.8 + 0.9**8) / 8, abs=0.01)


def test_one_kind_only_and_tiny_pools():
    rng = np.random.default_rng(1)
    only_bg = organ_batches(np.arange(10), np.zeros(10, bool), 4, rng)
    assert len(only_bg) == 2 and all(len(set(b.tolist())) == 4 for b in only_bg)
    tiny = organ_batches(np.arange(3), np.array([True, False, False]), 8, rng)
    assert len(tiny) == 1 and sorted(tiny[0].tolist()) == [0, 1, 2]  # the whole pool, each slice once


def test_the_engine_draws_organ_batches_per_modality(toy_sites):
    data = SliceSet(list(toy_sites.values()), "training")
    assert data.foreground.dtype == bool and data.foreground.shape == (len(data),)
    expected = np.array([np.asarray(data.batch(np.array([i]))[1]).any() for i in range(len(data))])
    assert (data.foreground == expected).all()
    rng = np.random.default_rng(2)
    batches = list(data.epoch(4, rng, by_modality=True, sampler="organ"))
    assert batches and all(len({data.modality_of(b)}) == 1 for b in batches)
    cfg = TrainConfig.from_dict({"sampler": "organ", "batch_size": 4,
                                 "model": {"channels": [8, 16], "strides": [2], "num_res_units": 0}})
    engine = Engine(data.classes, cfg, device="cpu")
    assert engine.train_epochs(data, 1).steps == len(data) // 4
    with pytest.raises(ValueError, match="sampler"):
        TrainConfig.from_dict({"sampler": "balanced"})
