"""The experiment commands end to end at toy size (phantoms, real nvflare simulator)."""

from __future__ import annotations

import csv
import json

import pytest

from fedgin.experiments import AbdomenConfig
from fedgin.experiments.abdomen import crossmodality, mri_scarce
from fedgin.data.partition import load_partition

pytestmark = pytest.mark.slow

def _rows(table: str) -> int:
    """Lines of a markdown table (a footnote below it does not count)."""
    return sum(line.startswith("|") for line in table.splitlines())


TINY = dict(rounds=1, channels=[8, 16, 32], spacing=8.0, size=32, val_cases=1, phantom_test_cases=2)


def test_abdomen_crossmodality_tiny(tmp_path, capsys):
    cfg = AbdomenConfig(organs=["liver", "spleen"], methods=["none"], settings=["single-mri", "federated"],
                        train_cases=2, mri_train_cases=1, seeds=[0], **TINY)
    out = crossmodality(tmp_path / "x", cfg)
    part = load_partition(out / "partition.json")
    assert set(part["sites"]) == {"site-ct", "site-mri", "test-ct", "test-mri"}
    assert len(part["sites"]["test-mri"]["test"]) == 2 and not part["sites"]["site-ct"]["test"]
    assert len(part["sites"]["site-ct"]["training"]) == 2 and len(part["sites"]["site-mri"]["training"]) == 1
    table = (out / "table.md").read_text()
    assert "CT liver" in table and "MRI spleen" in table and _rows(table) == 4
    rows = list(csv.DictReader(open(out / "dice.csv")))
    assert {r["site"] for r in rows} == {"test-ct", "test-mri"}  # scored on the unseen sets only
    assert {r["class"] for r in rows} == {"liver", "spleen"}
    fed = json.loads((out / "grid" / "liver" / "runs" / "federated__none__seed0" / "result.json").read_text())
    assert fed["classes"] == ["liver"]  # one binary model per organ
    assert (out / "dice.png").is_file() and (out / "ratios.csv").is_file()
    for organ in ("liver", "spleen"):  # the demo's two pictures, per organ's grid, on the unseen test sets
        assert (out / "grid" / organ / "dice_per_round_none.png").is_file()
        assert (out / "grid" / organ / "cases_none.png").stat().st_size > 5000
    # a second call resumes: nothing is retrained
    capsys.readouterr()
    crossmodality(tmp_path / "x", cfg)
    assert capsys.readouterr().out.count("done before, kept") == 4


def test_abdomen_mri_scarce_tiny(tmp_path):
    cfg = AbdomenConfig(organs=["liver"], methods=["gin"], mri_cases=2, ct_counts=[0, 2], seeds=[0, 1], **TINY)
    out = mri_scarce(tmp_path / "s", cfg)
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 8 and {r["ct_cases"] for r in rows} == {"0", "2"}
    # Fig. 3's centralized series: the same MRI + CT cases pooled, at every CT count but 0
    assert sorted((r["seed"], r["ct_cases"]) for r in rows if r["setting"] == "centralized") == [("0", "2"),
                                                                                                ("1", "2")]
    # Table II's MRI-only baseline without augmentation: "none" at 0 CT cases only, for every seed
    assert sorted((r["seed"], r["ct_cases"]) for r in rows if r["method"] == "none") == [("0", "0"), ("1", "0")]
    p0 = load_partition(out / "partitions" / "seed0_ct2.json")
    p1 = load_partition(out / "partitions" / "seed1_ct2.json")
    assert p0["sites"]["site-mri"] == load_partition(out / "partitions" / "seed0_ct0.json")["sites"]["site-mri"]
    assert p0["sites"]["site-ct"]["training"] != p1["sites"]["site-ct"]["training"] or \
        p0["sites"]["site-mri"]["training"] != p1["sites"]["site-mri"]["training"]
    table = (out / "table.md").read_text()
    assert "±" in table and _rows(table) == 2 + 4 and "| mri-only | none | 0 |" in table
    assert "| centralized | gin | 2 |" in table and "MRI-only (0 CT cases) gin model" in table
    boundary = (out / "boundary.md").read_text()
    assert _rows(boundary) == 2 + 4 and "HD95 in mm" in boundary and " / " in boundary
    assert (out / "curve.png").stat().st_size > 5000
    # the 0-CT point trained the MRI site alone; the others ran a federation
    assert (out / "runs" / "seed0__ct2__gin__liver" / "job").is_dir()
    assert not (out / "runs" / "seed0__ct0__gin__liver" / "job").exists()


def test_heart_selects_on_the_heldout_half_and_tests_on_the_other(tmp_path):
    from fedgin.experiments import HeartConfig
    from fedgin.experiments.heart import heart

    cfg = HeartConfig(methods=["none"], rounds=2, channels=[8, 16, 32], spacing=8.0, size=32, train_cases=2,
                      val_cases=1, heldout_val=2, heldout_test=2, centralized=False, seeds=[0])
    out = heart(tmp_path / "h", cfg)
    part = load_partition(out / "partition.json")
    held = part["sites"]["site-mri2"]
    assert not held["training"] and len(held["validation"]) == 2 and len(held["test"]) == 2
    fed = json.loads((out / "runs" / "federated__none__seed0" / "result.json").read_text())
    assert [r["round"] for r in fed["heldout_validation"]] == [0, 1]
    assert {c["case"] for c in fed["cases"]} == set(held["test"])  # scored on the test half only
    assert set(fed["summary"]["per_class"]) == {"myo", "la", "lv", "ra", "rv", "ao", "pa"}
    table = (out / "table.md").read_text()
    assert "best on held-out val" in table and "(final)" in table and _rows(table) == 2 + 3 + 2
    boundary = (out / "boundary.md").read_text()
    assert _rows(boundary) == _rows(table) and "NSD" in boundary
    sites = (out / "sites.md").read_text()
    assert "held-out" in sites and sites.count("\n") == 2 + 4
    assert (out / "heldout_validation.png").stat().st_size > 5000
    # the demo's two pictures: the training sites' Dice per round; a CT site's validation case and a held-out test case
    assert (out / "dice_per_round_none.png").is_file() and (out / "cases_none.png").stat().st_size > 5000
    assert len(list((out / "predictions_none").glob("*_seg.nii.gz"))) == 2
    job = json.loads((out / "runs" / "federated__none__seed0" / "job" / "app" / "config" / "config_fed_server.json")
                     .read_text())
    args = {c["id"]: c["args"] for c in job["components"] + job["workflows"]}
    assert args["model_selector"]["heldout_datalist"].endswith("site-mri2/datalist.json")
    assert args["scatter_and_gather"]["min_clients"] == 3
