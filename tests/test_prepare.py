"""Tests of the data pipeline: NIfTI reading, TotalSegmentator layout, preprocessing and ``prepare_site``.

Synthetic cases are built here with nibabel: a noisy background with bright cubes ("liver", "spleen") at known
world positions, stored in RAS or LPS voxel order with anisotropic spacing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedgin.data import LAYOUTS, LayoutError, NiftiError, PrepareError, load_datalist, prepare_site, task_labels
from fedgin.data.nifti import read_nifti_ras, voxel_spacing
from fedgin.data.prepare import split_cases
from fedgin.data.preprocess import center_pad_crop, resample, target_spacing, zscore

REAL_CASE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "totalseg-ct-example"

LIVER = dict(centre=(4.0, -3.0, 1.0), half=(6.0, 5.0, 7.0))
SPLEEN = dict(centre=(-8.0, 6.0, -4.0), half=(3.0, 3.0, 4.0))


# ----------------------------------------------------------------------------------------------- synthetic data
def make_affine(shape, spacing, lps=False):
    """Voxel -> world affine of a grid centred on the world origin, in RAS or LPS voxel order."""
    shape, spacing = np.asarray(shape, float), np.asarray(spacing, float)
    signs = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    a = np.eye(4)
    a[:3, :3] = np.diag(signs * spacing)
    a[:3, 3] = -signs * spacing * (shape - 1) / 2  # voxel (n-1)/2 at world 0
    return a


def world_coords(shape, affine):
    idx = np.indices(shape).reshape(3, -1).astype(float)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).T.reshape(*shape, 3)


def cube(shape, affine, centre, half):
    w = world_coords(shape, affine)
    return np.all(np.abs(w - np.asarray(centre)) <= np.asarray(half), axis=-1)


def make_case(root, case_id, *, shape=(40, 40, 30), spacing=(0.8, 0.8, 1.0), lps=False, modality="ct", seed=0,
              organs=("liver", "spleen")):
    """Write one TotalSegmentator-layout case; returns its folder."""
    folder = Path(root) / case_id
    (folder / "segmentations").mkdir(parents=True)
    affine = make_affine(shape, spacing, lps)
    rng = np.random.default_rng(seed)
    image = rng.normal(-100, 20, shape)
    cubes = {"liver": LIVER, "spleen": SPLEEN}
    for organ in organs:
        m = cube(shape, affine, **cubes[organ])
        image[m] += 250 if organ == "liver" else 180
        nib.save(nib.Nifti1Image(m.astype(np.uint8), affine), folder / "segmentations" / f"{organ}.nii.gz")
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), folder / f"{modality}.nii.gz")
    return folder


def make_site(root, specs):
    """specs: case_id -> kwargs of make_case."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, (case_id, kw) in enumerate(specs.items()):
        make_case(root, case_id, seed=i, **kw)
    return root


SPECS = {
    "c_ras": dict(lps=False, spacing=(0.8, 0.8, 1.0), shape=(40, 40, 30)),
    "c_lps": dict(lps=True, spacing=(0.8, 0.8, 1.0), shape=(40, 40, 30)),
    "c_ras_thick": dict(lps=False, spacing=(2.0, 2.0, 5.0), shape=(16, 16, 8)),
    "c_lps_thick": dict(lps=True, spacing=(2.0, 2.0, 5.0), shape=(16, 16, 8)),
}
EXPECTED_Z = {"c_ras": 3.0, "c_lps": 3.0, "c_ras_thick": 5.0, "c_lps_thick": 5.0}


def cached_volume(datalist, case):
    root = Path(datalist["root"])
    img = np.load(root / case["image"])
    lbl = np.load(root / case["label"])
    return img, lbl


def centroid_world(mask_xyz, affine):
    idx = np.argwhere(mask_xyz).astype(float)
    return (np.asarray(affine)[:3, :3] @ idx.mean(axis=0)) + np.asarray(affine)[:3, 3]


