"""Tests of the synthetic abdominal phantom (fedgin.phantom): layout, masks, geometry, physics, seeding."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from fedgin.phantom import (ORGANS, GENERATOR, PhantomOutputError, Tissue, assign_splits, case_id,
                            generate_case, generate_dataset)
from fedgin.phantom.grid import reorient_array

SEED = 7
N_CASES = 3
IMAGE = {"ct": "ct.nii.gz", "mri": "mri.nii.gz"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("phantom")
    out = {}
    for modality in ("ct", "mri"):
        folder = root / modality
        ids = generate_dataset(folder, modality, N_CASES, SEED, progress=False)
        out[modality] = (folder, ids)
    return out


def _meta(folder: Path) -> list[dict[str, str]]:
    with open(folder / "meta.csv", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def _load_case(folder: Path, cid: str, modality: str):
    img = nib.load(folder / cid / IMAGE[modality])
    masks = {o: nib.load(folder / cid / "segmentations" / f"{o}.nii.gz") for o in ORGANS}
    return img, masks


def _eroded(mask: np.ndarray) -> np.ndarray:
    """In-plane erosion by one voxel (keeps thin-slice organs), falling back to the mask if it empties."""
    e = ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool))
    return e if e.sum() >= 20 else mask.astype(bool)


def _world_centroid(mask_img) -> np.ndarray:
    idx = np.argwhere(np.asarray(mask_img.dataobj) > 0)
    return (mask_img.affine @ np.r_[idx.mean(axis=0), 1.0])[:3]


# --- layout, meta.csv, ids, splits -------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_layout_and_meta(datasets, modality):
    folder, ids = datasets[modality]
    prefix = "ct" if modality == "ct" else "mr"
    assert ids == [f"{prefix}{i:04d}" for i in range(N_CASES)]
    header = (folder / "meta.csv").read_text().splitlines()[0]
    assert header.startswith("image_id;split;modality;")
    rows = _meta(folder)
    assert [r["image_id"] for r in rows] == ids
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        assert r["modality"] == modality
        assert r["generator"] == GENERATOR
        assert r["orientation"] in ("RAS", "LPS")
        if modality == "ct":
            assert r["sequence"] == "ct" and r["phase"] in ("unenhanced", "portal_venous")
            assert 8 <= float(r["noise"]) <= 25
        else:
            assert r["sequence"] in ("t1", "t2") and r["field_strength"] in ("1.5", "3")
            assert 15 <= float(r["noise"]) <= 40
    assert {r["orientation"] for r in rows} == {"RAS", "LPS"}
    entries = sorted(p.name for p in folder.iterdir())
    assert entries == sorted(ids + ["meta.csv"])  # no temporary leftovers
    for cid in ids:
        assert (folder / cid / IMAGE[modality]).is_file()
        seg = sorted(p.name for p in (folder / cid / "segmentations").iterdir())
        assert seg == sorted(f"{o}.nii.gz" for o in ORGANS)


def test_ids_and_splits():
    assert case_id("ct", 5) == "ct0005" and case_id("mri", 12) == "mr0012"
    for n in (3, 4, 5, 10, 25):
        s = assign_splits(n, 0, "ct")
        assert len(s) == n and {"train", "val", "test"} == set(s)
        assert s == assign_splits(n, 0, "ct")
    s = assign_splits(10, 0, "ct")
    assert s.count("val") == 2 and s.count("test") == 2
    assert assign_splits(1, 0, "ct") == ["train"]
    assert set(assign_splits(2, 0, "mri")) == {"train"}
    assert assign_splits(20, 0, "ct") != assign_splits(20, 1, "ct")
    with pytest.raises(ValueError):
        assign_splits(5, 0, "ct", 0.6, 0.5)


# --- masks and geometry ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_masks_binary_aligned_disjoint_nonempty(datasets, modality):
    folder, ids = datasets[modality]
    rows = {r["image_id"]: r for r in _meta(folder)}
    for cid in ids:
        img, masks = _load_case(folder, cid, modality)
        assert img.get_data_dtype() == (np.int16 if modality == "ct" else np.uint16)
        assert nib.aff2axcodes(img.affine) == tuple(rows[cid]["orientation"])
        shape = "x".join(str(n) for n in img.shape)
        assert rows[cid]["shape"] == shape
        total = np.zeros(img.shape, np.int32)
        for organ, m in masks.items():
            assert m.shape == img.shape, organ
            np.testing.assert_allclose(m.affine, img.affine, atol=1e-6)
            assert m.get_data_dtype() == np.uint8
            a = np.asarray(m.dataobj)
            assert set(np.unique(a)) <= {0, 1}
            assert a.sum() > 0, f"{cid}: {organ} empty"
            total += a
        assert total.max() <= 1, f"{cid}: organ masks overlap"
        nz = img.shape[2]
        assert 20 <= nz <= 160 and 120 <= img.shape[0] <= 320 and 100 <= img.shape[1] <= 320


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_laterality_in_world_coordinates(datasets, modality):
    """RAS+ world: +x = patient right (as in the real TotalSegmentator example), +z = superior."""
    folder, ids = datasets[modality]
    seen = set()
    for cid in ids:
        img, masks = _load_case(folder, cid, modality)
        seen.add("".join(nib.aff2axcodes(img.affine)))
        c = {o: _world_centroid(m) for o, m in masks.items()}
        assert c["liver"][0] > 0 > c["spleen"][0], cid
        assert c["liver"][0] > c["spleen"][0] + 80
        assert c["kidney_right"][0] > c["kidney_left"][0] + 60
        assert c["gallbladder"][0] > c["pancreas"][0]
        assert c["liver"][2] > c["kidney_right"][2] and c["spleen"][2] > c["kidney_left"][2]
        assert c["gallbladder"][1] > c["kidney_right"][1]  # anterior
    assert seen == {"RAS", "LPS"}


def test_organ_volumes_plausible(datasets):
    folder, ids = datasets["ct"]
    for cid in ids:
        _, masks = _load_case(folder, cid, "ct")
        vol = {o: float(np.asarray(m.dataobj).sum()) * float(np.prod(m.header.get_zooms())) / 1000
               for o, m in masks.items()}
        assert 800 < vol["liver"] < 2200, vol
        assert 60 < vol["spleen"] < 400, vol
        assert 50 < vol["kidney_left"] < 260 and 50 < vol["kidney_right"] < 260, vol
        assert 10 < vol["gallbladder"] < 120 and 15 < vol["pancreas"] < 150, vol


# --- reproducibility -------------------------------------------------------------------------------------------------

def test_seeded_reproducibility_matches_disk(datasets):
    folder, ids = datasets["mri"]
    case = generate_case("mri", SEED, 1)
    assert case.case_id == ids[1]
    img, masks = _load_case(folder, ids[1], "mri")
    np.testing.assert_array_equal(np.asarray(img.dataobj), reorient_array(case.image, case.orientation))
    np.testing.assert_allclose(img.affine, case.oriented()[2])
    again = generate_case("mri", SEED, 1)
    np.testing.assert_array_equal(again.image, case.image)
    np.testing.assert_array_equal(again.tissues, case.tissues)
    other = generate_case("mri", SEED + 1, 1)
    assert other.image.shape != case.image.shape or not np.array_equal(other.image, case.image)
    liver = [c.anatomy.parts["liver"]["right"]["center"] for c in (case, other)]
    assert not np.allclose(*liver)
    # same seed and index, other modality: a different patient
    ct_rows, mr_rows = _meta(datasets["ct"][0]), _meta(folder)
    assert [r["body_scale"] for r in ct_rows] != [r["body_scale"] for r in mr_rows]


# --- physics -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["unenhanced", "portal_venous"])
def test_ct_hounsfield_ranges(phase):
    case = generate_case("ct", 3, 0, overrides={"phase": phase})
    img = case.image.astype(np.float32)
    masks = case.organ_masks()
    med = {o: float(np.median(img[_eroded(m > 0)])) for o, m in masks.items()}
    fat = ndimage.binary_erosion(case.tissues == Tissue.FAT, structure=np.ones((3, 3, 1), bool))
    air = case.tissues == Tissue.AIR
    assert 40 <= med["liver"] <= 140, med
    assert 25 <= med["spleen"] <= 150, med
    assert 10 <= med["kidney_left"] <= 230 and 10 <= med["kidney_right"] <= 230, med
    assert -20 <= med["gallbladder"] <= 30, med
    assert 25 <= med["pancreas"] <= 130, med
    assert float(np.median(img[fat])) < -50
    assert float(np.median(img[air])) < -900
    assert img.min() >= -1024 and img.max() <= 3071
    if phase == "portal_venous":
        assert med["liver"] > 80 and med["kidney_left"] > med["liver"]
    else:
        assert med["liver"] < 75 and med["liver"] > med["kidney_left"]


def _mr_medians(case) -> dict[str, float]:
    img = case.image.astype(np.float32)
    return {o: float(np.median(img[_eroded(m > 0)])) for o, m in case.organ_masks().items()}


def test_mri_t2_contrast():
    case = generate_case("mri", 5, 2, mri_sequence="t2", overrides={"bias": 0.0})
    assert case.meta["sequence"] == "t2"
    med = _mr_medians(case)
    assert med["spleen"] > 1.3 * med["liver"], med
    assert med["gallbladder"] > 2.5 * med["liver"], med
    assert med["kidney_left"] > med["liver"] and med["kidney_right"] > med["liver"], med


def test_mri_t1_contrast():
    case = generate_case("mri", 5, 2, mri_sequence="t1", overrides={"bias": 0.0})
    assert case.meta["sequence"] == "t1"
    med = _mr_medians(case)
    assert med["liver"] > 1.05 * med["spleen"], med
    assert case.image.dtype == np.uint16


def test_contrast_inverts_between_modalities():
    """Spleen vs liver ranking: CT unenhanced liver > spleen, T1w liver > spleen, T2w spleen > liver;
    gallbladder darkest organ on CT, brightest on T2w."""
    t2 = _mr_medians(generate_case("mri", 9, 0, mri_sequence="t2", overrides={"bias": 0.0}))
    assert max(t2, key=t2.get) == "gallbladder"
    ct = _mr_medians(generate_case("ct", 9, 0, overrides={"phase": "unenhanced"}))
    assert min(ct, key=ct.get) == "gallbladder"
    assert ct["liver"] > ct["spleen"] and t2["spleen"] > t2["liver"]


def test_unseen_ct_centre_is_a_late_arterial_low_dose_scan():
    """arterial-lowdose: the aorta far brighter than in any portal-venous training case, the renal cortex brighter
    than the liver by more, the noise (air-free fat, SD) higher than the training range's top (25 HU)."""
    pv = generate_case("ct", 4, 0, overrides={"phase": "portal_venous", "enhancement": 1.0})
    art = generate_case("ct", 4, 0, protocol="arterial-lowdose", overrides={"enhancement": 1.0})
    assert art.meta["phase"] == "arterial" and 30 <= art.params.noise_sd <= 45
    def med(case, tissue):
        return float(np.median(case.image[_eroded(case.tissues == tissue)]))
    assert med(art, Tissue.AORTA) > med(pv, Tissue.AORTA) + 100
    assert med(art, Tissue.LIVER) < med(pv, Tissue.LIVER) - 20  # the liver enhances late
    assert med(art, Tissue.KIDNEY_L_CORTEX) - med(art, Tissue.LIVER) > med(pv, Tissue.KIDNEY_L_CORTEX) - med(pv, Tissue.LIVER)
    with pytest.raises(ValueError, match="CT protocol"):
        generate_case("ct", 4, 0, protocol="t1-gd-3T")


