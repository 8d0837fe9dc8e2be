"""FedBN and DSBN: which batch-norm statistics a site trains, keeps and sends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgin.engine import Engine, SliceSet, TrainConfig
from fedgin.engine.norm import batchnorm_keys, domain_keys
from fedgin.engine.site import Site

SMALL = {"model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}, "batch_size": 4}
DSBN = {**SMALL, "method": "dsbn", "model": {**SMALL["model"], "domains": ["ct", "mri"]}}
CLASSES = ["disc", "square"]


def test_batchnorm_keys_are_found_by_type_not_name():
    model = Engine(CLASSES, TrainConfig.from_dict(SMALL), device="cpu").model
    keys = batchnorm_keys(model)
    assert keys and not any("bn" in k for k in keys)  # MONAI calls them ...adn.N...
    assert all(k.split(".")[-1] in {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
               for k in keys)


def test_fedbn_never_sends_or_replaces_batch_norm(toy_sites):
    site = Site(toy_sites["site-ct"], CLASSES, TrainConfig.from_dict({**SMALL, "method": "fedbn"}), device="cpu")
    bn = batchnorm_keys(site.engine.model)
    before = site.engine.get_weights()
    glob = {k: v + 1.0 for k, v in before.items()}  # a "global model" that differs everywhere
    res = site.train_round(glob, epochs=1, validate_global=False)
    assert res["weights"] and not (set(res["weights"]) & bn)
    assert not (set(site.local_weights()) & bn)
    # the site's batch norm started from its own values, not the global ones: gamma moved little from 1, not 2
    gamma = [k for k in bn if k.endswith(".weight")][0]
    assert abs(float(np.mean(site.engine.get_weights()[gamma])) - float(np.mean(before[gamma]))) < 0.5


def test_dsbn_trains_and_sends_only_its_modality_branch(toy_sites):
    site = Site(toy_sites["site-ct"], CLASSES, TrainConfig.from_dict(DSBN), device="cpu")
    model = site.engine.model
    mri = domain_keys(model, "mri")
    before = {k: v.copy() for k, v in site.engine.get_weights().items()}
    res = site.train_round(before, epochs=1, validate_global=False)
    after = site.engine.get_weights()
    for k in mri:  # the MRI branch's statistics never see a CT slice
        np.testing.assert_array_equal(after[k], before[k])
    ct_stats = [k for k in domain_keys(model, "ct") if k.endswith("running_mean")]
    assert any(not np.allclose(after[k], before[k]) for k in ct_stats)
    assert not (set(res["weights"]) & mri) and (set(res["weights"]) & domain_keys(model, "ct"))


def test_dsbn_branches_are_averaged_only_among_their_modality():
    """Through the real aggregator: a branch sent by CT sites only is the N_k-weighted mean of those CT sites."""
    pytest.importorskip("nvflare")
    from nvflare.apis.dxo import from_shareable
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import (
        InTimeAccumulateWeightedAggregator,
    )
    from nvflare.app_common.app_constant import AppConstants

    from fedgin.flare.executor import train_result

    sites = {"ct-a": ("ct", 30), "ct-b": ("ct", 10), "mri-a": ("mri", 50)}
    shared = {s: np.full(3, i + 1.0, np.float32) for i, s in enumerate(sites)}
    branch = {s: np.full(2, 10.0 * (i + 1), np.float32) for i, s in enumerate(sites)}
    agg = InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF")
    agg._initialize(agg.aggregation_weights, agg.exclude_vars, agg.expected_data_kind)
    ctx = FLContext()
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0)
    for s, (mod, n) in sites.items():
        reply = train_result({"conv": shared[s], f"bn.branches.{mod}.running_mean": branch[s]}, n, 0.5)
        reply.set_peer_props({ReservedKey.IDENTITY_NAME: s})
        reply.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        assert agg.accept(reply, ctx)
    out = from_shareable(agg.aggregate(ctx)).data
    np.testing.assert_allclose(out["bn.branches.ct.running_mean"], (30 * branch["ct-a"] + 10 * branch["ct-b"]) / 40)
    np.testing.assert_allclose(out["bn.branches.mri.running_mean"], branch["mri-a"])
    np.testing.assert_allclose(out["conv"], (30 * 1 + 10 * 2 + 50 * 3) / 90)


def test_dsbn_centralized_batches_are_single_modality_and_evaluation_picks_the_branch(toy_sites):
    cfg = TrainConfig.from_dict(DSBN)
    data = SliceSet(list(toy_sites.values()), "training")
    engine = Engine(CLASSES, cfg, device="cpu")
    for idx in data.epoch(4, np.random.default_rng(0), by_modality=True):
        data.modality_of(idx)  # raises if a batch mixes modalities
    stats = engine.train_epochs(data, 1)
    assert np.isfinite(stats.mean_loss)
    res = engine.evaluate(SliceSet(list(toy_sites.values()), "test"))
    assert {c["modality"] for c in res["cases"]} == {"ct", "mri"}
    with pytest.raises(ValueError, match="domains"):
        Engine(CLASSES, TrainConfig.from_dict({**SMALL, "method": "dsbn"}), device="cpu")
    with pytest.raises(ValueError, match="mixes modalities"):
        data.modality_of(np.arange(len(data)))
    torch.manual_seed(0)


def test_dsbn_naive_sends_the_untrained_branch_and_the_average_damps_it(toy_sites):
    """``dsbn-naive``: the CT site sends its MRI branch unchanged (a zero difference), so through the real
    aggregator the MRI branch moves by the MRI site's share N_mri/N of its own update, not by all of it."""
    pytest.importorskip("nvflare")
    from nvflare.apis.dxo import from_shareable
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import (
        InTimeAccumulateWeightedAggregator,
    )
    from nvflare.app_common.app_constant import AppConstants

    from fedgin.experiments.compare import default_methods
    from fedgin.flare.executor import train_result

    site = Site(toy_sites["site-ct"], CLASSES, TrainConfig.from_dict({**DSBN, "method": "dsbn-naive"}), device="cpu")
    mri = domain_keys(site.engine.model, "mri")
    before = {k: v.copy() for k, v in site.engine.get_weights().items()}
    res = site.train_round(before, epochs=1, validate_global=False)
    assert mri <= set(res["weights"])  # per-branch DSBN would leave these out
    for k in mri:
        np.testing.assert_array_equal(np.asarray(res["weights"][k], np.float64) - before[k], 0.0)
    assert "dsbn-naive" not in default_methods() and "dsbn" in default_methods()

    agg = InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF")
    agg._initialize(agg.aggregation_weights, agg.exclude_vars, agg.expected_data_kind)
    ctx = FLContext()
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0)
    for name, n, diff in (("ct", 90, 0.0), ("mri", 10, 1.0)):  # the paper's ~90/10 split
        reply = train_result({"bn.branches.mri.weight": np.full(2, diff, np.float32)}, n, 0.5)
        reply.set_peer_props({ReservedKey.IDENTITY_NAME: name})
        reply.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        assert agg.accept(reply, ctx)
    np.testing.assert_allclose(from_shareable(agg.aggregate(ctx)).data["bn.branches.mri.weight"], 0.1, rtol=1e-6)
