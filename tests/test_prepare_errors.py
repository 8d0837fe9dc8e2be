"""``fedgin prepare`` on bad inputs: nothing dropped, doubled or silently corrupted.

Each test breaks one thing in a tiny dataset (16 x 16 x 8 voxels, written here with nibabel) and checks the exit code
or exception, that the message names the file or case, and what is left in the output folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adapter_fixtures import write_pair
from fedgin.cli import main
from fedgin.data import LAYOUTS, LayoutError, NiftiError, PrepareError, load_datalist, prepare_site
from fedgin.data import prepare as prepare_mod
from fedgin.data.dicom import dicom_files
from fedgin.data.finite import NonFiniteError
from fedgin.data.nifti import open_nifti
from fedgin.data.source import LayoutAdapter, SourceCase

SHAPE = (16, 16, 8)
AFFINE = np.diag([2.0, 2.0, 5.0, 1.0])


def make_case(root: Path, case_id: str, modality: str = "ct", seed: int = 0) -> Path:
    """A TotalSegmentator-layout case: float32 image, a liver cube mask."""
    folder = root / case_id
    (folder / "segmentations").mkdir(parents=True)
    liver = np.zeros(SHAPE, np.uint8)
    liver[4:10, 5:11, 2:6] = 1
    image = np.random.default_rng(seed).normal(0, 10, SHAPE).astype(np.float32) + 200 * liver
    nib.save(nib.Nifti1Image(image, AFFINE), folder / f"{modality}.nii.gz")
    nib.save(nib.Nifti1Image(liver, AFFINE), folder / "segmentations" / "liver.nii.gz")
    return folder


def make_site(root: Path, ids=("good", "bad"), meta: str | None = None) -> Path:
    for i, cid in enumerate(ids):
        make_case(root, cid, seed=i)
    if meta is not None:
        (root / "meta.csv").write_text(meta)
    return root


def prep(root: Path, out: Path, layout: str = "totalseg", **kw) -> dict:
    kw = {"site": "a", "modality": "ct", "organs": ["liver"], "size": 16, "progress": False, **kw}
    return load_datalist(prepare_site(layout=layout, input_dir=root, output_dir=out, **kw))


def cli(capsys, root: Path, out: Path, *extra: str) -> tuple[int, str]:
    rc = main(["prepare", "--layout", "totalseg", "--input", str(root), "--output", str(out), "--site", "a",
               "--modality", "ct", "--organs", "liver", "--size", "16", *extra])
    return rc, capsys.readouterr().err


def dangle(path: Path) -> Path:
    """Replace ``path`` by a symbolic link to a file that does not exist; returns the missing target."""
    target = path.parent / "gone" / path.name
    path.unlink()
    path.symlink_to(target)
    return target


def ids(d: dict) -> list[str]:
    return sorted(c["case_id"] for s in ("training", "validation", "test") for c in d[s])


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def poke(path: Path, values: dict[tuple, float]) -> None:
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    for idx, v in values.items():
        data[idx] = v
    nib.save(nib.Nifti1Image(data, img.affine), path)


# -------------------------------------------------------------------------------------------- non-finite voxels
def test_nan_voxels_are_refused_naming_file_and_count(tmp_path, capsys):
    root = make_site(tmp_path / "src")
    bad = root / "bad" / "ct.nii.gz"
    poke(bad, {(1, 2, 3): np.nan, (4, 5, 3): np.nan, (6, 7, 4): np.nan})
    out = tmp_path / "out"
    rc, err = cli(capsys, root, out)
    assert rc == 2
    line = err.splitlines()[-1]  # the one-line error after the progress bar
    assert line.startswith(f"fedgin prepare: error: {bad}: the image holds non-finite values: 3 NaN voxel(s) of 2048")
    assert "--nonfinite repair" in err
    assert not out.exists() and not leftovers(out)


def test_nonfinite_voxels_repaired_and_recorded(tmp_path, caplog):
    root = make_site(tmp_path / "src")
    bad = root / "bad" / "ct.nii.gz"
    poke(bad, {(1, 2, 3): np.nan, (4, 5, 3): np.nan, (6, 7, 4): np.inf})
    with caplog.at_level(logging.WARNING):
        d = prep(root, tmp_path / "out", nonfinite="repair")
    entries = {c["case_id"]: c for s in ("training", "validation", "test") for c in d[s]}
    assert entries["bad"]["nonfinite_repaired"] == {"nan": 2, "posinf": 1, "neginf": 0}
    assert "nonfinite_repaired" not in entries["good"]
    for c in entries.values():
        assert np.isfinite(np.load(Path(d["root"]) / c["image"])).all()
    assert any(str(bad) in r.getMessage() and "repaired" in r.getMessage() for r in caplog.records)


def test_cached_slices_are_checked_finite(tmp_path, monkeypatch):
    """A bug guard: preprocessing that produced NaN from a finite source stops the run, nothing written."""
    root = make_site(tmp_path / "src")
    real = prepare_mod.preprocess_case

    def broken(*a, **kw):
        pre = real(*a, **kw)
        pre.image[0, 0, 0] = np.nan
        return pre

    monkeypatch.setattr(prepare_mod, "preprocess_case", broken)
    out = tmp_path / "out"
    with pytest.raises(AssertionError, match="bug: the cached slices of case bad .* not finite"):
        prep(root, out)
    assert not out.exists() and not leftovers(out)


# -------------------------------------------------------------------------------------- dangling links, missing
def test_dangling_image_link_is_an_error_and_can_be_skipped(tmp_path, capsys):
    root = make_site(tmp_path / "src", ids=("good", "bad", "ok2"))
    link = root / "bad" / "ct.nii.gz"
    target = dangle(link)
    out = tmp_path / "out"
    rc, err = cli(capsys, root, out)
    assert rc == 2 and f"{link}: is a symbolic link to {target}, which does not exist" in err
    assert not out.exists() and not leftovers(out)

    rc, err = cli(capsys, root, out, "--skip-bad-cases")
    assert rc == 0
    assert f"skipped case bad: {link}: is a symbolic link to {target}, which does not exist" in err
    d = load_datalist(out)
    assert ids(d) == ["good", "ok2"]
    [skipped] = d["skipped"]
    assert skipped["case_id"] == "bad" and skipped["split"] in ("training", "validation", "test")
    assert str(target) in skipped["reason"]
    with pytest.raises(NiftiError, match="which does not exist"):
        open_nifti(link)


def test_meta_listed_case_without_folder(tmp_path):
    meta = "image_id;split\ngood;train\nbad;test\ngone;val\nmr_only;train\n"
    root = make_site(tmp_path / "src", meta=meta)
    make_case(root, "mr_only", modality="mri")  # another modality's case: legitimately not a CT case
    out = tmp_path / "out"
    with pytest.raises(LayoutError) as e:
        prep(root, out)
    assert f"{root / 'gone'}: case 'gone' is listed in {root / 'meta.csv'} (split validation)" in str(e.value)
    assert "does not exist" in str(e.value)
    assert not out.exists() and not leftovers(out)
    with pytest.raises(LayoutError, match="'gone'"):
        LAYOUTS["totalseg"].list_cases(root, "ct", {})  # strict by default
    d = prep(root, out, skip_bad_cases=True)
    assert [c["case_id"] for c in d["training"]] == ["good"] and [c["case_id"] for c in d["test"]] == ["bad"]
    assert [(s["case_id"], s["split"]) for s in d["skipped"]] == [("gone", "validation")]


def test_meta_listed_folder_without_image_and_unlisted_case(tmp_path):
    root = make_site(tmp_path / "src", meta="image_id;split\ngood;train\nbad;test\nempty;val\n")
    (root / "empty").mkdir()
    make_case(root, "extra")
    d = prep(root, tmp_path / "out", skip_bad_cases=True)
    assert ids(d) == ["bad", "good"]
    reasons = {s["case_id"]: s for s in d["skipped"]}
    assert "holds no ct.nii.gz or mri.nii.gz" in reasons["empty"]["reason"]
    assert reasons["empty"]["split"] == "validation"
    assert "not listed in meta.csv" in reasons["extra"]["reason"] and "split" not in reasons["extra"]


def test_dangling_mask_link(tmp_path):
    root = make_site(tmp_path / "src")
    link = root / "bad" / "segmentations" / "liver.nii.gz"
    target = dangle(link)
    out = tmp_path / "out"
    with pytest.raises(NiftiError) as e:
        prep(root, out)
    assert str(e.value) == f"{link}: is a symbolic link to {target}, which does not exist"
    assert not out.exists()


def test_dangling_case_folder_link(tmp_path):
    root = make_site(tmp_path / "src")
    (root / "lost").symlink_to(tmp_path / "elsewhere" / "lost")
    with pytest.raises(LayoutError, match=f"{root / 'lost'}: is a symbolic link to .*elsewhere/lost, which does not"):
        prep(root, tmp_path / "out")


def test_generic_dangling_label_and_unpaired_image(tmp_path):
    root = tmp_path / "gen"
    for i, cid in enumerate(("a", "b", "c")):
        write_pair(root / "images" / f"{cid}.nii.gz", root / "labels" / f"{cid}.nii.gz", {1: ((-8, -9, -7), (0, 0, 0))},
                   seed=i)
    link = root / "labels" / "b.nii.gz"
    target = dangle(link)
    (root / "labels" / "c.nii.gz").unlink()
    opts = {"layout_options": {"label_map": {"liver": [1]}}}
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match=f"{link}: is a symbolic link to {target}"):
        prep(root, out, layout="generic", **opts)
    assert not out.exists()
    d = prep(root, out, layout="generic", skip_bad_cases=True, **opts)
    assert ids(d) == ["a"]
    reasons = {s["case_id"]: s["reason"] for s in d["skipped"]}
    assert f"{link}: is a symbolic link to {target}" in reasons["b"]
    assert f"{root / 'images' / 'c.nii.gz'}: no label file (expected {root / 'labels' / 'c.nii.gz'}" in reasons["c"]


def test_msd_listed_file_missing_or_dangling(tmp_path):
    root = tmp_path / "Task09_Spleen"
    training = []
    for i in range(3):
        name = f"spleen_{i}.nii.gz"
        write_pair(root / "imagesTr" / name, root / "labelsTr" / name, {1: ((-8, -9, -7), (0, 0, 0))}, seed=i,
                   label_dtype=np.uint8)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
        "training": training}))
    (root / "labelsTr" / "spleen_1.nii.gz").unlink()
    target = dangle(root / "imagesTr" / "spleen_2.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(LayoutError, match="labelsTr/spleen_1.nii.gz: label of training.1. in .*dataset.json not found"):
        prep(root, out, layout="msd", organs=["spleen"])
    d = prep(root, out, layout="msd", organs=["spleen"], skip_bad_cases=True)
    assert ids(d) == ["spleen_0"]
    reasons = {s["case_id"]: s["reason"] for s in d["skipped"]}
    assert "not found" in reasons["spleen_1"] and f"symbolic link to {target}" in reasons["spleen_2"]


def test_whs_dangling_label_and_dicom_slice(tmp_path):
    root = tmp_path / "whs"
    for cid in ("ct_train_1001", "ct_train_1002"):
        write_pair(root / f"{cid}_image.nii.gz", root / f"{cid}_label.nii.gz", {205: ((-8, -9, -7), (0, 0, 0))})
    link = root / "ct_train_1002_label.nii.gz"
    dangle(link)
    cases = LAYOUTS["whs"].list_cases(root, "ct", {})
    assert [c.case_id for c in cases] == ["ct_train_1001", "ct_train_1002"]  # listed, not dropped
    with pytest.raises(NiftiError, match=f"{link}: is a symbolic link"):
        LAYOUTS["whs"].check_case(cases[1], ["myo"])
    series = tmp_path / "dicom"
    series.mkdir()
    (series / "i0001.dcm").symlink_to(series / "nowhere.dcm")
    with pytest.raises(LayoutError, match="i0001.dcm: is a symbolic link to .*nowhere.dcm, which does not exist"):
        dicom_files(series)


# ------------------------------------------------------------------------------------------------- skipping
def test_skip_records_nonfinite_and_all_bad_is_an_error(tmp_path):
    root = make_site(tmp_path / "src")
    poke(root / "bad" / "ct.nii.gz", {(1, 1, 1): -np.inf})
    d = prep(root, tmp_path / "out", skip_bad_cases=True)
    assert ids(d) == ["good"]
    assert [s["case_id"] for s in d["skipped"]] == ["bad"] and "1 -Inf" in d["skipped"][0]["reason"]
    assert prep(make_site(tmp_path / "fine"), tmp_path / "out2", skip_bad_cases=True)["skipped"] == []
    dangle(root / "good" / "ct.nii.gz")
    out = tmp_path / "out3"
    with pytest.raises(PrepareError, match="none of the 2 ct case.s. could be prepared"):
        prep(root, out, skip_bad_cases=True)
    assert not out.exists() and not leftovers(out)
    with pytest.raises(NonFiniteError):
        prep(root, out, nonfinite="error", case_splits={"bad": "training"})


# ------------------------------------------------------------------------------------------------ duplicates
def test_duplicate_case_ids_are_refused_naming_both(tmp_path, monkeypatch):
    root = tmp_path / "gen"
    for cid in ("Case_A", "case_a"):
        write_pair(root / "images" / f"{cid}.nii.gz", root / "labels" / f"{cid}.nii.gz", {1: ((-8, -9, -7), (0, 0, 0))})
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="differ only in letter case") as e:
        prep(root, out, layout="generic", layout_options={"label_map": {"liver": [1]}})
    assert f"{root / 'images' / 'Case_A.nii.gz'} and {root / 'images' / 'case_a.nii.gz'}" in str(e.value)

    site = make_site(tmp_path / "src")
    real = LAYOUTS["totalseg"]

    def doubled(root, modality, options, strict=True):
        cases = real.list_cases(root, modality, options, strict=strict)
        return cases + [SourceCase("good", modality, root / "bad" / "ct.nii.gz", root / "bad")]

    monkeypatch.setitem(LAYOUTS, "totalseg", LayoutAdapter("totalseg", "", doubled, real.load_case, real.check_case))
    with pytest.raises(PrepareError, match="case id 'good' is found twice") as e:
        prep(site, out)
    assert f"{site / 'good' / 'ct.nii.gz'} and {site / 'bad' / 'ct.nii.gz'}" in str(e.value)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- outputs
def test_output_symlink_is_refused_and_left_alone(tmp_path, capsys):
    root = make_site(tmp_path / "src")
    real = tmp_path / "real_cache"
    prep(root, real)
    before = snapshot(real)
    link = tmp_path / "cache_link"
    link.symlink_to(real)
    rc, err = cli(capsys, root, link)
    assert rc == 2 and f"--output {link}: is a symbolic link to {real.resolve()}; fedgin does not write through" in err
    assert link.is_symlink() and os.readlink(link) == str(real) and snapshot(real) == before
    assert not leftovers(link)


def test_output_under_a_file_or_a_file(tmp_path, capsys):
    root = make_site(tmp_path / "src")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    rc, err = cli(capsys, root, blocker / "sub" / "cache")
    assert rc == 2 and f"--output {blocker / 'sub' / 'cache'}: cannot be created, {blocker} is a file" in err
    rc, err = cli(capsys, root, blocker)
    assert rc == 2 and f"--output {blocker}: exists and is a file, not a folder" in err
    assert blocker.read_text() == "mine"


def test_disk_full_mid_prepare_keeps_the_old_cache(tmp_path, monkeypatch, capsys):
    root = make_site(tmp_path / "src", ids=("c1", "c2", "c3"))
    out = tmp_path / "cache"
    prep(root, out)
    before = snapshot(out)
    calls = {"n": 0}
    real_save = np.save

    def full(path, arr, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the first file of the 2nd case
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, arr, *a, **kw)

    monkeypatch.setattr(prepare_mod.np, "save", full)
    with pytest.raises(OSError) as e:
        prep(root, out, organs=["liver"], size=12)
    assert e.value.errno == errno.ENOSPC and e.value.strerror == "No space left on device"
    assert e.value.filename == str(out / "cases" / "c2_image.npy")  # where it was going, not the removed temp folder
    assert snapshot(out) == before and not leftovers(out)
    calls["n"] = 0
    rc, err = cli(capsys, root, out)
    assert rc == 2 and f"{out / 'cases' / 'c2_image.npy'}: No space left on device" in err.splitlines()[-1]
    assert snapshot(out) == before and not leftovers(out)