def test_unseen_mri_centre_is_a_gadolinium_enhanced_t1w_scan():
    """t1-gd-3T: gadolinium shortens T1, so on T1w GRE the spleen and kidneys turn brighter than the liver (native
    T1w: spleen darker than the liver) and the vessels brightest; bile takes up none."""
    native = _mr_medians(generate_case("mri", 5, 2, mri_sequence="t1", overrides={"bias": 0.0}))
    gd_case = generate_case("mri", 5, 2, protocol="t1-gd-3T", overrides={"bias": 0.0})
    gd = _mr_medians(gd_case)
    assert gd_case.meta["phase"] == "gadolinium_portal_venous" and gd_case.meta["field_strength"] == "3"
    assert native["liver"] > native["spleen"] and gd["spleen"] > gd["liver"] and gd["kidney_left"] > gd["liver"]
    aorta = float(np.median(gd_case.image[_eroded(gd_case.tissues == Tissue.AORTA)]))
    assert aorta > max(gd.values())
    with pytest.raises(ValueError, match="MRI protocol"):
        generate_case("mri", 5, 2, protocol="arterial-lowdose")


# --- output-folder policy ------------------------------------------------------------------------------------------

def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "meta.csv").write_text("image_id;split\ns0001;train\n")
    (tmp_path / "s0001").mkdir()
    with pytest.raises(PhantomOutputError):
        generate_dataset(tmp_path, "ct", 1, 0, progress=False)
    assert (tmp_path / "s0001").is_dir() and (tmp_path / "meta.csv").read_text().startswith("image_id;split\ns0001")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(PhantomOutputError):
        generate_dataset(other, "mri", 1, 0, progress=False)


def test_overwrites_previous_phantom_run(tmp_path):
    out = tmp_path / "mr"
    assert generate_dataset(out, "mri", 2, 1, progress=False) == ["mr0000", "mr0001"]
    (out / ".phantom-tmp-mr0009").mkdir()  # leftover of an interrupted run
    assert generate_dataset(out, "mri", 1, 2, progress=False) == ["mr0000"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.csv", "mr0000"]
    assert [r["image_id"] for r in _meta(out)] == ["mr0000"]


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "a", "pet", 1, 0, progress=False)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "b", "mri", 1, 0, mri_sequence="flair", progress=False)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "c", "ct", 0, 0, progress=False)
