"""``fedgin compare`` at toy size: grid, federated FedBN through local models, reference test input, report files,
resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fedgin.experiments.compare import grid, run_grid

pytestmark = pytest.mark.slow


def test_grid_skips_cells_that_make_no_sense():
    cells = grid(["none", "gin", "dsbn", "fedbn", "fedda"], ["single-ct", "centralized", "federated"])
    assert ("single-ct", "dsbn") not in cells and ("centralized", "fedbn") not in cells
    assert ("centralized", "dsbn") in cells and ("federated", "fedda") in cells


def test_compare_writes_report_and_resumes(toy_sites, tmp_path, capsys):
    """Also --test-input reference: FMAug's FLARE job and its global model carry FreeSDG's test filter."""
    out = tmp_path / "cmp"
    grid_args = dict(rounds=1, channels=[8, 16, 32], test_input="reference")
    settings = ["centralized", "centralized-steps", "federated"]
    run_grid(toy_sites, out, ["fmaug", "fedbn"], settings, **grid_args)
    cells = ["centralized__fmaug__seed0", "centralized-steps__fmaug__seed0", "federated__fmaug__seed0",
             "federated__fedbn__seed0"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(cells)
    rows = list(csv.DictReader(open(out / "dice.csv")))
    assert {r["setting"] for r in rows} == set(settings) and {r["seed"] for r in rows} == {"0"}
    assert {r["geometry"] for r in rows} == {"source"}  # scored on each test volume's own grid
    assert {r["modality"] for r in rows} == {"ct", "mri"} and {r["class"] for r in rows} == {"disc", "square"}
    table = (out / "table.md").read_text()
    assert sum(line.startswith("|") for line in table.splitlines()) == 2 + len(cells) and "**" in table
    ratios = list(csv.DictReader(open(out / "ratios.csv")))
    assert [r["method"] for r in ratios] == ["fmaug"] and float(ratios[0]["ratio"]) > 0
    assert float(ratios[0]["ratio_steps_matched"]) > 0
    # step-matched: as many steps as the larger site (site-ct, 3 training cases x 6 slices) makes in 1 round
    from fedgin.experiments.compare import matched_steps
    from fedgin.engine import TrainConfig

    matched = json.loads((out / "runs" / "centralized-steps__fmaug__seed0" / "result.json").read_text())
    assert matched["steps"] == matched_steps(list(toy_sites.values()), 1) == 18 // TrainConfig().batch_size
    history = json.loads((out / "runs" / "centralized-steps__fmaug__seed0" / "train" / "history.json").read_text())
    assert history[-1]["step"] == matched["steps"]
    stats = list(csv.DictReader(open(out / "stats.csv")))
    assert {r["metric"] for r in stats} == {"dice", "hd95_mm", "nsd"} and all(r["p"] == "" for r in stats)
    assert (out / "dice.png").stat().st_size > 5000
    # the demo's per-round Dice picture, for the grid's first federated cell (no gin in this grid: fmaug); the toy
    # caches have no source scans, so no case picture (test_demo.py checks that one)
    assert (out / "dice_per_round_fmaug.png").stat().st_size > 5000 and not (out / "cases_fmaug.png").exists()
    assert all(r["nsd"] == "" or 0 <= float(r["nsd"]) <= 1 for r in rows) and any(r["hd95_mm"] for r in rows)
    boundary = (out / "boundary.md").read_text()
    assert "CT disc HD95 mm / NSD" in boundary and sum(line.startswith("|") for line in boundary.splitlines()) == 6
    fedbn = json.loads((out / "runs" / "federated__fedbn__seed0" / "result.json").read_text())
    assert fedbn["model"] == "local models" and {c["site"] for c in fedbn["cases"]} == {"site-ct", "site-mri"}
    assert set(fedbn["summary"]["per_modality"]) == {"ct", "mri"} and "n/a" not in table
    cfg = json.loads((out / "runs" / "federated__fmaug__seed0" / "job" / "app" / "config" / "config_fed_server.json")
                     .read_text())
    persistor = next(c for c in cfg["components"] if c["id"] == "persistor")
    assert persistor["args"]["model"]["args"]["test_input"] == "freesdg-hfc"
    from fedgin.engine.checkpoint import load_model_file

    model_file = next((out / "runs" / "federated__fmaug__seed0" / "workspace").rglob("FL_global_model.pt"))
    model, meta = load_model_file(model_file)
    assert model.test_input == "freesdg-hfc" and meta["model_config"]["test_input"] == "freesdg-hfc"
    from fedgin.reporting.curves import run_curves

    assert (out / "curves.png").stat().st_size > 10_000  # training curves read back from the TensorBoard events
    fed = run_curves(out / "runs" / "federated__fmaug__seed0")
    assert fed["dice"][0].tolist() == [1.0] and 0 <= fed["dice"][1][0] <= 1  # 1 round: the global model's Dice
    assert len(run_curves(out / "runs" / "centralized__fmaug__seed0")["loss"][0]) > 1
    conv = list(csv.DictReader(open(out / "convergence.csv")))
    assert {r["run"] for r in conv} >= {"federated__fmaug__seed0", "centralized__fmaug__seed0"}
    assert all(0 <= float(r["final"]) <= float(r["best"]) <= 1 for r in conv)
    # an interrupted grid resumes: finished cells are kept, a missing one is redone
    (out / "runs" / "centralized__fmaug__seed0" / "result.json").unlink()
    capsys.readouterr()
    run_grid(toy_sites, out, ["fmaug", "fedbn"], settings, **grid_args)
    log = capsys.readouterr().out
    assert log.count("done before, kept") == 3 and "centralized fmaug seed 0 ..." in log


def test_resume_refuses_a_grid_made_with_other_parameters(toy_sites, tmp_path):
    out = tmp_path / "cmp"
    run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="other parameters.*rounds"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=2, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="test_input"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], test_input="reference")
    with pytest.raises(ValueError, match="other parameters.*train"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], train={"sampler": "organ"})
    with pytest.raises(ValueError, match="distinct"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], seeds=[1, 1])


def test_more_seeds_resume_the_grid(toy_sites, tmp_path, capsys):
    """The seeds are not part of the grid's parameters: a grid run with seed 0 grows by seed 1, keeping seed 0's
    run; each seed trains its own model."""
    out = tmp_path / "cmp"
    run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32])
    capsys.readouterr()
    run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], seeds=[0, 1])
    log = capsys.readouterr().out
    assert log.count("done before, kept") == 1 and "single-ct none seed 1 ..." in log
    rows = list(csv.DictReader(open(out / "dice.csv")))
    by_seed = {k: [r["dice"] for r in rows if r["seed"] == k] for k in ("0", "1")}
    assert len(by_seed["0"]) == len(by_seed["1"]) == 2 * 2 and by_seed["0"] != by_seed["1"]


def test_train_values_reach_every_run(toy_sites, tmp_path):
    from fedgin.engine.checkpoint import load_model_file
    from fedgin.experiments.runs import train_run

    trained = train_run("local", "none", {"site-ct": toy_sites["site-ct"]}, tmp_path / "run", rounds=1,
                        channels=[8, 16], train={"sampler": "organ", "model": {"dropout": 0.1}})
    _, meta = load_model_file(trained["model"])
    assert meta["model_config"]["dropout"] == 0.1 and meta["model_config"]["channels"] == [8, 16]
    with pytest.raises(ValueError, match="own arguments"):
        train_run("local", "none", {"site-ct": toy_sites["site-ct"]}, tmp_path / "r2", rounds=1, channels=[8, 16],
                  train={"seed": 3})
    with pytest.raises(ValueError, match="sampler"):
        train_run("federated", "none", toy_sites, tmp_path / "r3", rounds=1, channels=[8, 16],
                  train={"sampler": "balanced"})
    assert not (tmp_path / "r3").exists()  # refused before any job was written


def _result(setting, method, pred_spleen):
    from fedgin.engine.metrics import summarise

    cases = [{"case": f"{m}{i}", "site": f"site-{m}", "modality": m,
              "dice": {"liver": 0.8, "spleen": 0.0 if pred_spleen[m] == 0 else 0.5},
              "voxels": {"liver": {"truth": 100, "pred": 90}, "spleen": {"truth": 20, "pred": pred_spleen[m]}}}
             for m in ("ct", "mri") for i in range(2)]
    summary = summarise(cases, ["liver", "spleen"])
    return {"setting": setting, "method": method, "classes": ["liver", "spleen"], "cases": cases,
            "summary": summary, "mean_dice": summary["mean_dice"]}


def _seeded(setting, method, seed, dice):
    """A result whose CT case i has liver Dice ``dice(i)`` (4 CT cases, no MRI)."""
    from fedgin.engine.metrics import summarise

    cases = [{"case": f"ct{i}", "site": "test-ct", "modality": "ct", "dice": {"liver": dice(i)},
              "hd95_mm": {"liver": 10 * (1 - dice(i))}, "nsd": {"liver": dice(i)},
              "voxels": {"liver": {"truth": 100, "pred": 90}}} for i in range(4)]
    summary = summarise(cases, ["liver"])
    return {"setting": setting, "method": method, "seed": seed, "classes": ["liver"], "cases": cases,
            "summary": summary, "mean_dice": summary["mean_dice"]}


def test_statistics_over_seeds_and_paired_marks(tmp_path):
    """3 seeds x 4 cases. gin beats "none" on all 12 (seed, case) pairs, by 0.1 + 0.01 i + 0.001 k: the exact
    two-sided Wilcoxon p is 2 / 2^12, so "none" is marked †. "rc" differs from gin by +-0.01 in alternating
    signs: p ~ 1, no mark. The cell statistics are the mean and sd of the 12 values, and the sd over the 3
    per-seed means; the table shows them with the CI."""
    import math

    from fedgin.experiments.compare import write_report

    cells = [("federated", "none"), ("federated", "gin"), ("federated", "rc")]
    results = []
    for k in range(3):
        results.append(_seeded("federated", "gin", k, lambda i, k=k: 0.7 + 0.02 * i + 0.01 * k))
        results.append(_seeded("federated", "none", k, lambda i, k=k: 0.6 + 0.01 * i + 0.009 * k))
        results.append(_seeded("federated", "rc", k, lambda i, k=k: 0.7 + 0.02 * i + 0.01 * k
                               + (0.01 if (i + k) % 2 else -0.01)))
    write_report(tmp_path, cells, results)
    stats = {(r["method"], r["class"], r["metric"]): r for r in csv.DictReader(open(tmp_path / "stats.csv"))
             if r["modality"] == "ct"}
    none = [0.6 + 0.01 * i + 0.009 * k for k in range(3) for i in range(4)]
    mean = sum(none) / 12
    sd = math.sqrt(sum((v - mean) ** 2 for v in none) / 11)
    seed_means = [0.6 + 0.015 + 0.009 * k for k in range(3)]
    s = stats[("none", "liver", "dice")]
    assert float(s["mean"]) == pytest.approx(mean) and float(s["sd"]) == pytest.approx(sd)
    assert float(s["sd_over_seeds"]) == pytest.approx(0.009) and s["n"] == "12" and s["seeds"] == "3"
    assert float(s["ci_low"]) < mean < float(s["ci_high"]) and sum(seed_means) / 3 == pytest.approx(mean)
    assert float(s["p"]) == pytest.approx(2 / 2**12) and float(s["gin_minus_method"]) > 0.1
    assert float(stats[("rc", "liver", "dice")]["p"]) > 0.5
    assert stats[("gin", "liver", "dice")]["p"] == ""  # the reference is not tested against itself
    assert float(stats[("none", "liver", "hd95_mm")]["gin_minus_method"]) < 0  # gin's HD95 is lower
    table = (tmp_path / "table.md").read_text()
    row = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]] for line in table.splitlines()
           if line.startswith("| federated")}
    assert row["none"][0] == f"{mean:.3f} ± {sd:.3f} ({float(s['ci_low']):.3f}–{float(s['ci_high']):.3f})†"
    assert row["gin"][0].startswith("**") and not row["rc"][0].endswith("†")
    assert "3 training seed(s) (0, 1, 2)" in table and "p < 0.05" in table


def test_a_collapsed_model_is_marked_not_shown_as_a_plain_zero(tmp_path, capsys):
    from fedgin.experiments.compare import write_report
    from fedgin.engine.metrics import EMPTY_MARK, empty_classes

    assert empty_classes([{"voxels": {"a": {"truth": 5, "pred": 0}}}, {"voxels": {"a": {"truth": 0, "pred": 0}}}],
                         ["a"]) == ["a"]
    assert empty_classes([{"voxels": {"a": {"truth": 0, "pred": 0}}}], ["a"]) == []  # nothing to find: no flag
    assert empty_classes([{"voxels": {"a": {"truth": 5, "pred": 1}}}], ["a"]) == []
    results = [_result("centralized", "gin", {"ct": 0, "mri": 7}), _result("federated", "gin", {"ct": 3, "mri": 7})]
    assert results[0]["summary"]["per_modality"]["ct"]["empty"] == ["spleen"]
    assert results[0]["summary"]["per_modality"]["mri"]["empty"] == []
    write_report(tmp_path, [("centralized", "gin"), ("federated", "gin")], results)
    table = (tmp_path / "table.md").read_text().splitlines()
    central = next(line for line in table if line.startswith("| centralized"))
    cells = [c.strip() for c in central.split("|")[3:-1]]  # CT liver, CT spleen, CT mean, MRI ...
    assert cells[1] == f"0.000 ± 0.000 (0.000–0.000) {EMPTY_MARK}" and cells[2].endswith(EMPTY_MARK)
    assert EMPTY_MARK not in cells[0]
    assert not any(EMPTY_MARK in c for c in cells[3:])
    assert any(line.startswith(f"{EMPTY_MARK}: the model predicts no voxel") for line in table)  # the footnote
    rows = list(csv.DictReader(open(tmp_path / "dice.csv")))
    flagged = {(r["setting"], r["modality"], r["class"]) for r in rows if r["collapsed_model"] == "1"}
    assert flagged == {("centralized", "ct", "spleen")}
    assert ("WARNING: centralized gin seed 0: the model predicts no voxel of spleen on any CT test case"
            in capsys.readouterr().out)


def test_experiment_tables_mark_collapsed_values():
    from fedgin.engine.metrics import EMPTY_MARK
    from fedgin.reporting.tables import markdown_table

    text = markdown_table(["run", "a", "b"], [["x", "0.000", "0.500"], ["y", "0.100", "0.400"]],
                          [[0.0, 0.5], [0.1, 0.4]], marks=[[True, False], [False, False]])
    x, y = (line for line in text.splitlines() if line.startswith("| x") or line.startswith("| y"))
    assert f"0.000 {EMPTY_MARK}" in x and "**0.500**" in x and "**0.100**" in y  # a collapsed value is never best
    assert text.rstrip().splitlines()[-1].startswith(EMPTY_MARK)


def test_late_gain_tells_a_rising_curve_from_a_flat_one():
    from fedgin.reporting.curves import late_gain

    assert late_gain(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])) == pytest.approx(0.2)  # (0.75) - (0.55)
    assert late_gain(np.array([0.1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])) == pytest.approx(0.0)
    assert np.isnan(late_gain(np.array([0.5, 0.6, 0.7])))  # under 4 points: no quarter to compare


def test_federated_optimisers_are_grid_rows_with_job_values_and_tracking(toy_sites, tmp_path, capsys):
    """``gin+fedprox`` is a federated-only row; ``job`` values reach the federated cell (here MLflow tracking,
    which is no grid parameter: another tracking resumes the grid) while a job value that changes results is one."""
    from fedgin.experiments.compare import default_methods
    from fedgin.flare.simulate import mlflow_store

    assert default_methods()[-3:] == ["gin+fedprox", "gin+fedopt", "gin+scaffold"]
    assert ("centralized", "gin+fedprox") not in grid(["gin+fedprox"], ["centralized", "federated"])
    out = tmp_path / "cmp"
    args = dict(rounds=1, channels=[8, 16, 32])
    run_grid(toy_sites, out, ["gin+fedprox"], ["centralized", "federated"], job={"tracking": "mlflow"}, **args)
    assert [p.name for p in (out / "runs").iterdir()] == ["federated__gin+fedprox__seed0"]
    assert "| federated | gin+fedprox |" in (out / "table.md").read_text()
    ws = next((out / "runs" / "federated__gin+fedprox__seed0" / "workspace").iterdir())
    assert mlflow_store(ws).startswith("sqlite:") and not list(ws.glob("server/simulate_job/tb_events"))
    from fedgin.reporting.run_figures import site_dice_series

    series = site_dice_series(ws)  # without TensorBoard: read back from MLflow, one series per site
    assert sorted(series) == ["site-ct", "site-mri"] and all(len(v[1]) == 1 for v in series.values())
    assert (out / "dice_per_round_gin_fedprox.png").is_file()
    capsys.readouterr()
    run_grid(toy_sites, out, ["gin+fedprox"], ["federated"], job={"tracking": "tensorboard"}, **args)
    assert "done before, kept" in capsys.readouterr().out
    with pytest.raises(ValueError, match="other parameters.*job"):
        run_grid(toy_sites, out, ["gin+fedprox"], ["federated"], job={"lr": 0.001}, **args)
    with pytest.raises(ValueError, match="unknown job variable"):
        run_grid(toy_sites, out, ["gin+fedprox"], ["federated"], job={"server_optimiser": {}}, **args)