def source_centroid(case_folder, organ):
    img = nib.load(case_folder / "segmentations" / f"{organ}.nii.gz")
    return centroid_world(np.asarray(img.dataobj) > 0, img.affine)


def all_cases(datalist):
    return [c for split in ("training", "validation", "test") for c in datalist[split]]


def assert_nothing_left(out: Path):
    assert not out.exists(), f"{out} was left behind"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, f"temporary folders left behind: {leftovers}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("src") / "site", SPECS)


@pytest.fixture(scope="module")
def prepared(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "cache"
    path = prepare_site(layout="totalseg", input_dir=site, output_dir=out, site="site-a", modality="ct",
                        organs=["liver", "spleen"], spacing=1.5, size=21, progress=False)
    return path, load_datalist(path)


# ------------------------------------------------------------------------------------------------ the contract
def test_datalist_contract(prepared, site):
    path, d = prepared
    assert path.name == "datalist.json" and path.is_file()
    raw = json.loads(path.read_text())
    for key in ("format", "site", "modality", "layout", "source", "labels", "spacing_mm", "size_px", "z_rule",
                "normalization", "seed", "training", "validation", "test"):
        assert key in raw, key
    assert raw["format"] == "fedgin-slices/1"
    assert raw["site"] == "site-a" and raw["modality"] == "ct" and raw["layout"] == "totalseg"
    assert Path(raw["source"]) == site.resolve()
    assert raw["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert task_labels(d) == ["liver", "spleen"]
    assert raw["spacing_mm"] == [1.5, 1.5] and raw["size_px"] == [21, 21]
    assert raw["z_rule"] == "keep z spacing; below 2.5 mm -> 3.0 mm"
    cases = all_cases(raw)
    assert sorted(c["case_id"] for c in cases) == sorted(SPECS)
    for c in cases:
        for key in ("case_id", "modality", "image", "label", "num_slices", "spacing_mm", "affine", "source_image",
                    "source_shape", "source_affine", "foreground_voxels"):
            assert key in c, key
        assert c["image"] == f"cases/{c['case_id']}_image.npy" and c["label"] == f"cases/{c['case_id']}_label.npy"
        assert not Path(c["image"]).is_absolute()
        img, lbl = cached_volume(d, c)
        assert img.dtype == np.float32 and lbl.dtype == np.uint8
        assert img.shape == lbl.shape == (c["num_slices"], 21, 21)
        assert set(np.unique(lbl)) <= {0, 1, 2}
        assert c["foreground_voxels"] == {"liver": int((lbl == 1).sum()), "spleen": int((lbl == 2).sum())}
        assert c["foreground_voxels"]["liver"] > 0 and c["foreground_voxels"]["spleen"] > 0
        assert Path(c["source_image"]) == (site / c["case_id"] / "ct.nii.gz").resolve()
        src = nib.load(c["source_image"])
        assert c["source_shape"] == list(src.shape)
        np.testing.assert_allclose(c["source_affine"], src.affine, atol=1e-6)
        np.testing.assert_allclose(voxel_spacing(np.array(c["affine"])), c["spacing_mm"], atol=1e-9)
        assert c["source_label"] == f"cases/{c['case_id']}_source_label.nii.gz"
    assert sorted(p.name for p in Path(d["root"]).iterdir()) == ["cases", "datalist.json"]


def test_source_label_map_is_the_masks_on_the_source_grid_in_ras_order(prepared, site):
    """The kept source label map holds the task ids on the source volume's voxels, reordered to RAS (the LPS
    cases are flipped): each organ's voxels and world centroid equal those of its source mask."""
    _, d = prepared
    for c in all_cases(d):
        img = nib.load(Path(d["root"]) / c["source_label"])
        lab = np.asarray(img.dataobj)
        assert lab.dtype == np.uint8 and lab.shape == tuple(c["source_shape"])
        assert np.all(np.diag(img.affine)[:3] > 0)  # RAS voxel order
        for k, organ in enumerate(("liver", "spleen"), start=1):
            mask = nib.load(site / c["case_id"] / "segmentations" / f"{organ}.nii.gz")
            assert int((lab == k).sum()) == int(np.asarray(mask.dataobj).sum())
            np.testing.assert_allclose(centroid_world(lab == k, img.affine),
                                       source_centroid(site / c["case_id"], organ), atol=1e-6)


def test_source_geometry_scores_the_prediction_mapped_back_onto_the_source_grid(prepared):
    """The cached label itself, taken as the prediction and mapped back onto each source grid, overlaps the
    source masks almost perfectly (only the 1.5 mm resampling is lost): Dice > 0.85 against them, on the
    source grid's own shape and voxel size. A prediction of nothing scores 0 there."""
    from fedgin.engine.data import SliceSet
    from fedgin.engine.trainer import source_geometry

    path, _ = prepared
    data = SliceSet([path], "training")
    from fedgin.engine.metrics import dice_per_class

    for case in data.cases:
        pred, truth, spacing = source_geometry(case, np.asarray(case.label))
        assert pred.shape == truth.shape == tuple(case.meta["source_shape"])
        expected = {"c_ras": (0.8, 0.8, 1.0), "c_lps": (0.8, 0.8, 1.0)}.get(case.case_id, (2.0, 2.0, 5.0))
        np.testing.assert_allclose(spacing, expected, atol=1e-6)
        scores = dice_per_class(pred, truth, 2)
        assert all(r["dice"] > 0.85 for r in scores), (case.case_id, scores)
        empty, _, _ = source_geometry(case, np.zeros_like(case.label))
        assert not empty.any()


def test_source_geometry_needs_the_source_label_map(prepared, tmp_path):
    """A cache prepared before the source label maps were kept: a clear error naming the datalist."""
    import shutil

    from fedgin.data.datalist import DatalistError
    from fedgin.engine.data import SliceSet
    from fedgin.engine.trainer import source_geometry

    path, _ = prepared
    old = tmp_path / "old"
    shutil.copytree(path.parent, old)
    raw = json.loads((old / "datalist.json").read_text())
    for c in all_cases(raw):
        del c["source_label"]
    (old / "datalist.json").write_text(json.dumps(raw))
    case = SliceSet([old / "datalist.json"], "training").cases[0]
    with pytest.raises(DatalistError, match=r"old/datalist.json.*no source label map.*prepare the site again"):
        source_geometry(case, np.asarray(case.label))


def test_z_spacing_rule(prepared):
    _, d = prepared
    for c in all_cases(d):
        np.testing.assert_allclose(c["spacing_mm"], [1.5, 1.5, EXPECTED_Z[c["case_id"]]], atol=1e-9)
        aff = np.array(c["affine"])
        # RAS voxel order: diagonal affine with positive entries for these axis-aligned inputs
        assert np.all(np.diag(aff)[:3] > 0) and np.allclose(aff[:3, :3], np.diag(np.diag(aff)[:3]))
    assert target_spacing((0.8, 0.8, 1.0)) == (1.5, 1.5, 3.0)
    assert target_spacing((2.0, 2.0, 5.0)) == (1.5, 1.5, 5.0)
    assert target_spacing((0.7, 0.7, 2.5)) == (1.5, 1.5, 2.5)
    assert target_spacing((0.7, 0.7, 2.49), 1.0) == (1.0, 1.0, 3.0)


@pytest.mark.parametrize("case_id", sorted(SPECS))
def test_organ_world_centroid_preserved(prepared, site, case_id):
    """The cached label + cached affine put each organ where the source NIfTI has it (RAS and LPS inputs)."""
    _, d = prepared
    c = next(c for c in all_cases(d) if c["case_id"] == case_id)
    _, lbl = cached_volume(d, c)
    vol = np.moveaxis(lbl, 0, 2)  # (S, H, W) -> RAS (X, Y, Z)
    for k, organ in ((1, "liver"), (2, "spleen")):
        got = centroid_world(vol == k, c["affine"])
        want = source_centroid(site / case_id, organ)
        assert np.all(np.abs(got - want) <= np.array(c["spacing_mm"])), (organ, got, want)
        # and near the designed position
        designed = np.array((LIVER if organ == "liver" else SPLEEN)["centre"])
        assert np.all(np.abs(got - designed) <= np.array(c["spacing_mm"]) + 1.0), (organ, got, designed)


def test_zscore_of_cached_images(prepared):
    _, d = prepared
    for c in all_cases(d):
        img, lbl = cached_volume(d, c)
        # size 21 is exactly the resampled in-plane size here: no padding, so the whole stack is the field of view
        assert abs(float(img.mean())) < 1e-4 and abs(float(img.std()) - 1) < 1e-4
        assert img[lbl == 1].mean() > img[lbl == 0].mean() + 1  # the organ stays bright


def test_zscore_function():
    rng = np.random.default_rng(1)
    v = rng.normal(50, 10, (20, 20, 10)).astype(np.float32)
    v[0, 0, 0] = 1e6  # an outlier the clip removes
    z = zscore(v)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4 and z.max() < 4
    z_raw = zscore(v, clip_percentiles=None)
    assert abs(z_raw.mean()) < 1e-5 and abs(z_raw.std() - 1) < 1e-4 and z_raw.max() > 30
    assert v[0, 0, 0] == 1e6  # input untouched
    region = (slice(2, 18), slice(2, 18), slice(None))
    zr = zscore(v, stats_region=region)
    assert abs(zr[region].mean()) < 1e-5 and abs(zr[region].std() - 1) < 1e-4
    assert np.all(zscore(np.full((3, 3, 3), 7.0)) == 0)


def test_split_by_case_seeded(prepared):
    _, d = prepared
    ids = {s: [c["case_id"] for c in d[s]] for s in ("training", "validation", "test")}
    flat = [i for v in ids.values() for i in v]
    assert sorted(flat) == sorted(SPECS) and len(set(flat)) == len(flat)
    assert len(ids["validation"]) >= 1 and len(ids["test"]) >= 1 and len(ids["training"]) >= 1
    names = [f"s{i:04d}" for i in range(10)]
    a = split_cases(names, seed=3)
    assert a == split_cases(list(reversed(names)), seed=3)
    assert sorted(sum(a.values(), [])) == names
    assert (len(a["training"]), len(a["validation"]), len(a["test"])) == (6, 2, 2)
    three = split_cases(["a", "b", "c"], val_fraction=0.0, test_fraction=0.0)
    assert all(len(v) == 1 for v in three.values())
    assert split_cases(["a", "b"]) == {"training": ["a", "b"], "validation": [], "test": []}


def test_meta_split_and_modality_filter(tmp_path):
    root = make_site(tmp_path / "src", {
        "s0001": dict(shape=(16, 16, 8), spacing=(2, 2, 5)),
        "s0002": dict(shape=(16, 16, 8), spacing=(2, 2, 5), lps=True),
        "s0003": dict(shape=(16, 16, 8), spacing=(2, 2, 5)),
        "s0004": dict(shape=(16, 16, 8), spacing=(2, 2, 5), modality="mri"),
        "s0005": dict(shape=(16, 16, 8), spacing=(2, 2, 5), modality="mri"),
    })
    (root / "meta.csv").write_text(
        "image_id;split;modality;age\ns0001;val;ct;50\ns0002;train;ct;60\ns0003;test;ct;70\n"
        "s0004;train;mri;40\ns0005;test;mri;41\n"
    )
    d = load_datalist(prepare_site(layout="totalseg", input_dir=root, output_dir=tmp_path / "ct", site="a",
                                   modality="ct", organs=["spleen"], size=16, progress=False))
    assert [c["case_id"] for c in d["training"]] == ["s0002"]
    assert [c["case_id"] for c in d["validation"]] == ["s0001"]
    assert [c["case_id"] for c in d["test"]] == ["s0003"]
    d = load_datalist(prepare_site(layout="totalseg", input_dir=root, output_dir=tmp_path / "mri", site="b",
                                   modality="mri", organs=["liver"], size=16, progress=False))
    assert d["modality"] == "mri"
    assert [c["case_id"] for c in d["training"]] == ["s0004"] and [c["case_id"] for c in d["test"]] == ["s0005"]
    assert d["validation"] == [] and all(c["modality"] == "mri" for c in all_cases(d))

    (root / "meta.csv").write_text("image_id;split\ns0001;val\ns0002;holdout\ns0003;test\n")
    out = tmp_path / "bad"
    with pytest.raises(LayoutError, match="holdout") as e:
        prepare_site(layout="totalseg", input_dir=root, output_dir=out, site="a", modality="ct", organs=["liver"],
                     progress=False)
    assert "meta.csv" in str(e.value)
    assert_nothing_left(out)
    (root / "meta.csv").write_text("image_id;split\ns0001;val\ns0003;test\n")
    with pytest.raises(LayoutError, match="s0002"):
        prepare_site(layout="totalseg", input_dir=root, output_dir=out, site="a", modality="ct", organs=["liver"],
                     progress=False)
    assert_nothing_left(out)


def test_pad_and_crop_keep_world_position(site, tmp_path):
    for size in (32, 12):
        d = load_datalist(prepare_site(layout="totalseg", input_dir=site, output_dir=tmp_path / f"s{size}",
                                       site="a", modality="ct", organs=["liver"], size=size, progress=False))
        for c in all_cases(d):
            img, lbl = cached_volume(d, c)
            assert img.shape == (c["num_slices"], size, size)
            vol = np.moveaxis(lbl, 0, 2)
            got = centroid_world(vol == 1, c["affine"])
            want = source_centroid(site / c["case_id"], "liver")
            assert np.all(np.abs(got - want) <= np.array(c["spacing_mm"])), (size, c["case_id"], got, want)
            if size == 32:  # 21 -> 32: 5 voxels of padding before, 6 after; padding is the normalised minimum
                assert np.all(img[:, :5, :] == img.min()) and np.all(img[:, -6:, :] == img.min())
                assert np.all(lbl[:, :5, :] == 0) and np.all(lbl[:, :, -6:] == 0)


def test_resample_affine_is_exact():
    """Linear interpolation reproduces a linear function of world position exactly: the affine is where samples are."""
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 1.1, 2.0])
    affine[:3, 3] = [-12.0, 7.5, 30.0]
    shape = (30, 25, 12)
    g = np.array([0.7, -1.3, 0.4])
    vol = (world_coords(shape, affine) @ g + 5.0).astype(np.float32)
    out, new_aff = resample(vol, affine, (1.5, 1.5, 3.0), order=1)
    np.testing.assert_allclose(voxel_spacing(new_aff), (1.5, 1.5, 3.0), atol=1e-9)
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    np.testing.assert_allclose(new_aff @ corner, affine @ corner, atol=1e-9)  # field-of-view start kept
    assert out.shape == (16, 18, 8)  # round(30*0.8/1.5), round(25*1.1/1.5), round(12*2/3)
    expected = world_coords(out.shape, new_aff) @ g + 5.0
    inner = (slice(1, -1),) * 3  # the outermost samples fall in the source's edge half-voxel (clamped)
    np.testing.assert_allclose(out[inner], expected[inner], atol=2e-3)
    lbl = np.zeros(shape, np.uint8)
    lbl[10:20, 5:15, 3:9] = 3
    out_l, aff_l = resample(lbl, affine, (1.5, 1.5, 3.0), order=0)
    assert out_l.dtype == np.uint8 and set(np.unique(out_l)) == {0, 3}
    np.testing.assert_allclose(aff_l, new_aff)
    padded, aff_p = center_pad_crop(out, new_aff, 20, pad_value=-1)
    np.testing.assert_allclose(world_coords(padded.shape, aff_p)[3, 2], world_coords(out.shape, new_aff)[1, 1])
    assert padded[0, 0, 0] == -1


