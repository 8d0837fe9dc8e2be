"""The Medical Segmentation Decathlon adapter: task detection, tumour merged into its organ, ._ junk ignored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapter_fixtures import assert_ras, expected_label, make_affine, save, write_pair
from fedgin.data import LAYOUTS, LayoutError, load_datalist, prepare_site

MSD = LAYOUTS["msd"]
ORGAN = ((-8, -9, -7.5), (0, 3, 1.5))
TUMOUR = ((-5, -5, -4.5), (-2, -1, -1.5))  # inside the organ box: painted over it
JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # AppleDouble header, not a NIfTI

TASKS = {
    "Task03_Liver": dict(name="Liver", modality={"0": "CT"}, labels={"0": "background", "1": "liver", "2": "cancer"},
                         stem="liver", ids=["0", "1", "10"], values={1: ORGAN, 2: TUMOUR}),
    "Task07_Pancreas": dict(name="Pancreas", modality={"0": "CT"},
                            labels={"0": "background", "1": "pancreas", "2": "cancer"}, stem="pancreas",
                            ids=["001", "004"], values={1: ORGAN, 2: TUMOUR}),
    "Task09_Spleen": dict(name="Spleen", modality={"0": "CT"}, labels={"0": "background", "1": "spleen"},
                          stem="spleen", ids=["2", "3"], values={1: ORGAN}),
    "Task02_Heart": dict(name="LeftAtrium", modality={"0": "MRI"}, labels={"0": "background", "1": "left atrium"},
                         stem="la", ids=["003", "004"], values={1: ORGAN}),
}


def make_task(parent: Path, folder: str, *, with_training_list: bool = True, **overrides) -> Path:
    spec = dict(TASKS[folder], **overrides)
    root = parent / folder
    training = []
    for i, cid in enumerate(spec["ids"]):
        name = f"{spec['stem']}_{cid}.nii.gz"
        write_pair(root / "imagesTr" / name, root / "labelsTr" / name, spec["values"], lps=i % 2 == 1, seed=i,
                   label_dtype=np.uint8)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    # the tarballs' macOS resource forks: same names with "._", in both folders
    junk = f"._{spec['stem']}_{spec['ids'][0]}.nii.gz"
    (root / "imagesTr" / junk).write_bytes(JUNK)
    (root / "labelsTr" / junk).write_bytes(JUNK)
    save(root / "imagesTs" / f"{spec['stem']}_999.nii.gz", np.zeros((12, 10, 6), np.float32), make_affine())
    meta = {"name": spec["name"], "modality": spec["modality"], "labels": spec["labels"], "licence": "CC-BY-SA 4.0",
            "relase": "1.0 04/05/2018", "numTraining": len(training), "test": []}
    if with_training_list:
        meta["training"] = training
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("folder, organ, modality", [
    ("Task03_Liver", "liver", "ct"), ("Task07_Pancreas", "pancreas", "ct"), ("Task09_Spleen", "spleen", "ct"),
    ("Task02_Heart", "la", "mri"),
])
@pytest.mark.parametrize("with_training_list", [True, False])
def test_task_cases_and_label_map(tmp_path, folder, organ, modality, with_training_list):
    root = make_task(tmp_path, folder, with_training_list=with_training_list)
    cases = MSD.list_cases(root, modality, {})
    spec = TASKS[folder]
    assert [c.case_id for c in cases] == sorted(f"{spec['stem']}_{i}" for i in spec["ids"])  # no "._" case
    assert {c.modality for c in cases} == {modality} and {c.split for c in cases} == {None}
    other = "mri" if modality == "ct" else "ct"
    assert MSD.list_cases(root, other, {}) == []
    for case in cases:
        MSD.check_case(case, [organ])
        loaded = MSD.load_case(case, [organ])
        assert_ras(loaded.affine)
        want = expected_label(loaded, [[ORGAN]])  # the tumour (2) is part of the organ
        assert np.count_nonzero(want) > 0
        np.testing.assert_array_equal(loaded.label, want)
    with pytest.raises(LayoutError, match=f"MSD {folder}: class 'kidneys' is not annotated"):
        MSD.check_case(cases[0], ["kidneys"])


def test_task_from_dataset_json_name_when_folder_is_renamed(tmp_path):
    root = make_task(tmp_path, "Task09_Spleen")
    renamed = root.rename(tmp_path / "spleen_data")
    assert [c.case_id for c in MSD.list_cases(renamed, "ct", {})] == ["spleen_2", "spleen_3"]


def test_contradictions_and_bad_values_are_refused(tmp_path):
    root = make_task(tmp_path / "a", "Task03_Liver", name="Spleen")
    with pytest.raises(LayoutError, match="name 'Spleen' is Task09_Spleen but the folder is Task03_Liver"):
        MSD.list_cases(root, "ct", {})
    root = make_task(tmp_path / "b", "Task03_Liver", labels={"0": "background", "1": "spleen", "2": "cancer"})
    with pytest.raises(LayoutError, match="are not those of Task03_Liver"):
        MSD.list_cases(root, "ct", {})
    root = make_task(tmp_path / "c", "Task09_Spleen")
    bad = root / "labelsTr" / "spleen_3.nii.gz"
    data = np.zeros((12, 10, 6), np.uint8)
    data[1, 1, 1], data[2, 2, 2] = 1, 2
    save(bad, data, make_affine())
    case = MSD.list_cases(root, "ct", {})[1]
    with pytest.raises(LayoutError, match=r"label values \[2\] are not labels of") as e:
        MSD.load_case(case, ["spleen"])
    assert str(bad) in str(e.value)
    (root / "labelsTr" / "spleen_2.nii.gz").unlink()
    with pytest.raises(LayoutError, match="spleen_2.nii.gz") as e:
        MSD.list_cases(root, "ct", {})
    assert "not found" in str(e.value)
    with pytest.raises(LayoutError, match="dataset.json not found.*Task09_Spleen"):
        MSD.list_cases(tmp_path / "c", "ct", {})


def test_prepare_site_end_to_end(tmp_path):
    root = make_task(tmp_path, "Task07_Pancreas")
    d = load_datalist(prepare_site(layout="msd", input_dir=root, output_dir=tmp_path / "out", site="msd",
                                   modality="ct", organs=["pancreas"], spacing=2.0, size=16, progress=False))
    cases = [c for s in ("training", "validation", "test") for c in d[s]]
    assert sorted(c["case_id"] for c in cases) == ["pancreas_001", "pancreas_004"]
    assert all(c["foreground_voxels"]["pancreas"] > 0 for c in cases)
