"""The AMOS22 adapter: modality by id, split rule, AMOS ids -> class names, refusals with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapter_fixtures import assert_ras, expected_label, make_affine, save, write_pair
from fedgin.data import LAYOUTS, LayoutError, PrepareError, load_datalist, prepare_site

AMOS = LAYOUTS["amos"]
AMOS_LABELS = {
    "0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gall bladder",
    "5": "esophagus", "6": "liver", "7": "stomach", "8": "arota", "9": "postcava", "10": "pancreas",
    "11": "right adrenal gland", "12": "left adrenal gland", "13": "duodenum", "14": "bladder",
    "15": "prostate/uterus",
}
# world boxes (RAS mm) of each AMOS id; asymmetric in x, y and z so that any flip moves them
LIVER = ((-8, -9, -7.5), (-2, 0, 1.5))
SPLEEN = ((3, 1, 1.5), (8.5, 9, 7.5))
KIDNEY_R = ((-8, 2, -7.5), (-4, 9, -4.5))
KIDNEY_L = ((4, -9, -7.5), (8.5, -4, -1.5))
GALLBLADDER = ((-1, 5, -1.5), (1, 9, 1.5))
STOMACH = ((-1, -2, 4.5), (2, 2, 7.5))
BOXES = {6: LIVER, 1: SPLEEN, 2: KIDNEY_R, 3: KIDNEY_L, 4: GALLBLADDER, 7: STOMACH}
CASES = {  # part -> {id: stored in LPS voxel order?}
    "Tr": {"amos_0001": False, "amos_0002": True, "amos_0507": False},
    "Va": {"amos_0100": True, "amos_0540": False},
}


def make_amos(root: Path, *, labels=AMOS_LABELS) -> Path:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "AMOS", "labels": labels, "licence": "CC-BY-SA 4.0"}))
    for i, (part, ids) in enumerate(CASES.items()):
        for j, (cid, lps) in enumerate(ids.items()):
            write_pair(root / f"images{part}" / f"{cid}.nii.gz", root / f"labels{part}" / f"{cid}.nii.gz", BOXES,
                       lps=lps, seed=10 * i + j)
    # an unlabelled test image and macOS junk: neither is a case
    save(root / "imagesTs" / "amos_0200.nii.gz", np.zeros((12, 10, 6), np.float32), make_affine())
    (root / "imagesTr" / "._amos_0001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    return root


@pytest.fixture
def amos_root(tmp_path):
    return make_amos(tmp_path / "amos22")


def test_lists_cases_by_modality_and_split_rule(amos_root):
    ct = AMOS.list_cases(amos_root, "ct", {})
    assert [c.case_id for c in ct] == ["amos_0001", "amos_0002", "amos_0100"]  # 0507 (MRI) is among the Tr ids
    assert {c.modality for c in ct} == {"ct"}
    assert {c.split for c in ct} == {"test"}  # default: AMOS is the unseen test set
    mri = AMOS.list_cases(amos_root, "mri", {})
    assert [c.case_id for c in mri] == ["amos_0507", "amos_0540"] and {c.modality for c in mri} == {"mri"}
    by_part = {c.case_id: c.split for c in AMOS.list_cases(amos_root, "ct", {"split": "dataset"})}
    assert by_part == {"amos_0001": "training", "amos_0002": "training", "amos_0100": "validation"}
    assert {c.split for c in AMOS.list_cases(amos_root, "mri", {"split": "seeded"})} == {None}
    assert all(c.label_path.parent.name.startswith("labels") for c in ct)


@pytest.mark.parametrize("cid", ["amos_0001", "amos_0002", "amos_0100"])
def test_label_ids_follow_the_requested_classes(amos_root, cid):
    case = next(c for c in AMOS.list_cases(amos_root, "ct", {}) if c.case_id == cid)
    organs = ["liver", "kidneys", "spleen", "gallbladder"]
    AMOS.check_case(case, organs)
    loaded = AMOS.load_case(case, organs)
    assert_ras(loaded.affine)  # amos_0002 and amos_0100 are stored in LPS voxel order
    assert loaded.label.dtype == np.uint8 and loaded.image.dtype == np.float32
    want = expected_label(loaded, [[LIVER], [KIDNEY_R, KIDNEY_L], [SPLEEN], [GALLBLADDER]])
    assert all(np.count_nonzero(want == k) for k in range(1, 5))  # every class is in the fixture
    np.testing.assert_array_equal(loaded.label, want)  # stomach (7) became background
    assert loaded.image[want == 1].min() > 50 and loaded.image[want == 0].max() < 100 + 50


def test_single_kidneys_and_pancreas_absent(amos_root):
    case = AMOS.list_cases(amos_root, "mri", {})[0]
    loaded = AMOS.load_case(case, ["kidney_left", "kidney_right", "pancreas"])
    np.testing.assert_array_equal(loaded.label, expected_label(loaded, [[KIDNEY_L], [KIDNEY_R], []]))


def test_unknown_label_value_is_refused(tmp_path):
    root = make_amos(tmp_path / "amos22")
    bad = root / "labelsVa" / "amos_0100.nii.gz"
    affine = make_affine()
    data = np.zeros((12, 10, 6), np.int16)
    data[2, 3, 4], data[5, 5, 5] = 16, 6
    save(bad, data, affine)
    case = next(c for c in AMOS.list_cases(root, "ct", {}) if c.case_id == "amos_0100")
    AMOS.check_case(case, ["liver"])  # headers are fine: the values are found when the case is decoded
    with pytest.raises(LayoutError, match=r"label values \[16\] are not labels of") as e:
        AMOS.load_case(case, ["liver"])
    assert str(bad) in str(e.value) and "dataset.json" in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(LayoutError, match=r"\[16\]"):
        prepare_site(layout="amos", input_dir=root, output_dir=out, site="amos", modality="ct", organs=["liver"],
                     size=8, progress=False)
    assert not out.exists()


def test_malformed_layouts_are_refused(tmp_path):
    root = make_amos(tmp_path / "a")
    (root / "labelsTr" / "amos_0002.nii.gz").unlink()
    with pytest.raises(LayoutError, match="no label file") as e:
        AMOS.list_cases(root, "ct", {})
    assert "imagesTr/amos_0002.nii.gz" in str(e.value) and "labelsTr/amos_0002.nii.gz" in str(e.value)

    labels = dict(AMOS_LABELS, **{"6": "stomach", "7": "liver"})
    root = make_amos(tmp_path / "b", labels=labels)
    with pytest.raises(LayoutError, match="label id 6 is 'stomach'") as e:
        AMOS.list_cases(root, "ct", {})
    assert "dataset.json" in str(e.value)

    root = make_amos(tmp_path / "c")
    (root / "dataset.json").unlink()
    with pytest.raises(LayoutError, match="dataset.json not found"):
        AMOS.list_cases(root, "ct", {})

    root = make_amos(tmp_path / "d")
    with pytest.raises(LayoutError, match="unknown split option 'train'"):
        AMOS.list_cases(root, "ct", {"split": "train"})
    case = AMOS.list_cases(root, "ct", {})[0]
    with pytest.raises(LayoutError, match="class 'heart' is not annotated"):
        AMOS.check_case(case, ["heart"])
    with pytest.raises(LayoutError, match="share label values"):
        AMOS.check_case(case, ["kidneys", "kidney_left"])


def test_label_off_the_image_grid_is_refused(tmp_path):
    root = make_amos(tmp_path / "amos22")
    bad = root / "labelsTr" / "amos_0001.nii.gz"
    shifted = make_affine()
    shifted[0, 3] += 1.5
    save(bad, np.zeros((12, 10, 6), np.int16), shifted)
    case = AMOS.list_cases(root, "ct", {})[0]
    with pytest.raises(LayoutError, match="label affine differs") as e:
        AMOS.check_case(case, ["liver"])
    assert str(bad) in str(e.value)
    save(bad, np.zeros((12, 10, 5), np.int16), make_affine())
    with pytest.raises(LayoutError, match="label shape"):
        AMOS.load_case(case, ["liver"])


def test_prepare_site_end_to_end(amos_root, tmp_path):
    d = load_datalist(prepare_site(layout="amos", input_dir=amos_root, output_dir=tmp_path / "ct", site="amos-ct",
                                   modality="ct", organs=["liver", "spleen"], spacing=2.0, size=16, progress=False))
    assert d["layout"] == "amos" and d["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert d["training"] == [] and d["validation"] == []
    assert [c["case_id"] for c in d["test"]] == ["amos_0001", "amos_0002", "amos_0100"]
    assert "layout_options" not in d
    for c in d["test"]:
        lbl = np.load(Path(d["root"]) / c["label"])
        assert c["foreground_voxels"]["liver"] > 0 and c["foreground_voxels"]["spleen"] > 0
        assert set(np.unique(lbl)) == {0, 1, 2}
    d = load_datalist(prepare_site(layout="amos", input_dir=amos_root, output_dir=tmp_path / "mri", site="amos-mri",
                                   modality="mri", organs=["kidneys"], spacing=2.0, size=16, progress=False,
                                   layout_options={"split": "dataset"}))
    assert [c["case_id"] for c in d["training"]] == ["amos_0507"]
    assert [c["case_id"] for c in d["validation"]] == ["amos_0540"] and d["test"] == []
    assert d["layout_options"] == {"split": "dataset"} and d["modality"] == "mri"
    with pytest.raises(PrepareError, match="has no option sequence"):
        prepare_site(layout="amos", input_dir=amos_root, output_dir=tmp_path / "x", site="a", modality="ct",
                     organs=["liver"], layout_options={"sequence": "t2spir"})


def test_every_layout_uses_the_canonical_class_names():
    from fedgin.data import chaos, msd
    from fedgin.data.amos import AMOS_VALUES
    from fedgin.data.labels import ABDOMINAL_CLASSES, HEART_LABEL_NAMES

    assert tuple(AMOS_VALUES) == ABDOMINAL_CLASSES
    assert set(chaos.MR_CLASSES) | set(chaos.CT_CLASSES) <= set(ABDOMINAL_CLASSES)
    for task in msd.TASKS.values():
        assert set(task.classes) <= set(ABDOMINAL_CLASSES) | set(HEART_LABEL_NAMES)
