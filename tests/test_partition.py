"""Partitions as data: seeded, disjoint, nested, readable, and honoured by prepare_site."""

from __future__ import annotations

import json

import pytest

from fedgin.data.partition import PartitionError, draw_partition, load_partition, site_case_splits, write_partition

POOLS = {"ct": {"modality": "ct", "cases": [f"ct{i:04d}" for i in range(30)]},
         "mri": {"modality": "mri", "cases": [f"mr{i:04d}" for i in range(12)]}}


def _plan(n_ct):
    return {"site-mri": {"source": "mri", "training": 6, "validation": 2, "test": 4},
            "site-ct": {"source": "ct", "training": n_ct, "validation": 2}}


def test_draw_is_seeded_disjoint_and_nested():
    a = draw_partition(POOLS, _plan(5), seed=3)
    assert a == draw_partition(POOLS, _plan(5), seed=3)
    assert a["sites"] != draw_partition(POOLS, _plan(5), seed=4)["sites"]
    mri = a["sites"]["site-mri"]
    assert len(mri["training"]) == 6 and len(mri["validation"]) == 2 and len(mri["test"]) == 4
    assert not set(mri["training"]) & set(mri["test"]) and not set(mri["training"]) & set(mri["validation"])
    b = draw_partition(POOLS, _plan(20), seed=3)
    assert set(a["sites"]["site-ct"]["training"]) < set(b["sites"]["site-ct"]["training"])  # 5 ⊂ 20
    assert a["sites"]["site-ct"]["validation"] == b["sites"]["site-ct"]["validation"]
    assert a["sites"]["site-mri"] == b["sites"]["site-mri"]  # other sites do not move
    rest = draw_partition(POOLS, _plan("rest"), seed=3)
    assert len(rest["sites"]["site-ct"]["training"]) == 28


def test_impossible_plans_are_refused():
    with pytest.raises(PartitionError, match="only 28 of its 30 are left"):
        draw_partition(POOLS, _plan(29), seed=0)
    with pytest.raises(PartitionError, match="unknown source"):
        draw_partition(POOLS, {"s": {"source": "pet", "training": 1}}, seed=0)
    with pytest.raises(PartitionError, match="count"):
        draw_partition(POOLS, {"s": {"source": "ct", "training": -1}}, seed=0)


def test_file_round_trip_and_checks(tmp_path):
    p = write_partition(tmp_path / "part.json", draw_partition(POOLS, _plan(5), seed=1))
    part = load_partition(p)
    splits = site_case_splits(part, "site-mri")
    assert sorted(splits.values()).count("test") == 4 and len(splits) == 12
    bad = json.loads(p.read_text())
    bad["sites"]["site-ct"]["training"].append(bad["sites"]["site-ct"]["validation"][0])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PartitionError, match="given to both"):
        load_partition(tmp_path / "bad.json")
    with pytest.raises(PartitionError, match="not a partition"):
        (tmp_path / "x.json").write_text("{}")
        load_partition(tmp_path / "x.json")


def test_prepare_site_prepares_exactly_the_partition(tmp_path):
    from fedgin.data import prepare_site
    from fedgin.data.datalist import load_datalist
    from fedgin.data.errors import PrepareError
    from fedgin.phantom import generate_dataset

    ids = generate_dataset(tmp_path / "ph", "ct", 5, seed=0, progress=False)
    part = draw_partition({"ct": {"modality": "ct", "cases": ids}},
                          {"a": {"source": "ct", "training": 2, "test": 1}}, seed=0)
    splits = site_case_splits(part, "a")
    dl = prepare_site(layout="totalseg", input_dir=tmp_path / "ph", output_dir=tmp_path / "a", site="a",
                      modality="ct", organs=["liver"], spacing=8.0, size=32, progress=False, case_splits=splits)
    d = load_datalist(dl)
    assert {c["case_id"]: s for s in ("training", "validation", "test") for c in d[s]} == splits
    with pytest.raises(PrepareError, match="not in the dataset.*ct9999"):
        prepare_site(layout="totalseg", input_dir=tmp_path / "ph", output_dir=tmp_path / "b", site="b",
                     modality="ct", organs=["liver"], spacing=8.0, size=32, progress=False,
                     case_splits={"ct9999": "training"})