def test_nifti_reader(tmp_path):
    affine = make_affine((6, 5, 4), (1, 1, 2), lps=True)
    data = np.arange(120, dtype=np.int16).reshape(6, 5, 4)
    nib.save(nib.Nifti1Image(data[..., None], affine), tmp_path / "a.nii.gz")
    v = read_nifti_ras(tmp_path / "a.nii.gz")
    assert v.data.shape == (6, 5, 4) and v.source_shape == (6, 5, 4)
    assert nib.aff2axcodes(v.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(v.data, data[::-1, ::-1, :])
    np.testing.assert_allclose(world_coords((6, 5, 4), v.affine)[0, 0, 0], world_coords((6, 5, 4), affine)[5, 4, 0])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), tmp_path / "b.nii.gz")
    with pytest.raises(NiftiError, match="b.nii.gz.*3-D"):
        read_nifti_ras(tmp_path / "b.nii.gz")
    with pytest.raises(NiftiError, match="not found"):
        read_nifti_ras(tmp_path / "missing.nii.gz")
    (tmp_path / "c.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(NiftiError, match="c.nii.gz"):
        read_nifti_ras(tmp_path / "c.nii.gz")


def test_mask_in_other_voxel_order_is_accepted(tmp_path):
    """A mask stored LPS on the same world grid as an RAS image is the same grid: accepted, and aligned."""
    root = tmp_path / "src"
    folder = make_case(root, "mix", shape=(16, 16, 8), spacing=(2, 2, 5))
    p = folder / "segmentations" / "liver.nii.gz"
    img = nib.load(p)
    original = np.asarray(img.dataobj).copy()
    data = original[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [15, 15]  # new index i' = 15 - i
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip), p)
    v = read_nifti_ras(p)
    np.testing.assert_allclose(v.affine, img.affine, atol=1e-9)
    case = LAYOUTS["totalseg"].list_cases(root, "ct")[0]
    LAYOUTS["totalseg"].check_case(case, ["liver"])
    loaded = LAYOUTS["totalseg"].load_case(case, ["liver"])
    np.testing.assert_array_equal(loaded.label == 1, original > 0)


