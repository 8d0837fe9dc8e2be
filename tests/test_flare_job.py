"""The FLARE side without the simulator: sample-weighted aggregation of our replies, and the job builder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.apis.dxo import from_shareable  # noqa: E402
from nvflare.apis.fl_constant import ReservedKey  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402
from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import (  # noqa: E402
    InTimeAccumulateWeightedAggregator,
)
from nvflare.app_common.app_constant import AppConstants  # noqa: E402

from fedgin.flare.executor import train_result  # noqa: E402
from fedgin.flare.job import build_job, job_values, settable_variables  # noqa: E402


def test_aggregate_is_sample_weighted_average_of_site_models():
    """Σ N_k/N · θ_k for unequal N_k, through the real aggregator and the executor's reply format."""
    rng = np.random.default_rng(0)
    theta0 = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)}
    sites = {"site-ct": 300, "site-mri": 100, "site-x": 37}
    thetas = {s: {k: rng.normal(size=v.shape).astype(np.float32) for k, v in theta0.items()} for s in sites}
    agg = InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHT_DIFF")
    agg._initialize(agg.aggregation_weights, agg.exclude_vars, agg.expected_data_kind)
    fl_ctx = FLContext()
    fl_ctx.set_prop(AppConstants.CURRENT_ROUND, 0)
    for s, n in sites.items():
        reply = train_result({k: thetas[s][k] - theta0[k] for k in theta0}, n, 0.5)
        reply.set_peer_props({ReservedKey.IDENTITY_NAME: s})
        reply.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        assert agg.accept(reply, fl_ctx)
    diff = from_shareable(agg.aggregate(fl_ctx)).data
    total = sum(sites.values())
    for k in theta0:
        expected = sum(n / total * thetas[s][k] for s, n in sites.items())
        np.testing.assert_allclose(theta0[k] + diff[k], expected, rtol=1e-5, atol=1e-6)
        unweighted = np.mean([thetas[s][k] for s in sites], axis=0)
        assert not np.allclose(theta0[k] + diff[k], unweighted, atol=1e-3)  # the weights do matter


def _component(cfg: dict, cid: str) -> dict:
    return next(c for c in cfg.get("components", []) + cfg.get("workflows", []) if c.get("id") == cid)


def test_job_values_complete_the_defaults():
    values = job_values({"classes": ["liver"], "method": "dsbn"})
    assert values["num_classes"] == 1 and values["domains"] == ["ct", "mri"]
    assert set(settable_variables()) <= set(values)


def test_build_job_sets_values_and_copies_code(tmp_path):
    job = build_job(tmp_path / "job", {"method": "none", "num_rounds": 3, "classes": ["liver"],
                                       "channels": [8, 16, 32], "strides": [2, 2]}, name="fedavg")
    server = json.loads((job / "app/config/config_fed_server.json").read_text())
    client = json.loads((job / "app/config/config_fed_client.json").read_text())
    assert _component(server, "scatter_and_gather")["args"]["num_rounds"] == 3
    persistor = _component(server, "persistor")["args"]
    assert persistor["model"]["args"]["num_classes"] == 1 and persistor["meta"]["classes"] == ["liver"]
    executor = client["executors"][0]["executor"]["args"]
    assert executor["train"]["method"] == "none" and executor["train"]["model"]["channels"] == [8, 16, 32]
    assert not re.search(r'"\{[a-z_]+\}"', json.dumps(server))  # every value concrete: no {var} to substitute
    assert json.loads((job / "meta.json").read_text())["name"] == "fedavg"
    assert (job / "app/custom/fedgin/flare/executor.py").is_file()
    assert not (job / "app/custom/fedgin").is_symlink() and not list(job.rglob("__pycache__"))
    site = build_job(tmp_path / "site_job", {"num_rounds": 2}, code="site")
    assert not (site / "app/custom").exists()
    with pytest.raises(ValueError, match="unknown job variable"):
        build_job(tmp_path / "job2", {"rouns": 3})
    with pytest.raises(ValueError, match="unknown method"):
        build_job(tmp_path / "job2", {"method": "gni"})
    (tmp_path / "notajob").mkdir()
    (tmp_path / "notajob" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_job(tmp_path / "notajob", {})


def test_fedgin_job_takes_the_task_from_the_sites(toy_sites, tmp_path):
    import subprocess
    import sys

    data_root = toy_sites["site-ct"].parents[1]
    cmd = [sys.executable, "-m", "fedgin", "job", "--output", str(tmp_path / "job"), "--data-root", str(data_root)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    server = json.loads((tmp_path / "job/app/config/config_fed_server.json").read_text())
    persistor = _component(server, "persistor")["args"]
    assert persistor["meta"]["classes"] == ["disc", "square"] and persistor["meta"]["size_px"] == [32, 32]
    assert persistor["model"]["args"]["num_classes"] == 2
    bad = subprocess.run(cmd + ["--organs", "liver"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "differs" in bad.stderr


def test_every_train_config_value_reaches_the_sites_executor(tmp_path):
    import dataclasses

    from fedgin.engine import TrainConfig
    from fedgin.flare.executor import FedGINExecutor
    from fedgin.flare.job import TRAIN_VARIABLES, train_job_values

    assert set(TRAIN_VARIABLES) == {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    train = {"sampler": "organ", "consistency_weight": 2.0, "loss_variant": "authors", "weight_decay": 0.01,
             "plateau_patience": 5, "focal_gamma": 1.0, "eval_batch_size": 4, "augment_args": {"per_sample": False},
             "model": {"dropout": 0.3, "num_res_units": 1, "arch": "authors"}}
    values = {"classes": ["liver"], "method": "gin", "channels": [8, 16, 32], "strides": [2, 2],
              **train_job_values(train)}
    job = build_job(tmp_path / "job", values)
    client = json.loads((job / "app/config/config_fed_client.json").read_text())
    args = client["executors"][0]["executor"]["args"]
    cfg = FedGINExecutor(**args).train_config
    for key, value in train.items():
        if key != "model":
            assert getattr(cfg, key) == value, key
    assert (cfg.model.dropout, cfg.model.num_res_units, cfg.model.channels) == (0.3, 1, (8, 16, 32))
    assert cfg.model.arch == "authors"
    # the server builds the same network: its persistor's model args carry the architecture
    from fedgin.engine.model import SegUNet

    server = json.loads((job / "app/config/config_fed_server.json").read_text())
    net = SegUNet(**_component(server, "persistor")["args"]["model"]["args"])
    assert net.arch == "authors" and type(net.model).__name__ == "AuthorsUNetCore"
    with pytest.raises(ValueError, match="sampler"):
        build_job(tmp_path / "bad", {**values, "sampler": "balanced"})
    with pytest.raises(ValueError, match="not TrainConfig fields"):
        train_job_values({"num_rounds": 3})
