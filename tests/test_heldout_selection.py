"""Held-out model selection at the server, in the real ``nvflare simulator``: a missing held-out datalist stops
the run (the selection itself is checked on the shared federation of tests/test_simulator.py)."""

from __future__ import annotations

import pytest

from fedgin.flare.job import build_job
from fedgin.flare.simulate import run_simulator

pytestmark = pytest.mark.slow


def test_a_missing_heldout_datalist_stops_the_run(toy_sites, tmp_path):
    job = build_job(tmp_path / "job", {
        "method": "none", "num_rounds": 1, "classes": ["disc", "square"], "channels": [8, 16, 32],
        "strides": [2, 2], "size_px": [32, 32], "local_steps": 1,
        "data_root": str(toy_sites["site-ct"].parents[1]), "heldout_datalist": str(tmp_path / "nope.json")})
    with pytest.raises(Exception):
        run_simulator(job, tmp_path / "ws", ["site-ct", "site-mri"], echo=None, timeout=300)
    logs = "".join(p.read_text() for p in (tmp_path / "ws").rglob("log.txt"))
    assert "held-out model selection cannot start" in logs and "nope.json" in logs