def test_kidneys_is_the_union_of_both_kidney_masks(tmp_path):
    """FedGIN's 'kidneys' task from TotalSegmentator's kidney_left + kidney_right files; an own file wins."""
    root = tmp_path / "src"
    folder = make_case(root, "k", shape=(16, 16, 8), spacing=(2, 2, 5), organs=())
    img = nib.load(folder / "ct.nii.gz")
    left, right = np.zeros(img.shape, np.uint8), np.zeros(img.shape, np.uint8)
    left[2:5, 3:6, 2:4] = 1
    right[10:14, 3:6, 2:5] = 1
    nib.save(nib.Nifti1Image(left, img.affine), folder / "segmentations" / "kidney_left.nii.gz")
    case = LAYOUTS["totalseg"].list_cases(root, "ct")[0]
    with pytest.raises(LayoutError, match="kidney_right"):
        LAYOUTS["totalseg"].check_case(case, ["kidneys"])
    nib.save(nib.Nifti1Image(right, img.affine), folder / "segmentations" / "kidney_right.nii.gz")
    LAYOUTS["totalseg"].check_case(case, ["kidneys"])
    loaded = LAYOUTS["totalseg"].load_case(case, ["kidneys"])
    np.testing.assert_array_equal(loaded.label, ((left | right) > 0).astype(np.uint8))
    own = np.zeros(img.shape, np.uint8)
    own[0:2, 0:2, 0:2] = 1
    nib.save(nib.Nifti1Image(own, img.affine), folder / "segmentations" / "kidneys.nii.gz")
    np.testing.assert_array_equal(LAYOUTS["totalseg"].load_case(case, ["kidneys"]).label, own)


