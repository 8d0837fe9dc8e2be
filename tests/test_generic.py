"""The generic layout: image/label pairs + a user label map; the ``fedgin prepare`` options of every layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapter_fixtures import assert_ras, expected_label, make_affine, save, write_pair
from fedgin.cli import main
from fedgin.data import LAYOUTS, LayoutError, load_datalist, prepare_site
from fedgin.data.generic import read_label_map

GENERIC = LAYOUTS["generic"]
A = ((-8, -9, -7.5), (-2, 0, 1.5))
B = ((3, 1, 1.5), (8.5, 9, 7.5))
C = ((4, -9, -7.5), (8.5, -4, -1.5))
BOXES = {1: A, 2: B, 3: C}
MAP = {"liver": [1], "kidneys": [2, 3], "kidney_left": 3}


def make_folders(root: Path) -> Path:
    for i, cid in enumerate(["case_b", "case_a", "case_c"]):
        write_pair(root / "images" / f"{cid}.nii.gz", root / "labels" / f"{cid}.nii.gz", BOXES, lps=i == 1, seed=i)
    (root / "images" / "._case_a.nii.gz").write_bytes(b"junk")
    return root


def make_suffix(root: Path) -> Path:
    for i, cid in enumerate(["p01", "p02"]):
        write_pair(root / f"{cid}_image.nii.gz", root / f"{cid}_label.nii.gz", BOXES, lps=i == 0, seed=i)
    return root


@pytest.mark.parametrize("pairing", ["auto", "folders"])
def test_folders_pairing_and_label_map(tmp_path, pairing):
    root = make_folders(tmp_path / "data")
    cases = GENERIC.list_cases(root, "mri", {"label_map": MAP, "pairing": pairing})
    assert [c.case_id for c in cases] == ["case_a", "case_b", "case_c"]
    assert {c.modality for c in cases} == {"mri"} and {c.split for c in cases} == {None}
    for case in cases:
        GENERIC.check_case(case, ["kidneys", "liver"])
        loaded = GENERIC.load_case(case, ["kidneys", "liver"])
        assert_ras(loaded.affine)
        np.testing.assert_array_equal(loaded.label, expected_label(loaded, [[B, C], [A]]))
    loaded = GENERIC.load_case(cases[0], ["kidney_left"])  # classes may share values in the map
    np.testing.assert_array_equal(loaded.label, expected_label(loaded, [[C]]))
    with pytest.raises(LayoutError, match="share label values"):
        GENERIC.check_case(cases[0], ["kidneys", "kidney_left"])
    with pytest.raises(LayoutError, match="class 'spleen' is not annotated"):
        GENERIC.check_case(cases[0], ["spleen"])


def test_suffix_pairing_and_map_file(tmp_path):
    root = make_suffix(tmp_path / "data")
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps({"organ": [1, 2, 3]}))
    cases = GENERIC.list_cases(root, "ct", {"label_map": str(map_file)})
    assert [(c.case_id, c.image_path.name, c.label_path.name) for c in cases] == [
        ("p01", "p01_image.nii.gz", "p01_label.nii.gz"), ("p02", "p02_image.nii.gz", "p02_label.nii.gz")]
    loaded = GENERIC.load_case(cases[0], ["organ"])
    np.testing.assert_array_equal(loaded.label, expected_label(loaded, [[A, B, C]]))
    with pytest.raises(LayoutError, match="no images/ folder"):
        GENERIC.list_cases(root, "ct", {"label_map": MAP, "pairing": "folders"})


def test_missing_label_and_orphans_are_refused(tmp_path):
    root = make_folders(tmp_path / "a")
    (root / "labels" / "case_b.nii.gz").unlink()
    with pytest.raises(LayoutError, match="no label file") as e:
        GENERIC.list_cases(root, "ct", {"label_map": MAP})
    assert "images/case_b.nii.gz" in str(e.value) and "labels/case_b.nii.gz" in str(e.value)
    root = make_suffix(tmp_path / "b")
    save(root / "p03_label.nii.gz", np.zeros((12, 10, 6), np.uint8), make_affine())
    with pytest.raises(LayoutError, match="label without an image .*p03_image.nii.gz"):
        GENERIC.list_cases(root, "ct", {"label_map": MAP})


def test_unmapped_values(tmp_path):
    root = make_folders(tmp_path / "data")
    bad = root / "labels" / "case_c.nii.gz"
    data = np.zeros((12, 10, 6), np.int16)
    data[0, 0, 0], data[11, 9, 5], data[3, 3, 3] = 4, 1, -2
    save(bad, data, make_affine())
    case = GENERIC.list_cases(root, "ct", {"label_map": MAP})[2]
    with pytest.raises(LayoutError, match=r"label values \[-2, 4\] are not in the label map") as e:
        GENERIC.load_case(case, ["liver"])
    assert str(bad) in str(e.value) and "unlisted=background" in str(e.value)
    case = GENERIC.list_cases(root, "ct", {"label_map": MAP, "unlisted": "background"})[2]
    loaded = GENERIC.load_case(case, ["liver"])
    assert loaded.label.sum() == 1 and loaded.label[11, 9, 5] == 1  # RAS grid: the file is RAS already
    save(bad, data.astype(np.float32) + 0.5, make_affine())
    with pytest.raises(LayoutError, match="whole numbers"):
        GENERIC.load_case(case, ["liver"])


@pytest.mark.parametrize("spec, message", [
    ({}, "non-empty object"), ({"liver": []}, "has no values"), ({"liver": [0]}, "value 0 is background"),
    ({"liver": [1.5]}, "not a whole number"), ({"liver": ["1"]}, "not a whole number"),
    ({"background": [1]}, "bad class name"), ([1, 2], "non-empty object"),
])
def test_bad_label_maps(spec, message, tmp_path):
    with pytest.raises(LayoutError, match=message):
        read_label_map(spec)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(LayoutError, match=str(path)):
        read_label_map(path)
    assert read_label_map({"a": 1, "b": [2.0, 3]}) == {"a": frozenset({1}), "b": frozenset({2, 3})}


def test_options_are_checked(tmp_path):
    root = make_folders(tmp_path / "data")
    with pytest.raises(LayoutError, match="needs a label map"):
        GENERIC.list_cases(root, "ct", {})
    with pytest.raises(LayoutError, match="unknown pairing 'zip'"):
        GENERIC.list_cases(root, "ct", {"label_map": MAP, "pairing": "zip"})
    with pytest.raises(LayoutError, match="unknown 'unlisted' policy"):
        GENERIC.list_cases(root, "ct", {"label_map": MAP, "unlisted": "ignore"})
    with pytest.raises(LayoutError, match="label map file not found"):
        GENERIC.list_cases(root, "ct", {"label_map": str(tmp_path / "nope.json")})


def test_prepare_site_and_cli(tmp_path, capsys):
    root = make_folders(tmp_path / "data")
    d = load_datalist(prepare_site(layout="generic", input_dir=root, output_dir=tmp_path / "out", site="g",
                                   modality="mri", organs=["liver", "kidneys"], spacing=2.0, size=16, progress=False,
                                   layout_options={"label_map": MAP}))
    assert d["layout_options"] == {"label_map": {"liver": [1], "kidneys": [2, 3], "kidney_left": 3}}
    cases = [c for s in ("training", "validation", "test") for c in d[s]]
    assert sorted(c["case_id"] for c in cases) == ["case_a", "case_b", "case_c"] and d["modality"] == "mri"
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(MAP))
    out = tmp_path / "cli"
    argv = ["prepare", "--layout", "generic", "--input", str(root), "--output", str(out), "--site", "g",
            "--modality", "ct", "--organs", "kidneys", "--spacing", "2", "--size", "16", "--label-map", str(map_file),
            "--pairing", "folders", "--unlisted", "error"]
    assert main(argv) == 0
    d = json.loads((out / "datalist.json").read_text())
    assert d["layout_options"] == {"label_map": str(map_file), "pairing": "folders", "unlisted": "error"}
    assert d["labels"] == {"0": "background", "1": "kidneys"}
    capsys.readouterr()
    assert main(["prepare", "--layout", "amos", "--input", str(root), "--output", str(tmp_path / "x"), "--site",
                 "a", "--modality", "ct", "--organs", "liver", "--sequence", "t2spir"]) == 2
    assert "--sequence applies to --layout chaos only" in capsys.readouterr().err
    assert main(["prepare", "--layout", "generic", "--input", str(root), "--output", str(tmp_path / "y"), "--site",
                 "a", "--modality", "ct", "--organs", "liver"]) == 2
    assert "needs a label map" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "--layout", "nope", "--input", "i", "--output", "o", "--site", "a", "--modality", "ct",
              "--organs", "liver"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
