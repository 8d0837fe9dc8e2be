"""The whole-heart (MM-WHS / CARE) adapter: file naming, raw vs remapped values per file, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapter_fixtures import assert_ras, expected_label, make_affine, save, write_pair
from fedgin.data import LAYOUTS, LayoutError, load_datalist, prepare_site
from fedgin.data.labels import HEART, HEART_CLASS_IDS, HEART_CLASSES, HEART_RAW_VALUES
from fedgin.data.whs import detect_scheme

WHS = LAYOUTS["whs"]
# one world box per substructure (RAS mm), all different in size and place
HEART_BOXES = {
    "myo": ((-8, -9, -7.5), (-5, -3, -1.5)),
    "la": ((-3, -9, -7.5), (0, -5, -4.5)),
    "lv": ((2, -9, -7.5), (8.5, -6, 1.5)),
    "ra": ((-8, 0, 1.5), (-4, 4, 7.5)),
    "rv": ((-2, 1, -7.5), (1, 9, -4.5)),
    "ao": ((3, 3, 4.5), (8.5, 9, 7.5)),
    "pa": ((3, -2, -1.5), (6, 1, 1.5)),
}


def boxes(raw: bool) -> dict:
    table = HEART_RAW_VALUES if raw else HEART_CLASS_IDS
    return {table[name]: HEART_BOXES[name] for name in HEART_CLASSES}


def make_whs(root: Path) -> Path:
    """CT in a sub-folder (one raw, one remapped and LPS-stored), MR flat in the root, an unlabelled test image."""
    write_pair(root / "ct_train" / "ct_train_1001_image.nii.gz", root / "ct_train" / "ct_train_1001_label.nii.gz",
               boxes(raw=True))
    write_pair(root / "ct_train" / "ct_train_1002_image.nii.gz", root / "ct_train" / "ct_train_1002_label.nii.gz",
               boxes(raw=False), lps=True, label_dtype=np.uint8, seed=1)
    write_pair(root / "mr_train_1001_image.nii.gz", root / "mr_train_1001_label.nii.gz", boxes(raw=True), seed=2)
    write_pair(root / "test" / "ct_test_2001_image.nii.gz", root / "test" / "ct_test_2001_label.nii.gz",
               boxes(raw=True), lps=True, seed=3)
    save(root / "test" / "ct_test_2002_image.nii.gz", np.zeros((12, 10, 6), np.float32), make_affine())
    (root / "ct_train" / "._ct_train_1001_image.nii.gz").write_bytes(b"junk")
    return root


@pytest.fixture
def whs_root(tmp_path):
    return make_whs(tmp_path / "whs")


def test_canonical_heart_classes():
    assert HEART_CLASSES == ("myo", "la", "lv", "ra", "rv", "ao", "pa")
    assert [HEART_RAW_VALUES[n] for n in HEART_CLASSES] == [205, 420, 500, 550, 600, 820, 850]
    assert [HEART_CLASS_IDS[n] for n in HEART_CLASSES] == [1, 2, 3, 4, 5, 6, 7]


def test_lists_cases_by_prefix(whs_root):
    ct = WHS.list_cases(whs_root, "ct", {})
    assert [c.case_id for c in ct] == ["ct_test_2001", "ct_train_1001", "ct_train_1002"]  # 2002 has no label
    assert {c.modality for c in ct} == {"ct"} and {c.split for c in ct} == {None}
    mri = WHS.list_cases(whs_root, "mri", {})
    assert [(c.case_id, c.modality) for c in mri] == [("mr_train_1001", "mri")]
    assert mri[0].label_path == whs_root / "mr_train_1001_label.nii.gz"


@pytest.mark.parametrize("cid", ["ct_train_1001", "ct_train_1002", "ct_test_2001"])
def test_raw_and_remapped_files_give_the_same_classes(whs_root, cid):
    case = next(c for c in WHS.list_cases(whs_root, "ct", {}) if c.case_id == cid)
    WHS.check_case(case, list(HEART_CLASSES))
    loaded = WHS.load_case(case, list(HEART_CLASSES))
    assert_ras(loaded.affine)  # 1002 and 2001 are stored in LPS voxel order
    want = expected_label(loaded, [[HEART_BOXES[n]] for n in HEART_CLASSES])
    assert set(np.unique(want)) == set(range(8))
    np.testing.assert_array_equal(loaded.label, want)


def test_binary_heart_and_class_subsets(whs_root):
    case = WHS.list_cases(whs_root, "mri", {})[0]
    loaded = WHS.load_case(case, [HEART])
    np.testing.assert_array_equal(loaded.label, expected_label(loaded, [list(HEART_BOXES.values())]))
    loaded = WHS.load_case(case, ["pa", "lv"])
    np.testing.assert_array_equal(loaded.label, expected_label(loaded, [[HEART_BOXES["pa"]], [HEART_BOXES["lv"]]]))
    with pytest.raises(LayoutError, match="share label values"):
        WHS.check_case(case, [HEART, "lv"])
    with pytest.raises(LayoutError, match="class 'liver' is not annotated"):
        WHS.check_case(case, ["liver"])


def test_scheme_detection():
    assert detect_scheme([0, 205, 850], "f") == "raw"
    assert detect_scheme([0, 1, 7], "f") == "remapped"
    assert detect_scheme([0], "f") == "remapped"
    with pytest.raises(LayoutError, match=r"unknown values \[421\]"):
        detect_scheme([0, 205, 420, 421], "f")
    with pytest.raises(LayoutError, match=r"a mix of raw values \[205\] and remapped ids \[3\]"):
        detect_scheme([0, 3, 205], "f")


@pytest.mark.parametrize("stray, message", [(421, r"unknown values \[421\]"), (3, r"a mix of raw values"),
                                            (8, r"unknown values \[8\]")])
def test_stray_values_are_refused_with_the_file_name(tmp_path, stray, message):
    root = make_whs(tmp_path / "whs")
    path = root / "ct_train" / "ct_train_1001_label.nii.gz"
    affine = make_affine()
    data = np.zeros((12, 10, 6), np.int16)
    data[:3] = 205 if stray != 8 else 1
    data[5, 5, 5] = stray
    save(path, data, affine)
    case = next(c for c in WHS.list_cases(root, "ct", {}) if c.case_id == "ct_train_1001")
    with pytest.raises(LayoutError, match=message) as e:
        WHS.load_case(case, [HEART])
    assert str(path) in str(e.value)


def test_malformed_layouts_are_refused(tmp_path):
    root = make_whs(tmp_path / "a")
    (root / "ct_train" / "ct_train_1001_image.nii.gz").unlink()
    with pytest.raises(LayoutError, match="label without an image") as e:
        WHS.list_cases(root, "ct", {})
    assert "ct_train_1001_label.nii.gz" in str(e.value)
    root = make_whs(tmp_path / "b")
    save(root / "copy" / "ct_train_1001_label.nii.gz", np.zeros((12, 10, 6), np.int16), make_affine())
    with pytest.raises(LayoutError, match="two label files"):
        WHS.list_cases(root, "ct", {})
    root = make_whs(tmp_path / "c")
    bad = root / "mr_train_1001_label.nii.gz"
    save(bad, np.zeros((12, 10, 7), np.int16), make_affine(shape=(12, 10, 7)))
    with pytest.raises(LayoutError, match="label shape") as e:
        WHS.check_case(WHS.list_cases(root, "mri", {})[0], [HEART])
    assert str(bad) in str(e.value)
    with pytest.raises(LayoutError, match="no options"):
        WHS.list_cases(root, "ct", {"sequence": "t2spir"})


def test_prepare_site_end_to_end(whs_root, tmp_path):
    d = load_datalist(prepare_site(layout="whs", input_dir=whs_root, output_dir=tmp_path / "ct", site="whs-ct",
                                   modality="ct", organs=list(HEART_CLASSES), spacing=2.0, size=16, seed=3,
                                   progress=False))
    assert d["layout"] == "whs"
    assert d["labels"] == {"0": "background", **{str(i): n for i, n in enumerate(HEART_CLASSES, start=1)}}
    cases = [c for s in ("training", "validation", "test") for c in d[s]]
    assert sorted(c["case_id"] for c in cases) == ["ct_test_2001", "ct_train_1001", "ct_train_1002"]
    assert all(len(d[s]) == 1 for s in ("training", "validation", "test"))  # seeded split of 3 cases
    for c in cases:
        assert all(c["foreground_voxels"][n] > 0 for n in HEART_CLASSES), c["foreground_voxels"]
        assert set(np.unique(np.load(Path(d["root"]) / c["label"]))) == set(range(8))
    d = load_datalist(prepare_site(layout="whs", input_dir=whs_root, output_dir=tmp_path / "mri", site="whs-mri",
                                   modality="mri", organs=[HEART], spacing=2.0, size=16, progress=False))
    assert [c["case_id"] for c in d["training"]] == ["mr_train_1001"]