def test_overlap_later_organ_wins(tmp_path, caplog):
    root = tmp_path / "src"
    folder = make_case(root, "ov", shape=(16, 16, 8), spacing=(2, 2, 5))
    img = nib.load(folder / "ct.nii.gz")
    big = np.zeros(img.shape, np.uint8)
    big[2:12, 2:12, 2:6] = 1  # covers the spleen cube partly
    nib.save(nib.Nifti1Image(big, img.affine), folder / "segmentations" / "liver.nii.gz")
    spleen = np.asarray(nib.load(folder / "segmentations" / "spleen.nii.gz").dataobj) > 0
    n_overlap = int(np.count_nonzero(spleen & (big > 0)))
    assert n_overlap > 0
    case = LAYOUTS["totalseg"].list_cases(root, "ct")[0]
    with caplog.at_level(logging.WARNING, logger="fedgin.data.totalseg"):
        loaded = LAYOUTS["totalseg"].load_case(case, ["liver", "spleen"])
    assert int((loaded.label == 2).sum()) == int(spleen.sum())
    assert int((loaded.label == 1).sum()) == int(big.sum()) - n_overlap
    assert any(str(n_overlap) in r.getMessage() and "ov" in r.getMessage() for r in caplog.records)


def test_rerun_replaces_previous_cache(site, tmp_path):
    out = tmp_path / "cache"
    kw = dict(layout="totalseg", input_dir=site, output_dir=out, site="a", modality="ct", progress=False, size=16)
    prepare_site(organs=["liver", "spleen"], **kw)
    d = load_datalist(prepare_site(organs=["spleen"], **kw))
    assert d["labels"] == {"0": "background", "1": "spleen"}
    assert sorted(p.name for p in out.iterdir()) == ["cases", "datalist.json"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="busy"):
        prepare_site(organs=["liver"], **{**kw, "output_dir": tmp_path / "busy"})
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ bad inputs
def _missing_organ(folder):
    return folder / "segmentations" / "pancreas.nii.gz"


