"""One small federation in the real ``nvflare simulator``, read by several tests: phantom → prepare → job →
2 sites × 2 rounds with server-side held-out model selection; then a resumed run continues it.

The simulator exits 0 even when a client crashes, so the tests assert on what the run produced. The federation
runs once per module (each simulator run costs ~20 s of process start-up and shut-down on 2 cores); every test
here only reads it, except the resume test, which starts a second run from its global model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("nvflare")

from fedgin.data import prepare_site  # noqa: E402
from fedgin.flare.job import build_job, make_recipe  # noqa: E402
from fedgin.flare.persistor import read_round  # noqa: E402
from fedgin.flare.simulate import run_simulator  # noqa: E402
from fedgin.phantom import generate_dataset  # noqa: E402
from fedgin.engine.evaluation import evaluate  # noqa: E402
from leak_checks import check_outgoing  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]
ORGANS = ["liver", "spleen"]
SITES = {"site-ct": "ct", "site-mri": "mri"}
GRID = dict(spacing=8.0, size=48, organs=ORGANS, progress=False)


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """The federation's folders, job values and ``run_simulator`` result (2 rounds, method gin)."""
    tmp = tmp_path_factory.mktemp("federation")
    for site, modality in SITES.items():
        generate_dataset(tmp / "raw" / modality, modality, 3, seed=1, progress=False)
        prepare_site(layout="totalseg", input_dir=tmp / "raw" / modality, output_dir=tmp / "data" / site,
                     site=site, modality=modality, **GRID)
    # a held-out MRI centre outside the federation's data root: one validation case, one test case
    ids = generate_dataset(tmp / "raw" / "heldout", "mri", 2, seed=5, progress=False)
    held = prepare_site(layout="totalseg", input_dir=tmp / "raw" / "heldout", output_dir=tmp / "heldout",
                        site="site-heldout", modality="mri", case_splits={ids[0]: "validation", ids[1]: "test"},
                        **GRID)
    values = {"method": "gin", "classes": ORGANS, "data_root": str(tmp / "data"), "channels": [8, 16, 32],
              "strides": [2, 2], "local_steps": 2, "size_px": [48, 48], "spacing_mm": [8.0, 8.0],
              "heldout_datalist": str(held)}
    recipe = make_recipe({**values, "num_rounds": 2})  # NVFlare's Job API, run in SimEnv
    res = run_simulator(recipe, tmp / "ws", list(SITES), echo=None, timeout=480)  # raises on a Traceback
    return SimpleNamespace(tmp=tmp, values=values, res=res, ws=res["workspace"], heldout=held)


def test_two_sites_two_rounds_in_the_simulator(federation, tmp_path):
    res, ws, data = federation.res, federation.ws, federation.tmp / "data"
    for key in ("global_model", "best_model", "cross_site"):
        assert res[key].is_file(), key
    state = torch.load(res["global_model"], map_location="cpu", weights_only=True)["model"]
    assert any(k.endswith("running_mean") for k in state)  # a whole U-Net state dict, BN buffers included
    cross = json.loads(res["cross_site"].read_text())
    assert set(cross) == set(SITES)
    for site in SITES:
        assert {"SRV_FL_global_model.pt", "SRV_best_FL_global_model.pt", *SITES} <= set(cross[site])
        assert 0.0 <= cross[site]["SRV_FL_global_model.pt"]["val_dice"] <= 1.0
    for site in SITES:
        assert list((res["tb_events"] / site).glob("events.out.tfevents.*")), site
    # what left each site, as its own audit recorded it: weights, the sample count and metrics, nothing else
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for site in SITES:
        sent = check_outgoing(ws / site / "simulate_job" / "outgoing_audit.jsonl", data / site / "datalist.json",
                              shapes)
        assert sent == {"train": 2, "submit_model": 1, "validate": 4}, sent
    log = (ws / "site-ct" / "log.txt").read_text()
    assert "round 2/2" in log and "Traceback" not in log
    # the global model file carries what prediction needs, even copied away from its job
    alone = tmp_path / "elsewhere" / "FL_global_model.pt"
    alone.parent.mkdir()
    alone.write_bytes(res["global_model"].read_bytes())
    from fedgin.inference.predict import Predictor

    p = Predictor(alone, device="cpu")
    assert (p.classes, p.size, p.spacing, p.clip) == (ORGANS, 48, 8.0, [0.5, 99.5])
    # the global model file is usable by the engine's evaluation
    out = evaluate(res["global_model"], [data / s / "datalist.json" for s in SITES], "test", progress=False)
    assert {c["modality"] for c in out["cases"]} == {"ct", "mri"}


