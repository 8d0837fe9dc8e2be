"""The whole path in the real ``nvflare simulator`` at tiny size: phantom → prepare → job → 2 sites × 2 rounds.

The simulator exits 0 even when a client crashes, so the test asserts on what the run produced.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("nvflare")

from fedgin.data import prepare_site  # noqa: E402
from fedgin.flare.job import build_job  # noqa: E402
from fedgin.flare.simulate import run_simulator  # noqa: E402
from fedgin.phantom import generate_dataset  # noqa: E402
from fedgin.workflows import evaluate  # noqa: E402
from leak_checks import check_outgoing  # noqa: E402

pytestmark = pytest.mark.slow
ORGANS = ["liver", "spleen"]


def test_two_sites_two_rounds_in_the_simulator(tmp_path):
    sites = {"site-ct": "ct", "site-mri": "mri"}
    for site, modality in sites.items():
        generate_dataset(tmp_path / "raw" / modality, modality, 3, seed=1, progress=False)
        prepare_site(layout="totalseg", input_dir=tmp_path / "raw" / modality, output_dir=tmp_path / "data" / site,
                     site=site, modality=modality, organs=ORGANS, spacing=8.0, size=48, progress=False)
    job = build_job(tmp_path / "job", {"method": "gin", "num_rounds": 2, "classes": ORGANS,
                                       "data_root": str(tmp_path / "data"), "channels": [8, 16, 32],
                                       "strides": [2, 2], "local_steps": 2, "size_px": [48, 48],
                                       "spacing_mm": [8.0, 8.0]})
    res = run_simulator(job, tmp_path / "ws", list(sites), echo=None, timeout=480)  # raises on Traceback

    for key in ("global_model", "best_model", "cross_site"):
        assert res[key].is_file(), key
    state = torch.load(res["global_model"], map_location="cpu", weights_only=True)["model"]
    assert any(k.endswith("running_mean") for k in state)  # a whole U-Net state dict, BN buffers included
    cross = json.loads(res["cross_site"].read_text())
    assert set(cross) == set(sites)
    for site in sites:
        assert {"SRV_FL_global_model.pt", "SRV_best_FL_global_model.pt", *sites} <= set(cross[site])
        assert 0.0 <= cross[site]["SRV_FL_global_model.pt"]["val_dice"] <= 1.0
    for site in sites:
        assert list((res["tb_events"] / site).glob("events.out.tfevents.*")), site
    # what left each site, as its own audit recorded it: weights, the sample count and metrics, nothing else
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for site in sites:
        sent = check_outgoing(tmp_path / "ws" / site / "simulate_job" / "outgoing_audit.jsonl",
                              tmp_path / "data" / site / "datalist.json", shapes)
        assert sent == {"train": 2, "submit_model": 1, "validate": 4}, sent
    log = (tmp_path / "ws" / "site-ct" / "log.txt").read_text()
    assert "round 2/2" in log and "Traceback" not in log
    # the global model file carries what prediction needs, even copied away from its job
    alone = tmp_path / "elsewhere" / "FL_global_model.pt"
    alone.parent.mkdir()
    alone.write_bytes(res["global_model"].read_bytes())
    from fedgin.predict import Predictor

    p = Predictor(alone, device="cpu")
    assert (p.classes, p.size, p.spacing, p.clip) == (ORGANS, 48, 8.0, [0.5, 99.5])
    # the global model file is usable by the engine's evaluation
    out = evaluate(res["global_model"], [tmp_path / "data" / s / "datalist.json" for s in sites], "test",
                   progress=False)
    assert {c["modality"] for c in out["cases"]} == {"ct", "mri"}