def _shape_mismatch(folder):
    p = folder / "segmentations" / "liver.nii.gz"
    img = nib.load(folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 7), np.uint8), img.affine), p)
    return p


def _affine_mismatch(folder):
    p = folder / "segmentations" / "spleen.nii.gz"
    img = nib.load(p)
    aff = img.affine.copy()
    aff[0, 3] += 0.5
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), p)
    return p


def _not_binary(folder):
    p = folder / "segmentations" / "liver.nii.gz"
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 2, img.affine), p)
    return p


def _garbage_image(folder):
    p = folder / "ct.nii.gz"
    p.write_bytes(b"this is not a NIfTI file" * 20)
    return p


def _truncated_image(folder):
    p = folder / "ct.nii.gz"
    p.write_bytes(p.read_bytes()[:1000])  # valid header, data cut short
    return p


@pytest.mark.parametrize(
    "breaker, error",
    [
        (_missing_organ, LayoutError),
        (_shape_mismatch, LayoutError),
        (_affine_mismatch, LayoutError),
        (_not_binary, LayoutError),
        (_garbage_image, NiftiError),
        (_truncated_image, NiftiError),
    ],
    ids=["missing-organ", "mask-shape", "mask-affine", "mask-not-binary", "garbage-nifti", "truncated-nifti"],
)
def test_bad_input_errors_name_the_file(tmp_path, breaker, error):
    root = make_site(tmp_path / "src", {"good": dict(shape=(16, 16, 8), spacing=(2, 2, 5)),
                                        "bad": dict(shape=(16, 16, 8), spacing=(2, 2, 5), lps=True)})
    offending = breaker(root / "bad")
    out = tmp_path / "out"
    with pytest.raises(error) as e:
        prepare_site(layout="totalseg", input_dir=root, output_dir=out, site="a", modality="ct",
                     organs=["liver", "spleen", "pancreas"] if breaker is _missing_organ else ["liver", "spleen"],
                     progress=False)
    assert str(offending) in str(e.value)
    assert_nothing_left(out)


