"""``fedgin compare`` at toy size: grid, federated FedBN through local models, reference test input, report files,
resume."""

from __future__ import annotations

import csv
import json

import pytest

from fedgin.compare import grid, run_grid

pytestmark = pytest.mark.slow


def test_grid_skips_cells_that_make_no_sense():
    cells = grid(["none", "gin", "dsbn", "fedbn", "fedda"], ["single-ct", "centralized", "federated"])
    assert ("single-ct", "dsbn") not in cells and ("centralized", "fedbn") not in cells
    assert ("centralized", "dsbn") in cells and ("federated", "fedda") in cells


def test_compare_writes_report_and_resumes(toy_sites, tmp_path, capsys):
    """Also --test-input reference: FMAug's FLARE job and its global model carry FreeSDG's test filter."""
    out = tmp_path / "cmp"
    grid_args = dict(rounds=1, channels=[8, 16, 32], test_input="reference")
    run_grid(toy_sites, out, ["fmaug", "fedbn"], ["centralized", "federated"], **grid_args)
    cells = ["centralized__fmaug", "federated__fmaug", "federated__fedbn"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(cells)
    rows = list(csv.DictReader(open(out / "dice.csv")))
    assert {r["setting"] for r in rows} == {"centralized", "federated"}
    assert {r["modality"] for r in rows} == {"ct", "mri"} and {r["class"] for r in rows} == {"disc", "square"}
    table = (out / "table.md").read_text()
    assert sum(line.startswith("|") for line in table.splitlines()) == 2 + len(cells) and "**" in table
    ratios = list(csv.DictReader(open(out / "ratios.csv")))
    assert [r["method"] for r in ratios] == ["fmaug"] and float(ratios[0]["ratio"]) > 0
    assert (out / "dice.png").stat().st_size > 5000
    assert all(r["nsd"] == "" or 0 <= float(r["nsd"]) <= 1 for r in rows) and any(r["hd95_mm"] for r in rows)
    boundary = (out / "boundary.md").read_text()
    assert "CT disc HD95 / NSD" in boundary and sum(line.startswith("|") for line in boundary.splitlines()) == 5
    fedbn = json.loads((out / "runs" / "federated__fedbn" / "result.json").read_text())
    assert fedbn["model"] == "local models" and {c["site"] for c in fedbn["cases"]} == {"site-ct", "site-mri"}
    assert set(fedbn["summary"]["per_modality"]) == {"ct", "mri"} and "n/a" not in table
    cfg = json.loads((out / "runs" / "federated__fmaug" / "job" / "app" / "config" / "config_fed_server.json")
                     .read_text())
    assert cfg["test_input"] == "freesdg-hfc"
    from fedgin.engine.checkpoint import load_model_file

    model_file = next((out / "runs" / "federated__fmaug" / "workspace").rglob("FL_global_model.pt"))
    model, meta = load_model_file(model_file)
    assert model.test_input == "freesdg-hfc" and meta["model_config"]["test_input"] == "freesdg-hfc"
    from fedgin.curves import run_curves

    assert (out / "curves.png").stat().st_size > 10_000  # training curves read back from the TensorBoard events
    fed = run_curves(out / "runs" / "federated__fmaug")
    assert fed["dice"][0].tolist() == [1.0] and 0 <= fed["dice"][1][0] <= 1  # 1 round: the global model's Dice
    assert len(run_curves(out / "runs" / "centralized__fmaug")["loss"][0]) > 1
    # an interrupted grid resumes: finished cells are kept, a missing one is redone
    (out / "runs" / "centralized__fmaug" / "result.json").unlink()
    capsys.readouterr()
    run_grid(toy_sites, out, ["fmaug", "fedbn"], ["centralized", "federated"], **grid_args)
    log = capsys.readouterr().out
    assert log.count("done before, kept") == 2 and "centralized fmaug ..." in log


def test_resume_refuses_a_grid_made_with_other_parameters(toy_sites, tmp_path):
    out = tmp_path / "cmp"
    run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="other parameters.*rounds"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=2, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="test_input"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], test_input="reference")
    with pytest.raises(ValueError, match="other parameters.*train"):
        run_grid(toy_sites, out, ["none"], ["single-ct"], rounds=1, channels=[8, 16, 32], train={"sampler": "organ"})


def test_train_values_reach_every_run(toy_sites, tmp_path):
    from fedgin.engine.checkpoint import load_model_file
    from fedgin.runs import train_run

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


def test_a_collapsed_model_is_marked_not_shown_as_a_plain_zero(tmp_path, capsys):
    from fedgin.compare import write_report
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
    assert cells[1] == f"0.000 {EMPTY_MARK}" and cells[2].endswith(EMPTY_MARK) and EMPTY_MARK not in cells[0]
    assert not any(EMPTY_MARK in c for c in cells[3:])
    assert any(line.startswith(f"{EMPTY_MARK}: the model predicts no voxel") for line in table)  # the footnote
    rows = list(csv.DictReader(open(tmp_path / "dice.csv")))
    flagged = {(r["setting"], r["modality"], r["class"]) for r in rows if r["collapsed_model"] == "1"}
    assert flagged == {("centralized", "ct", "spleen")}
    assert "WARNING: centralized gin: the model predicts no voxel of spleen on any CT test case" in capsys.readouterr().out


def test_experiment_tables_mark_collapsed_values():
    from fedgin.engine.metrics import EMPTY_MARK
    from fedgin.experiments.report import markdown_table

    text = markdown_table(["run", "a", "b"], [["x", "0.000", "0.500"], ["y", "0.100", "0.400"]],
                          [[0.0, 0.5], [0.1, 0.4]], marks=[[True, False], [False, False]])
    x, y = (line for line in text.splitlines() if line.startswith("| x") or line.startswith("| y"))
    assert f"0.000 {EMPTY_MARK}" in x and "**0.500**" in x and "**0.100**" in y  # a collapsed value is never best
    assert text.rstrip().splitlines()[-1].startswith(EMPTY_MARK)
