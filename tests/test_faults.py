"""Faults against the real NVFlare runtime (simulator): bad updates and a site whose loss turns NaN (resuming a
stopped run: tests/test_simulator.py).

Three sites train; ``site-bad`` runs the real Executor on real data, but test-only filters (tests/fault_injection.py,
shipped in its own app) break what it sends, or poison what it receives, one way per round.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvflare")

from conftest import write_toy_site  # noqa: E402
from fedgin.flare.job import build_job  # noqa: E402
from fedgin.flare.simulate import run_simulator  # noqa: E402

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
CLASSES = ["disc"]
SITES = {"site-ct": ("ct", 0), "site-mri": ("mri", 1), "site-bad": ("ct", 2)}
TINY = {"classes": CLASSES, "channels": [8, 16, 32], "strides": [2, 2], "local_steps": 2, "size_px": [32, 32],
        "batch_size": 4}
# round -> how site-bad breaks its update (tests/fault_injection.py); NAN_LOSS_ROUND: its loss becomes NaN
PLAN = {0: "nan", 1: "inf", 2: "shape", 3: "extra_key", 4: "missing_key", 5: "count", 7: "kind"}
NAN_LOSS_ROUND = 6
REASON = {"nan": "non-finite", "inf": "non-finite", "shape": "shape mismatch", "extra_key": "not in the global model",
          "missing_key": "missing", "count": "NUM_STEPS_CURRENT_ROUND", "kind": "data kind"}


def _data(root: Path) -> Path:
    for site, (modality, seed) in SITES.items():
        write_toy_site(root, site, modality, CLASSES, {"training": 2, "validation": 1}, seed=seed)
    return root


def _with_faulty_site(job: Path) -> Path:
    """Give site-bad its own app: the same configs plus the fault-injection filters and their code."""
    meta = json.loads((job / "meta.json").read_text())
    meta["deploy_map"] = {"app": ["server", "site-ct", "site-mri"], "app_bad": ["site-bad"]}
    (job / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(job / "app", job / "app_bad")
    shutil.copy(HERE / "fault_injection.py", job / "app_bad" / "custom" / "fault_injection.py")
    cfg_path = job / "app_bad" / "config" / "config_fed_client.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["task_result_filters"][0]["filters"].insert(
        0, {"path": "fault_injection.CorruptUpdate", "args": {"plan": {str(k): v for k, v in PLAN.items()}}})
    cfg["task_data_filters"] = [{"tasks": ["train"], "filters": [
        {"path": "fault_injection.PoisonGlobalModel", "args": {"rounds": [NAN_LOSS_ROUND]}}]}]
    cfg_path.write_text(json.dumps(cfg, indent=1))
    return job


def test_bad_updates_are_rejected_and_a_nan_loss_site_sends_nothing(tmp_path):
    data = _data(tmp_path / "data")
    rounds = max(*PLAN, NAN_LOSS_ROUND) + 1
    # min_clients 2 of 3, so a failing site does not stop a round; the server still waits for the third
    job = _with_faulty_site(build_job(tmp_path / "job", {**TINY, "num_rounds": rounds, "data_root": str(data),
                                                         "method": "gin", "wait_time_after_min_received": 60}))
    res = run_simulator(job, tmp_path / "ws", list(SITES), threads=3, echo=None, timeout=600)
    server_log = (res["workspace"] / "server" / "log.txt").read_text()
    bad_log = (res["workspace"] / "site-bad" / "log.txt").read_text()

    for rnd, mode in PLAN.items():
        rejected = re.findall(rf"REJECTED update of site-bad at round {rnd}: (.*)", server_log)
        assert rejected and REASON[mode] in rejected[0], (rnd, mode, rejected)
        assert f"FAULT INJECTION: round {rnd}: sending a {mode} update" in bad_log
    # the site whose loss became NaN reported an error instead of weights, and the round went on without it
    assert re.search(rf"round {NAN_LOSS_ROUND}: global model replaced by NaN", bad_log)
    assert re.search(r"train: training loss is nan at step \d+; no weights are sent", bad_log)
    assert f"Ignore the result from site-bad at round {NAN_LOSS_ROUND}. Result error code: EXECUTION_EXCEPTION" \
        in server_log
    assert f"REJECTED update of site-bad at round {NAN_LOSS_ROUND}" not in server_log
    for rnd in range(rounds):
        for good in ("site-ct", "site-mri"):
            assert f"Contribution from {good} ACCEPTED by the aggregator at round {rnd}." in server_log
        assert f"Contribution from site-bad ACCEPTED by the aggregator at round {rnd}." not in server_log
    assert f"Round {rounds - 1} finished." in server_log

    state = torch.load(res["global_model"], map_location="cpu", weights_only=True)
    assert state["fedgin_round"]["round"] == rounds - 1
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert res["best_model"].is_file()
    cross = json.loads(res["cross_site"].read_text())
    assert np.isfinite(cross["site-ct"]["SRV_FL_global_model.pt"]["val_dice"])