def test_empty_site_and_bad_arguments(tmp_path):
    root = make_site(tmp_path / "src", {"c1": dict(shape=(16, 16, 8), spacing=(2, 2, 5))})
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="no mri case") as e:
        prepare_site(layout="totalseg", input_dir=root, output_dir=out, site="a", modality="mri", organs=["liver"],
                     progress=False)
    assert str(root) in str(e.value)
    assert_nothing_left(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match=str(empty)):
        prepare_site(layout="totalseg", input_dir=empty, output_dir=out, site="a", modality="ct", organs=["liver"],
                     progress=False)
    assert_nothing_left(out)
    with pytest.raises(PrepareError, match="unknown layout"):
        prepare_site(layout="nope", input_dir=root, output_dir=out, site="a", modality="ct", organs=["liver"])
    with pytest.raises(PrepareError, match="not found"):
        prepare_site(layout="totalseg", input_dir=tmp_path / "nope", output_dir=out, site="a", modality="ct",
                     organs=["liver"])
    with pytest.raises(PrepareError, match="twice"):
        prepare_site(layout="totalseg", input_dir=root, output_dir=out, site="a", modality="ct",
                     organs=["liver", "liver"])
    assert_nothing_left(out)


# ------------------------------------------------------------------------------------------------ the real case
def test_real_totalsegmentator_case(tmp_path):
    if not (REAL_CASE / "s0001" / "ct.nii.gz").is_file():
        pytest.skip(f"real example case not available at {REAL_CASE}")
    d = load_datalist(prepare_site(layout="totalseg", input_dir=REAL_CASE, output_dir=tmp_path / "real",
                                   site="site-ct", modality="ct", organs=["liver", "spleen"], spacing=1.5, size=256,
                                   progress=False))
    assert [c["case_id"] for c in d["training"]] == ["s0001"]  # meta.csv says train
    c = d["training"][0]
    img, lbl = cached_volume(d, c)
    assert img.shape == (c["num_slices"], 256, 256) and c["spacing_mm"][:2] == [1.5, 1.5]
    vol = np.moveaxis(lbl, 0, 2)
    seg = REAL_CASE / "s0001" / "segmentations"
    centres = {}
    for k, organ in ((1, "liver"), (2, "spleen")):
        src = nib.load(seg / f"{organ}.nii.gz")
        src_mask = np.asarray(src.dataobj) > 0
        src_mm3 = src_mask.sum() * np.prod(voxel_spacing(src.affine))
        cache_mm3 = (vol == k).sum() * np.prod(c["spacing_mm"])
        assert abs(cache_mm3 - src_mm3) <= 0.05 * src_mm3, (organ, cache_mm3, src_mm3)
        got, want = centroid_world(vol == k, c["affine"]), centroid_world(src_mask, src.affine)
        assert np.all(np.abs(got - want) <= np.array(c["spacing_mm"])), (organ, got, want)
        centres[organ] = (got, want)
    # the liver lies on the patient's right (world +x in RAS+) of the spleen, in the source and in the cache
    (liver_c, liver_s), (spleen_c, spleen_s) = centres["liver"], centres["spleen"]
    assert np.sign(liver_c[0] - spleen_c[0]) == np.sign(liver_s[0] - spleen_s[0]) != 0
    assert liver_s[0] > spleen_s[0]
