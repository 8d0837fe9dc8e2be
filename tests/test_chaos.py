"""The CHAOS adapter: DICOM series geometry (LPS -> RAS, order by position), PNG pairing, grey-range label map.

The fixture writes real DICOM files with pydicom. Organs are boxes in the DICOM patient frame (LPS mm); every pixel
of every slice gets its value from the world position of that pixel (computed here from IPP/IOP/PixelSpacing, not
with the adapter's code). File names follow the acquisition order, which is *not* the order along z (descending
for CT and T1DUAL, shuffled for T2SPIR), and the organs are asymmetric along z, so stacking masks in name order
against a volume sorted by position (the classic CHAOS flip) fails the exact voxel comparisons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from adapter_fixtures import assert_ras  # noqa: E402
from fedgin.data import LAYOUTS, LayoutError, PrepareError, load_datalist, prepare_site  # noqa: E402
from fedgin.data.chaos import natural_key, pair_masks  # noqa: E402
from fedgin.data.dicom import read_dicom_series  # noqa: E402

CHAOS = LAYOUTS["chaos"]
ROWS, COLS, N = 10, 12, 6
DR, DC, DZ = 2.0, 1.5, 3.0  # row spacing, column spacing, slice step (mm)

# organ boxes in LPS mm: (lo, hi)
CT_LIVER = ((-8, -9, 1.0), (-2, 0, 8.0))  # upper half only: asymmetric along z
MR_BOXES = {  # name: (PNG grey inside its range but not the nominal value, LPS box, stored intensity)
    "liver": (60, ((-8, -9, -2.0), (-2, -1, 8.0)), 400),
    "kidney_right": (130, ((-8, 3, -8.0), (-4, 9, -4.0)), 600),
    "kidney_left": (181, ((4, 3, -8.0), (8.5, 9, -1.0)), 700),
    "spleen": (245, ((3, -9, 1.0), (8.5, -3, 8.0)), 800),
}
MR_ORGANS = list(MR_BOXES)


def write_dicom(path: Path, pixels: np.ndarray, *, ipp, iop, modality: str, slope: float, intercept: float,
                instance: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    ds.PixelSpacing = [f"{DR}", f"{DC}"]
    ds.SliceThickness = f"{DZ}"
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_png(path: Path, grey: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey.astype(np.uint8)).save(path)


def slice_world(ipp, iop) -> np.ndarray:
    """LPS position (ROWS, COLS, 3) of every pixel of a slice."""
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    r, c = np.mgrid[:ROWS, :COLS]
    return np.asarray(ipp, float) + c[..., None] * DC * row_dir + r[..., None] * DR * col_dir


def inside(w: np.ndarray, lo, hi) -> np.ndarray:
    return np.all((w >= np.asarray(lo)) & (w <= np.asarray(hi)), axis=-1)


def write_series(dicom_dir: Path, ground_dir: Path | None, *, iop, first_ipp, position_of_instance, dcm_name,
                 png_name, modality, organs, background, slope, intercept):
    """One series: instance i (0-based, the acquisition order that names the files) lies at slice position
    ``position_of_instance[i]`` along the normal; ``organs`` = [(grey, (lo, hi), stored)]."""
    normal = np.cross(iop[:3], iop[3:])
    for i, p in enumerate(position_of_instance):
        ipp = np.asarray(first_ipp, float) + p * DZ * normal
        w = slice_world(ipp, iop)
        stored = np.full((ROWS, COLS), background, np.int16)
        grey = np.zeros((ROWS, COLS), np.uint8)
        for g, (lo, hi), value in organs:
            m = inside(w, lo, hi)
            stored[m], grey[m] = value, g
        write_dicom(dicom_dir / dcm_name(i), stored, ipp=ipp, iop=iop, modality=modality, slope=slope,
                    intercept=intercept, instance=i + 1)
        if ground_dir is not None:
            write_png(ground_dir / png_name(i), grey)


AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rows run to patient left, columns to posterior: normal +z (superior)
AXIAL_FLIPPED = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rows run to patient right: normal -z (inferior)
T2_ORDER = [3, 0, 5, 1, 4, 2]  # acquisition order -> position along the normal: neither ascending nor descending


def make_chaos(root: Path) -> Path:
    base = root / "Train_Sets"
    for pid in ("1", "2"):
        # CT: instance 0 at the top (names descend along z), ranks pair i0000,0000b.dcm <-> liver_GT_000.png
        write_series(base / "CT" / pid / "DICOM_anon", base / "CT" / pid / "Ground", iop=AXIAL,
                     first_ipp=(-8.0, -9.0, -7.5), position_of_instance=list(range(N - 1, -1, -1)),
                     dcm_name=lambda i: f"i{i:04d},0000b.dcm", png_name=lambda i: f"liver_GT_{i:03d}.png",
                     modality="CT", organs=[(255, CT_LIVER, 1084)], background=924, slope=1.0, intercept=-1024.0)
    organs = [(g, b, v) for g, b, v in MR_BOXES.values()]
    for pid in ("3", "5"):
        t2 = base / "MR" / pid / "T2SPIR"
        write_series(t2 / "DICOM_anon", t2 / "Ground", iop=AXIAL_FLIPPED, first_ipp=(8.5, -9.0, 7.5),
                     position_of_instance=T2_ORDER, dcm_name=lambda i: f"IMG-0004-{i + 1:05d}.dcm",
                     png_name=lambda i: f"IMG-0004-{i + 1:05d}.png", modality="MR", organs=organs, background=100,
                     slope=0.5, intercept=10.0)
        t1 = base / "MR" / pid / "T1DUAL"
        down = list(range(N - 1, -1, -1))
        for phase, number, scale in (("InPhase", lambda i: 2 * i + 2, 2), ("OutPhase", lambda i: 2 * i + 1, 1)):
            write_series(t1 / "DICOM_anon" / phase, None, iop=AXIAL, first_ipp=(-8.0, -9.0, -7.5),
                         position_of_instance=down, dcm_name=lambda i, n=number: f"IMG-0005-{n(i):05d}.dcm",
                         png_name=None, modality="MR", organs=[(g, b, v * scale) for g, b, v in organs],
                         background=50, slope=1.0, intercept=0.0)
        # T1DUAL/Ground: one mask per slice, named 1..N in acquisition order (stems unlike either phase's)
        write_series(root / "scratch", t1 / "Ground", iop=AXIAL, first_ipp=(-8.0, -9.0, -7.5),
                     position_of_instance=down, dcm_name=lambda i: f"{i}.dcm",
                     png_name=lambda i: f"IMG-0005-{i + 1:05d}.png", modality="MR", organs=organs, background=50,
                     slope=1.0, intercept=0.0)
    shutil.rmtree(root / "scratch")
    # a test-set patient without masks is skipped
    write_series(base / "CT" / "40" / "DICOM_anon", None, iop=AXIAL, first_ipp=(-8.0, -9.0, -7.5),
                 position_of_instance=list(range(N)), dcm_name=lambda i: f"i{i:04d},0000b.dcm", png_name=None,
                 modality="CT", organs=[], background=924, slope=1.0, intercept=-1024.0)
    return root


@pytest.fixture(scope="module")
def chaos_root(tmp_path_factory):
    return make_chaos(tmp_path_factory.mktemp("chaos") / "CHAOS_Train_Sets")


def lps_world(loaded) -> np.ndarray:
    """LPS position of every voxel of a loaded (RAS) case."""
    idx = np.indices(loaded.label.shape).reshape(3, -1).astype(float)
    ras = (loaded.affine[:3, :3] @ idx + loaded.affine[:3, 3:]).T.reshape(*loaded.label.shape, 3)
    return ras * np.array([-1.0, -1.0, 1.0])


def expected(loaded, class_boxes) -> np.ndarray:
    w = lps_world(loaded)
    out = np.zeros(loaded.label.shape, np.uint8)
    for k, boxes in enumerate(class_boxes, start=1):
        for lo, hi in boxes:
            out[inside(w, lo, hi)] = k
    return out


# the RAS grid every fixture series lands on: x from the patient's right, y from posterior, z from inferior
RAS_AFFINE = np.array([[DC, 0, 0, -8.5], [0, DR, 0, -9.0], [0, 0, DZ, -7.5], [0, 0, 0, 1]])


def test_lists_cases(chaos_root):
    ct = CHAOS.list_cases(chaos_root, "ct", {})
    # patient 40 has no Ground folder: skipped
    assert [(c.case_id, c.modality, c.split) for c in ct] == [("ct_1", "ct", None), ("ct_2", "ct", None)]
    mr = CHAOS.list_cases(chaos_root, "mri", {})
    assert [c.case_id for c in mr] == ["mr_3_t2spir", "mr_5_t2spir"]
    assert mr[0].image_path == chaos_root / "Train_Sets" / "MR" / "3" / "T2SPIR" / "DICOM_anon"
    t1 = CHAOS.list_cases(chaos_root / "Train_Sets", "mri", {"sequence": "t1dual-out"})  # Train_Sets itself works too
    assert [c.case_id for c in t1] == ["mr_3_t1dual-out", "mr_5_t1dual-out"]
    assert t1[0].image_path.name == "OutPhase" and t1[0].label_path.parent.name == "T1DUAL"


def test_dicom_series_sorted_by_position_not_name(chaos_root):
    folder = chaos_root / "Train_Sets" / "MR" / "3" / "T2SPIR" / "DICOM_anon"
    files = sorted(folder.iterdir())
    series = read_dicom_series(files)
    # sorted by position along the normal (-z here): acquisition order T2_ORDER inverted
    assert [f.name for f in series.files] == [f"IMG-0004-{T2_ORDER.index(p) + 1:05d}.dcm" for p in range(N)]
    assert series.data.shape == (COLS, ROWS, N)
    np.testing.assert_allclose(series.affine[:3, 2], [0, 0, -DZ])  # step along the normal
    np.testing.assert_allclose(series.affine[:3, 0], [DC, 0, 0])  # row direction -x in LPS = +x in RAS


def test_ct_liver_positions_intensities_and_affine(chaos_root):
    for case in CHAOS.list_cases(chaos_root, "ct", {}):
        CHAOS.check_case(case, ["liver"])
        loaded = CHAOS.load_case(case, ["liver"])
        assert_ras(loaded.affine)
        np.testing.assert_allclose(loaded.affine, RAS_AFFINE, atol=1e-6)
        want = expected(loaded, [[CT_LIVER]])
        assert 0 < np.count_nonzero(want) and not want[:, :, : N // 2].any()  # the liver is only in the upper half
        np.testing.assert_array_equal(loaded.label, want)
        # rescale applied (stored 1084 / 924 with intercept -1024), image and mask aligned voxel by voxel
        np.testing.assert_array_equal(loaded.image[want == 1], 60.0)
        np.testing.assert_array_equal(loaded.image[want == 0], -100.0)


@pytest.mark.parametrize("sequence, organ_scale", [(None, None), ("t1dual-in", 2), ("t1dual-out", 1)])
def test_mr_organs_by_grey_ranges(chaos_root, sequence, organ_scale):
    options = {} if sequence is None else {"sequence": sequence}
    organs = ["liver", "kidneys", "spleen"]
    for case in CHAOS.list_cases(chaos_root, "mri", options):
        CHAOS.check_case(case, organs)
        loaded = CHAOS.load_case(case, organs)
        np.testing.assert_allclose(loaded.affine, RAS_AFFINE, atol=1e-6)
        boxes = {k: v[1] for k, v in MR_BOXES.items()}
        want = expected(loaded, [[boxes["liver"]], [boxes["kidney_right"], boxes["kidney_left"]], [boxes["spleen"]]])
        assert set(np.unique(want)) == {0, 1, 2, 3}
        np.testing.assert_array_equal(loaded.label, want)
        liver = MR_BOXES["liver"][2]
        if sequence is None:  # T2SPIR: stored * 0.5 + 10
            np.testing.assert_array_equal(loaded.image[want == 1], liver * 0.5 + 10)
            np.testing.assert_array_equal(loaded.image[want == 0], 100 * 0.5 + 10)
        else:  # the chosen T1 phase, not the other one
            np.testing.assert_array_equal(loaded.image[want == 1], liver * organ_scale)
    case = CHAOS.list_cases(chaos_root, "mri", options)[0]
    loaded = CHAOS.load_case(case, ["kidney_left", "kidney_right"])
    boxes = {k: v[1] for k, v in MR_BOXES.items()}
    np.testing.assert_array_equal(loaded.label, expected(loaded, [[boxes["kidney_left"]], [boxes["kidney_right"]]]))


def test_pairing_rule():
    d = [Path(f"i{i:04d},0000b.dcm") for i in (10, 2, 1, 0)]
    m = [Path(f"liver_GT_{i:03d}.png") for i in (0, 1, 2, 10)]
    assert {a.name: b.name for a, b in pair_masks(d, m).items()} == {
        "i0000,0000b.dcm": "liver_GT_000.png", "i0001,0000b.dcm": "liver_GT_001.png",
        "i0002,0000b.dcm": "liver_GT_002.png", "i0010,0000b.dcm": "liver_GT_010.png"}
    assert sorted(["IMG-10", "IMG-9", "IMG-100"], key=natural_key) == ["IMG-9", "IMG-10", "IMG-100"]
    d = [Path("IMG-1.dcm"), Path("IMG-2.dcm")]
    m = [Path("IMG-2.png"), Path("IMG-1.png")]
    assert {a.name: b.name for a, b in pair_masks(d, m).items()} == {"IMG-1.dcm": "IMG-1.png", "IMG-2.dcm": "IMG-2.png"}
    with pytest.raises(LayoutError, match="1 PNG masks for 2 DICOM slices"):
        pair_masks(d, m[:1])


def _copy(chaos_root, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(chaos_root, dst)
    return dst


def test_unannotated_organs_and_options_are_refused(chaos_root):
    ct = CHAOS.list_cases(chaos_root, "ct", {})[0]
    with pytest.raises(LayoutError, match="CHAOS CT: class 'spleen' is not annotated .*annotated: liver"):
        CHAOS.check_case(ct, ["liver", "spleen"])
    with pytest.raises(LayoutError, match="not annotated"):
        CHAOS.load_case(ct, ["spleen"])
    mr = CHAOS.list_cases(chaos_root, "mri", {})[0]
    with pytest.raises(LayoutError, match=r"CHAOS MR \(t2spir\): class 'gallbladder' is not annotated"):
        CHAOS.check_case(mr, ["gallbladder"])
    with pytest.raises(LayoutError, match="applies to MR only"):
        CHAOS.list_cases(chaos_root, "ct", {"sequence": "t2spir"})
    with pytest.raises(LayoutError, match="unknown MR sequence 't1'"):
        CHAOS.list_cases(chaos_root, "mri", {"sequence": "t1"})


def test_bad_grey_values_are_refused(chaos_root, tmp_path):
    root = _copy(chaos_root, tmp_path)
    png = root / "Train_Sets" / "MR" / "3" / "T2SPIR" / "Ground" / "IMG-0004-00002.png"
    grey = np.asarray(Image.open(png)).copy()
    grey[0, 0], grey[1, 1] = 90, 20
    write_png(png, grey)
    case = CHAOS.list_cases(root, "mri", {})[0]
    with pytest.raises(LayoutError, match=r"grey values \[20, 90\] match no organ") as e:
        CHAOS.load_case(case, ["liver"])
    assert str(png) in str(e.value)
    png = root / "Train_Sets" / "CT" / "1" / "Ground" / "liver_GT_000.png"
    write_png(png, np.full((ROWS, COLS), 128))
    with pytest.raises(LayoutError, match=r"grey values \[128\] match no organ \(CT masks hold 0 and 255"):
        CHAOS.load_case(CHAOS.list_cases(root, "ct", {})[0], ["liver"])


def test_broken_series_are_refused(chaos_root, tmp_path):
    root = _copy(chaos_root, tmp_path)
    ground = root / "Train_Sets" / "CT" / "1" / "Ground"
    (ground / "liver_GT_003.png").unlink()
    case = CHAOS.list_cases(root, "ct", {})[0]
    with pytest.raises(LayoutError, match="5 PNG masks for 6 DICOM slices"):
        CHAOS.check_case(case, ["liver"])
    write_png(ground / "liver_GT_003.png", np.zeros((ROWS + 1, COLS)))
    with pytest.raises(LayoutError, match=r"mask size \(11, 12\) differs from its slice i0003,0000b.dcm"):
        CHAOS.load_case(case, ["liver"])
    # a second copy of one slice (two series in one folder): same position
    dicom = root / "Train_Sets" / "CT" / "2" / "DICOM_anon"
    shutil.copy(dicom / "i0002,0000b.dcm", dicom / "i0006,0000b.dcm")
    write_png(root / "Train_Sets" / "CT" / "2" / "Ground" / "liver_GT_006.png", np.zeros((ROWS, COLS)))
    with pytest.raises(LayoutError, match="lie at the same position"):
        CHAOS.load_case(CHAOS.list_cases(root, "ct", {})[1], ["liver"])
    # a missing slice in the middle: the step is no longer uniform
    root = _copy(chaos_root, tmp_path / "b")
    (root / "Train_Sets" / "CT" / "2" / "DICOM_anon" / "i0003,0000b.dcm").unlink()
    (root / "Train_Sets" / "CT" / "2" / "Ground" / "liver_GT_003.png").unlink()
    with pytest.raises(LayoutError, match="slice spacing is not uniform"):
        CHAOS.load_case(CHAOS.list_cases(root, "ct", {})[1], ["liver"])


def test_prepare_site_end_to_end(chaos_root, tmp_path):
    d = load_datalist(prepare_site(layout="chaos", input_dir=chaos_root, output_dir=tmp_path / "ct", site="chaos-ct",
                                   modality="ct", organs=["liver"], spacing=2.0, size=16, progress=False))
    assert d["layout"] == "chaos" and d["labels"] == {"0": "background", "1": "liver"}
    assert [c["case_id"] for c in d["training"]] == ["ct_1", "ct_2"]  # 2 cases: all training
    for c in d["training"]:
        assert c["foreground_voxels"]["liver"] > 0
        assert c["source_image"].endswith("DICOM_anon") and c["source_shape"] == [COLS, ROWS, N]
        lbl = np.load(Path(d["root"]) / c["label"])
        assert lbl.shape[0] == N and set(np.unique(lbl)) == {0, 1}
        assert not lbl[: N // 2].any() and lbl[N // 2 :].any()  # cached slices run inferior -> superior
    d = load_datalist(prepare_site(layout="chaos", input_dir=chaos_root, output_dir=tmp_path / "mr", site="chaos-mr",
                                   modality="mri", organs=["liver", "spleen"], spacing=2.0, size=16, progress=False,
                                   layout_options={"sequence": "t1dual-in"}))
    assert [c["case_id"] for c in d["training"]] == ["mr_3_t1dual-in", "mr_5_t1dual-in"]
    assert d["layout_options"] == {"sequence": "t1dual-in"}
    assert all(c["foreground_voxels"]["spleen"] > 0 for c in d["training"])
    with pytest.raises(PrepareError, match="has no option label_map"):
        prepare_site(layout="chaos", input_dir=chaos_root, output_dir=tmp_path / "x", site="a", modality="ct",
                     organs=["liver"], layout_options={"label_map": {"liver": [1]}})
