"""Held-out model selection at the server, in the real ``nvflare simulator``."""

from __future__ import annotations

import json

import pytest

from fedgin.flare.job import build_job
from fedgin.flare.simulate import run_simulator
from fedgin.workflows import evaluate
from conftest import write_toy_site

pytestmark = pytest.mark.slow


def test_server_selects_the_best_model_on_the_heldout_site(toy_sites, tmp_path):
    """Every round's global model is scored on the held-out validation half; the best one is kept, and
    its score re-measured from ``best_FL_global_model.pt`` equals the best score in the log."""
    root = tmp_path / "heldout"
    held = write_toy_site(root, "site-heldout", "mri", ["disc", "square"],
                          {"validation": 2, "test": 2}, size=32, seed=7)
    job = build_job(tmp_path / "job", {
        "method": "none", "num_rounds": 3, "classes": ["disc", "square"], "channels": [8, 16, 32],
        "strides": [2, 2], "size_px": [32, 32], "local_steps": 4, "batch_size": 4,
        "data_root": str(toy_sites["site-ct"].parents[1]), "heldout_datalist": str(held)})
    sim = run_simulator(job, tmp_path / "ws", ["site-ct", "site-mri"], echo=None)
    log = json.loads((sim["global_model"].parent / "heldout_validation.json").read_text())
    rounds = log["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and log["split"] == "validation"
    best = max(r["mean_dice"] for r in rounds)
    assert [r["best"] for r in rounds][0] is True
    assert sim["best_model"].is_file()
    rescored = evaluate(sim["best_model"], [held], "validation", progress=False)["mean_dice"]
    assert rescored == pytest.approx(best, abs=1e-6)
    final = evaluate(sim["global_model"], [held], "validation", progress=False)["mean_dice"]
    assert final == pytest.approx(rounds[-1]["mean_dice"], abs=1e-6)
    server_log = next(p for p in sim["logs"] if "server" in str(p)).read_text()
    assert "held-out validation Dice of the new global model" in server_log


def test_a_missing_heldout_datalist_stops_the_run(toy_sites, tmp_path):
    job = build_job(tmp_path / "job", {
        "method": "none", "num_rounds": 1, "classes": ["disc", "square"], "channels": [8, 16, 32],
        "strides": [2, 2], "size_px": [32, 32], "local_steps": 1,
        "data_root": str(toy_sites["site-ct"].parents[1]), "heldout_datalist": str(tmp_path / "nope.json")})
    with pytest.raises(Exception):
        run_simulator(job, tmp_path / "ws", ["site-ct", "site-mri"], echo=None, timeout=300)
    logs = "".join(p.read_text() for p in (tmp_path / "ws").rglob("log.txt"))
    assert "held-out model selection cannot start" in logs and "nope.json" in logs