def test_server_selects_the_best_model_on_the_heldout_site(federation):
    """Every round's global model is scored on the held-out validation split; the best one is kept, and its
    score re-measured from ``best_FL_global_model.pt`` equals the best score in the log."""
    res, held = federation.res, federation.heldout
    log = json.loads((res["global_model"].parent / "heldout_validation.json").read_text())
    rounds = log["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and log["split"] == "validation"
    best = max(r["mean_dice"] for r in rounds)
    assert rounds[0]["best"] is True
    rescored = evaluate(res["best_model"], [held], "validation", progress=False)["mean_dice"]
    assert rescored == pytest.approx(best, abs=1e-6)
    final = evaluate(res["global_model"], [held], "validation", progress=False)["mean_dice"]
    assert final == pytest.approx(rounds[-1]["mean_dice"], abs=1e-6)
    server_log = (federation.ws / "server" / "log.txt").read_text()
    assert "held-out validation Dice of the new global model" in server_log


def test_a_stopped_run_resumes_from_its_persisted_global_model(federation, tmp_path):
    """The federation is a "stopped" run of 2 of 3 rounds; a job built from its global model runs only round 2,
    starting from the saved weights."""
    first, values, sites = federation.res, federation.values, list(SITES)
    assert read_round(first["global_model"])["round"] == 1
    job = build_job(tmp_path / "job", {**values, "num_rounds": 3}, resume_from=first["global_model"])
    server_cfg = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    sag = next(w for w in server_cfg["workflows"] if w["id"] == "scatter_and_gather")["args"]
    assert (sag["start_round"], sag["num_rounds"]) == (2, 1)
    assert (job / "app" / "config" / first["global_model"].name).is_file()  # the model travels with the job
    second = run_simulator(job, tmp_path / "ws", sites, echo=None, timeout=480)  # an exported job folder
    ws = second["workspace"]
    log = (ws / "server" / "log.txt").read_text()
    assert "resuming from" in log and "Round 2 started." in log and "Round 2 finished." in log
    assert "Round 0 started." not in log and "Round 1 started." not in log
    assert read_round(second["global_model"])["round"] == 2
    history = [h["round"] for h in read_round(second["global_model"])["history"]]
    jobs = [h["job_id"] for h in read_round(second["global_model"])["history"]]
    assert history == [0, 1, 2]  # every round that made the model, the first run's carried over
    assert jobs[:2] == [read_round(first["global_model"])["job_id"]] * 2  # (the simulator names every job alike)
    site_log = (ws / "site-ct" / "log.txt").read_text()
    assert "round 3/3" in site_log and "round 2/3" not in site_log
    # it started from the saved weights, not from a fresh model: the first model site-ct validates in the resumed
    # run scores what the saved model scored in the first run's cross-site evaluation on the same cases
    first_dice = json.loads(first["cross_site"].read_text())["site-ct"]["SRV_FL_global_model.pt"]["val_dice"]
    resumed_dice = float(re.search(r"round 3/3: global model val Dice ([0-9.]+)", site_log).group(1))
    assert resumed_dice == pytest.approx(first_dice, abs=1e-4)

    with pytest.raises(ValueError, match="does not fit"):
        build_job(tmp_path / "j", {**values, "num_rounds": 3, "channels": [8, 16, 64]},
                  resume_from=first["global_model"])
    with pytest.raises(ValueError, match="nothing left"):
        build_job(tmp_path / "j", {**values, "num_rounds": 2}, resume_from=first["global_model"])
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a global model"):
        build_job(tmp_path / "j", {**values, "num_rounds": 3}, resume_from=tmp_path / "plain.pt")
    assert not (tmp_path / "j").exists()


def test_the_exported_job_runs_in_nvflare_simulator(federation, tmp_path):
    """``python jobs/fedgin/job.py --export`` writes the job folder (NVFlare's recipe export); the deprecated but
    still shipped ``nvflare simulator`` command runs it to the end."""
    import subprocess
    import sys

    from fedgin.flare.simulate import find_artifacts, nvflare_command, simulator_policy

    repo = Path(__file__).resolve().parents[1]
    sets = ["num_rounds=1", "local_steps=2", "channels=[8,16,32]", "strides=[2,2]", "share_local_models=false"]
    cmd = [sys.executable, str(repo / "jobs" / "fedgin" / "job.py"), "--data-root", str(federation.tmp / "data"),
           "--export", "--export-dir", str(tmp_path / "jobs"), *[x for s in sets for x in ("--set", s)]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    job = tmp_path / "jobs" / "fedgin"
    assert (job / "meta.json").is_file() and (job / "app" / "custom" / "fedgin" / "flare" / "executor.py").is_file()
    ws = tmp_path / "ws"
    simulator_policy(ws)
    run = subprocess.run(nvflare_command("simulator", str(job), "-w", str(ws), "-c", "site-ct,site-mri", "-t", "2"),
                         capture_output=True, text=True, timeout=480, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:]
    res = find_artifacts(ws)
    assert res["global_model"].is_file() and res["cross_site"].is_file()
    assert not [p for p in res["logs"] if "Traceback" in p.read_text()]
    assert read_round(res["global_model"])["round"] == 0


def test_mlflow_tracking_records_every_sites_metrics(federation, tmp_path):
    """``tracking: both``: NVFlare's MLflowReceiver on the server writes the job into the MLflow experiment
    ``fedgin``: one run per site (NVFlare's receiver names it ``<site>-<job id>-<job>-...``), all tagged with the
    job's id, each with the site's validation Dice per round and training loss, read back through MLflow's own
    client; TensorBoard still gets the same metrics."""
    mlflow = pytest.importorskip("mlflow")
    from fedgin.flare.simulate import mlflow_store

    values = {**federation.values, "num_rounds": 2, "heldout_datalist": "", "tracking": "both",
              "share_local_models": False}
    res = run_simulator(make_recipe(values, name="tracked"), tmp_path / "ws", list(SITES), echo=None, timeout=480)
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_store(res["workspace"]))
    experiment = client.get_experiment_by_name("fedgin")
    runs = {r.info.run_name.split("-" + r.data.tags["job_id"][:6])[0]: r
            for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(SITES), sorted(runs)
    assert len({r.data.tags["job_id"] for r in runs.values()}) == 1  # one job
    for site, run in runs.items():
        assert {"val_dice_global_model", "train_loss"} <= set(run.data.metrics), (site, run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val_dice_global_model")
        assert len(history) == 2 and all(0.0 <= m.value <= 1.0 for m in history)
    for site in SITES:
        assert list((res["tb_events"] / site).glob("events.out.tfevents.*")), site
