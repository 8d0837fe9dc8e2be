"""Tests of the whole-heart phantom (fedgin.phantom.heart*): seeding, labels and anatomy, CT / MR contrast,
protocols, MM-WHS layout on disk, orientation of the stored cases, splits."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from fedgin.phantom import (HEART_CLASSES, HEART_GENERATOR, HEART_PROTOCOLS, MMWHS_LABELS, HeartTissue,
                            PhantomOutputError, assign_splits, generate_heart_case, generate_heart_dataset,
                            heart_case_id)

SEED = 13
N_CASES = 3
RAW_VALUES = {0, 205, 420, 500, 550, 600, 820, 850}
PLANE = np.ones((3, 3, 1), bool)


def _eroded(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """In-plane erosion (robust to thick slices); falls back to the mask if it empties."""
    e = ndimage.binary_erosion(mask, structure=PLANE, iterations=iterations)
    return e if e.sum() >= 20 else mask.astype(bool)


def _median(image: np.ndarray, mask: np.ndarray) -> float:
    return float(np.median(image.astype(np.float32)[_eroded(mask)]))


@lru_cache(maxsize=None)
def _case(modality: str, protocol: str, index: int):
    """A case shared by several read-only tests (generated once)."""
    return generate_heart_case(modality, SEED, index, protocol=protocol)


def _meta(folder: Path) -> list[dict[str, str]]:
    with open(folder / "meta.csv", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("heart")
    out = {}
    for modality, protocol in (("ct", None), ("mri", "gre-3T")):
        folder = root / modality
        out[modality] = (folder, generate_heart_dataset(folder, modality, N_CASES, SEED, protocol=protocol,
                                                        progress=False))
    return out


# --- seeding ------------------------------------------------------------------------------------------------------

def test_seeded_reproducibility():
    a = generate_heart_case("ct", SEED, 2)
    b = generate_heart_case("ct", SEED, 2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.meta == b.meta
    other = generate_heart_case("ct", SEED, 3)
    assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)
    assert not np.allclose(other.anatomy.parts["lv"]["center"], a.anatomy.parts["lv"]["center"])
    reseeded = generate_heart_case("ct", SEED + 1, 2)
    assert not np.allclose(reseeded.anatomy.parts["lv"]["center"], a.anatomy.parts["lv"]["center"])
    # the MRI set of the same seed holds other patients
    mr = generate_heart_case("mri", SEED, 2)
    assert not np.allclose(mr.anatomy.parts["lv"]["center"], a.anatomy.parts["lv"]["center"])


# --- labels and anatomy --------------------------------------------------------------------------------------------

CASES = [("ct", "cta", 0), ("ct", "cta-lowdose", 1), ("mri", "bssfp-1.5T", 0), ("mri", "gre-3T", 1)]


@pytest.mark.parametrize("modality,protocol,index", CASES)
def test_labels_present_with_plausible_volumes(modality, protocol, index):
    case = _case(modality, protocol, index)
    assert case.labels.dtype == np.uint16 and case.labels.shape == case.image.shape
    assert set(np.unique(case.labels).tolist()) == RAW_VALUES
    ml = float(np.prod(case.grid.spacing)) / 1000
    vol = {name: float(m.sum()) * ml for name, m in case.masks().items()}
    assert 60 <= vol["lv"] <= 200, vol
    assert 60 <= vol["myo"] <= 250, vol
    assert 40 <= vol["rv"] <= 250, vol
    assert 15 <= vol["la"] <= 120 and 15 <= vol["ra"] <= 130, vol
    assert 8 <= vol["ao"] <= 80 and 5 <= vol["pa"] <= 60, vol


@pytest.mark.parametrize("modality,protocol,index", CASES)
def test_myocardium_surrounds_lv_cavity(modality, protocol, index):
    """A 5 mm in-plane shell around the LV cavity is mostly LV myocardium (so the wall is thicker than 5 mm
    almost everywhere), and the LV cavity never touches the RV: the septum lies between them."""
    case = _case(modality, protocol, index)
    m = case.masks()
    k = max(1, int(round(5.0 / case.grid.spacing[0])))
    shell = ndimage.binary_dilation(m["lv"], structure=PLANE, iterations=k) & ~m["lv"]
    assert m["myo"][shell].mean() > 0.75
    touch = ndimage.binary_dilation(m["lv"], structure=ndimage.generate_binary_structure(3, 1)) & ~m["lv"]
    assert m["myo"][touch].mean() > 0.85
    assert not (touch & m["rv"]).any()


def test_anatomical_layout():
    """World (RAS) positions: LV left of the RA, RV anterior to the LV, LA posterior to the LV, the great
    arteries above the ventricles, the pulmonary trunk left-anterior of the aorta."""
    case = generate_heart_case("ct", SEED, 4)
    c = {n: (case.affine @ np.r_[np.argwhere(m).mean(axis=0), 1.0])[:3] for n, m in case.masks().items()}
    assert c["lv"][0] < c["ra"][0] - 20
    assert c["rv"][1] > c["lv"][1]
    assert c["la"][1] < c["lv"][1] - 10
    assert c["ao"][2] > c["lv"][2] and c["pa"][2] > c["rv"][2]
    assert c["pa"][0] < c["ao"][0] and c["pa"][1] > c["ao"][1]


# --- physics -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["cta", "cta-early", "cta-lowdose"])
def test_ct_contrast_ordering(protocol):
    case = _case("ct", protocol, 1)
    assert case.image.dtype == np.int16
    m = case.masks()
    med = {"lv": _median(case.image, m["lv"]), "myo": _median(case.image, m["myo"]),
           "fat": _median(case.image, case.tissues == HeartTissue.FAT),
           "lung": _median(case.image, case.tissues == HeartTissue.LUNG)}
    assert med["lv"] > med["myo"] > med["fat"] > med["lung"], med
    assert 150 <= med["lv"] <= 550 and 80 <= med["myo"] <= 170, med
    assert -130 <= med["fat"] <= -50 and med["lung"] < -800, med
    rv = _median(case.image, m["rv"])
    if protocol == "cta-early":  # right heart first
        assert rv > med["lv"] + 20, (rv, med)
    elif protocol == "cta-lowdose":  # late: the right heart is washing out
        assert rv < med["lv"] - 50, (rv, med)
    else:
        assert rv <= med["lv"] + 5, (rv, med)


def test_ct_site_styles_differ():
    """Same patient, two CT sites: the low-dose site is noisier and coarser."""
    std = {}
    for protocol in ("cta", "cta-lowdose"):
        case = generate_heart_case("ct", SEED, 0, protocol=protocol, overrides={"mixing_hu": 0.0})
        std[protocol] = float(case.image[_eroded(case.masks()["lv"], 2)].std())
        assert case.grid.spacing[0] >= HEART_PROTOCOLS[protocol].inplane[0] - 1e-6
        assert case.grid.spacing[2] in HEART_PROTOCOLS[protocol].slices
    assert std["cta-lowdose"] > std["cta"] + 3, std


@pytest.mark.parametrize("protocol", ["bssfp-1.5T", "gre-3T"])
def test_mri_bright_blood(protocol):
    case = generate_heart_case("mri", SEED, 2, protocol=protocol, overrides={"bias": 0.0})
    assert case.image.dtype == np.uint16
    m = case.masks()
    lv, myo = _median(case.image, m["lv"]), _median(case.image, m["myo"])
    lung = _median(case.image, case.tissues == HeartTissue.LUNG)
    assert lv > 1.5 * myo > lung, (lv, myo, lung)
    assert _median(case.image, m["ra"]) > 1.5 * myo
    assert case.meta["field_strength"] == ("1.5" if protocol == "bssfp-1.5T" else "3")


def test_held_out_protocol_is_black_blood():
    """tse-bb-3T: the blood pool is darker than the myocardium (the inverse of every bright-blood protocol and of
    CT angiography), thick slices at 3 T."""
    case = generate_heart_case("mri", SEED, 2, protocol="tse-bb-3T", overrides={"bias": 0.0})
    m = case.masks()
    lv, myo, ra = (_median(case.image, m[k]) for k in ("lv", "myo", "ra"))
    assert myo > 3 * lv and myo > 3 * ra, (lv, myo, ra)
    assert case.meta["readout"] == "tse" and case.meta["field_strength"] == "3" and case.grid.spacing[2] >= 6.0


def test_mri_protocols_differ():
    bssfp = generate_heart_case("mri", SEED, 0, protocol="bssfp-1.5T")
    gre = generate_heart_case("mri", SEED, 0, protocol="gre-3T")
    assert bssfp.grid.spacing[2] <= 3.0 < 5.0 <= gre.grid.spacing[2]
    assert (bssfp.meta["readout"], gre.meta["readout"]) == ("bssfp", "gre")
    assert gre.params.myo_t1 > bssfp.params.myo_t1


def test_protocol_validation_and_mixed():
    with pytest.raises(ValueError):
        generate_heart_case("mri", 0, 0, protocol="cta")
    with pytest.raises(ValueError):
        generate_heart_case("ct", 0, 0, protocol="t2")
    with pytest.raises(ValueError):
        generate_heart_case("pet", 0, 0)
    with pytest.raises(ValueError):
        generate_heart_case("ct", 0, 0, overrides={"not_a_field": 1})
    assert generate_heart_case("ct", 0, 0).protocol == "cta"
    assert generate_heart_case("mr", 0, 0).protocol == "bssfp-1.5T"
    seen = {generate_heart_case("ct", 0, i, protocol="mixed").protocol for i in range(6)}
    assert len(seen) >= 2 and seen <= {"cta", "cta-early", "cta-lowdose"}


# --- files, orientation, splits -------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_layout_naming_and_label_values(datasets, modality):
    folder, ids = datasets[modality]
    prefix = "ct" if modality == "ct" else "mr"
    assert ids == [f"{prefix}_train_{1001 + i}" for i in range(N_CASES)] == [heart_case_id(modality, i)
                                                                              for i in range(N_CASES)]
    expected = {f"{cid}_{kind}.nii.gz" for cid in ids for kind in ("image", "label")} | {"meta.csv"}
    assert {p.name for p in folder.iterdir()} == expected
    rows = {r["image_id"]: r for r in _meta(folder)}
    for cid in ids:
        img = nib.load(folder / f"{cid}_image.nii.gz")
        lab = nib.load(folder / f"{cid}_label.nii.gz")
        assert img.get_data_dtype() == (np.int16 if modality == "ct" else np.uint16)
        assert lab.get_data_dtype() == np.uint16
        assert img.shape == lab.shape
        np.testing.assert_allclose(img.affine, lab.affine, atol=1e-6)
        values = set(np.unique(np.asarray(lab.dataobj)).tolist())
        assert values <= RAW_VALUES and values == RAW_VALUES
        assert "".join(nib.aff2axcodes(img.affine)) == rows[cid]["orientation"]
        assert rows[cid]["shape"] == "x".join(str(n) for n in img.shape)
    assert {r["orientation"] for r in rows.values()} == {"RAS", "LPS"}


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_stored_orientation_maps_to_same_world_points(datasets, modality):
    """Each stored case (RAS or LPS voxel order) equals the in-memory case up to the voxel order, and its affine
    puts every structure's centroid at the same world point as the in-memory RAS case."""
    folder, ids = datasets[modality]
    protocol = "gre-3T" if modality == "mri" else "cta"  # the datasets' protocols (CT: the default)
    for i, cid in enumerate(ids):
        case = _case(modality, protocol, i)
        img = nib.load(folder / f"{cid}_image.nii.gz")
        lab = nib.load(folder / f"{cid}_label.nii.gz")
        data = np.asarray(lab.dataobj)
        flipped = case.orientation == "LPS"
        expect = case.labels[::-1, ::-1, :] if flipped else case.labels
        np.testing.assert_array_equal(data, expect)
        np.testing.assert_array_equal(np.asarray(img.dataobj), case.image[::-1, ::-1, :] if flipped else case.image)
        for name in HEART_CLASSES:
            v = MMWHS_LABELS[name]
            disk = (lab.affine @ np.r_[np.argwhere(data == v).mean(axis=0), 1.0])[:3]
            mem = (case.affine @ np.r_[np.argwhere(case.labels == v).mean(axis=0), 1.0])[:3]
            np.testing.assert_allclose(disk, mem, atol=1e-3, err_msg=f"{cid} {name}")
        lv_world = (lab.affine @ np.r_[np.argwhere(data == 500).mean(axis=0), 1.0])[:3]
        ra_world = (lab.affine @ np.r_[np.argwhere(data == 550).mean(axis=0), 1.0])[:3]
        assert lv_world[0] < ra_world[0]  # RAS+ world: the LV lies to the patient's left of the RA


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_meta_and_splits(datasets, modality):
    folder, ids = datasets[modality]
    header = (folder / "meta.csv").read_text().splitlines()[0]
    assert header.startswith("image_id;split;modality;protocol;")
    rows = _meta(folder)
    assert [r["image_id"] for r in rows] == ids
    assert [r["split"] for r in rows] == assign_splits(N_CASES, SEED, modality)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        assert r["modality"] == modality and r["generator"] == HEART_GENERATOR and r["seed"] == str(SEED)
        assert r["protocol"] == ("cta" if modality == "ct" else "gre-3T")
        if modality == "ct":
            assert 10 <= float(r["noise"]) <= 20 and 300 <= float(r["blood_left_hu"]) <= 500
        else:
            assert r["field_strength"] == "3" and 15 <= float(r["noise"]) <= 30


def test_splits_follow_fractions(tmp_path):
    ids = generate_heart_dataset(tmp_path / "ct", "ct", 5, 2, protocol="cta-lowdose", val_fraction=0.2,
                                 test_fraction=0.4, progress=False)
    rows = _meta(tmp_path / "ct")
    assert [r["split"] for r in rows].count("test") == 2 and [r["split"] for r in rows].count("val") == 1
    assert [r["image_id"] for r in rows] == ids
    assert {r["protocol"] for r in rows} == {"cta-lowdose"}


def test_output_folder_policy(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(PhantomOutputError):
        generate_heart_dataset(foreign, "ct", 1, 0, progress=False)
    assert (foreign / "notes.txt").read_text() == "x"
    out = tmp_path / "mr"
    assert generate_heart_dataset(out, "mri", 2, 1, progress=False) == ["mr_train_1001", "mr_train_1002"]
    assert generate_heart_dataset(out, "mri", 1, 3, progress=False) == ["mr_train_1001"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.csv", "mr_train_1001_image.nii.gz",
                                                      "mr_train_1001_label.nii.gz"]
    with pytest.raises(ValueError):
        generate_heart_dataset(tmp_path / "bad", "ct", 1, 0, protocol="gre-3T", progress=False)
    with pytest.raises(ValueError):
        generate_heart_dataset(tmp_path / "bad", "ct", 0, 0, progress=False)
