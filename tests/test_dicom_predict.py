"""``fedgin predict`` on DICOM series: series found and refused, the volume's geometry, and DICOM SEG outputs that
reference their source and hold the same labels as the NIfTI label map of the same run.

Reads the real CT at ``../shared/data/totalseg-ct-dicom-example`` (20 axial 512 x 512 slices, JPEG 2000, UIDs
blanked by anonymisation, and TotalSegmentator's label map on the same grid); skipped when it is absent. The model
is a small one trained on phantoms: the tests compare outputs of one run with each other, not with the truth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

import fedgin  # noqa: E402
from fedgin.cli import main  # noqa: E402
from fedgin.data.dicom import find_dicom_series  # noqa: E402
from fedgin.data.nifti import ras_geometry, read_nifti_ras  # noqa: E402
from fedgin.inference.dicom_seg import build_seg  # noqa: E402
from fedgin.inference.predict import PredictionError, plan_outputs, read_dicom_volume  # noqa: E402

CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-ct-dicom-example"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: TotalSegmentator ``total`` values in the example -> class names
TRUTH = {"spleen": 1, "liver": 5, "stomach": 6, "pancreas": 7}


@pytest.fixture(scope="module")
def case():
    if not (CASE / "dicom").is_dir() or not (CASE / "segmentation.nii.gz").is_file():
        pytest.skip(f"{CASE}: the real DICOM example is not on this machine")
    return CASE


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on 2 phantom CT cases (8 mm, 48 px; liver, spleen), as in test_predict_errors."""
    from fedgin.data import prepare_site
    from fedgin.engine import TrainConfig
    from fedgin.engine.training import train
    from fedgin.phantom import generate_dataset

    root = tmp_path_factory.mktemp("dicom_predict")
    generate_dataset(root / "raw", "ct", 2, seed=3, progress=False)
    prepare_site(layout="totalseg", input_dir=root / "raw", output_dir=root / "site", site="site-ct", modality="ct",
                 organs=["liver", "spleen"], spacing=8.0, size=48, val_fraction=0.0, test_fraction=0.0,
                 progress=False)
    config = TrainConfig.from_dict({"method": "none", "batch_size": 8, "lr": 3e-3, "seed": 0,
                                    "model": {"channels": [8, 16, 32], "strides": [2, 2]}})
    train([root / "site" / "datalist.json"], root / "model", config, steps=60, progress=False)
    return root / "model" / "model.pt"


def _predict(capsys, model, inp, out, *extra):
    rc = main(["predict", "--model", str(model), "--input", str(inp), "--output", str(out), "--device", "cpu",
               *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _sop_uid(ds) -> str:
    return str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)


def _sources(folder: Path) -> dict[str, pydicom.Dataset]:
    """{SOP Instance UID: header} of the slices in ``folder`` (the file meta's UID where the dataset's is blank)."""
    return {_sop_uid(ds): ds for ds in (pydicom.dcmread(str(f), stop_before_pixels=True)
                                        for f in sorted(folder.iterdir()))}


def _slice_index(sources: dict[str, pydicom.Dataset]) -> dict[str, int]:
    """{SOP Instance UID: k}, k by ascending position along the slice normal (the label map's third axis)."""
    some = next(iter(sources.values()))
    iop = np.asarray(some.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    order = sorted(sources, key=lambda u: float(np.asarray(sources[u].ImagePositionPatient, float) @ normal))
    return {u: k for k, u in enumerate(order)}


def _seg_volume(path: Path, sources: dict[str, pydicom.Dataset]) -> np.ndarray:
    """The SEG's frames put back on the source grid with pydicom alone: ``(columns, rows, slices)``, segment numbers.

    Each frame's source slice (DerivationImageSequence) gives its place; its PlanePositionSequence must be that
    slice's ImagePositionPatient.
    """
    seg = pydicom.dcmread(str(path))
    index = _slice_index(sources)
    some = next(iter(sources.values()))
    vol = np.zeros((int(some.Columns), int(some.Rows), len(sources)), np.uint8)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_allclose(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float),
                                   np.asarray(sources[uid].ImagePositionPatient, float), atol=1e-4)
        k = index[uid]
        assert not np.any(vol[:, :, k][frame.T > 0]), "two segments on one voxel"
        vol[:, :, k][frame.T > 0] = number
    return vol


def _copy_series(src: Path, dst: Path, *, series_uid: str | None, files=None, edit=None) -> dict[str, str]:
    """Copy slices of ``src`` into ``dst`` as another series: new Study/Series/SOP Instance UIDs (``series_uid``
    ``None``: a plain file copy, UIDs left blank). Returns {new SOP Instance UID: file name}."""
    dst.mkdir(parents=True, exist_ok=True)
    study = pydicom.uid.generate_uid()
    out = {}
    for f in files or sorted(src.iterdir()):
        if series_uid is None:
            shutil.copy(f, dst / f.name)
            continue
        ds = pydicom.dcmread(str(f))
        sop = pydicom.uid.generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        if edit:
            edit(ds)
        ds.save_as(str(dst / f.name))
        out[sop] = f.name
    return out


def _check_seg(path: Path, sources: dict[str, pydicom.Dataset], classes: list[str], codes: dict[str, str]):
    """A valid SEG of ``classes`` that references exactly the slices ``sources``; returns the pydicom dataset."""
    seg = pydicom.dcmread(str(path))
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.Manufacturer == "fedgin"
    some = next(iter(sources.values()))
    assert seg.FrameOfReferenceUID == some.FrameOfReferenceUID
    (ref,) = seg.ReferencedSeriesSequence
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(sources)
    assert {r.ReferencedSOPClassUID for r in ref.ReferencedInstanceSequence} == {CT_STORAGE}
    referenced = {item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for item in seg.PerFrameFunctionalGroupsSequence}
    assert referenced <= set(sources)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == classes
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == list(range(1, len(classes) + 1))
    for s in seg.SegmentSequence:
        kind = s.SegmentedPropertyTypeCodeSequence[0]
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", codes[s.SegmentLabel]), s.SegmentLabel
        category = s.SegmentedPropertyCategoryCodeSequence[0]
        assert category.CodeValue == ("91723000" if codes[s.SegmentLabel] != "85756007" else "85756007")
        assert s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "fedgin"
        algorithm = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "fedgin" and algorithm.AlgorithmVersion == fedgin.__version__
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    return seg


def test_series_geometry_matches_the_nifti_truth(case):
    """The series read as predict reads it lies exactly on TotalSegmentator's grid (same RAS shape and affine), and
    the organs of that label map fall on soft-tissue Hounsfield units: LPS -> RAS, rows, columns and slice order
    are right (a flip of any axis, or rows and columns swapped, puts >= 4 % of the organ voxels elsewhere)."""
    series, refused = find_dicom_series(case / "dicom")
    assert refused == [] and len(series) == 1
    (s,) = series
    assert s.description == "CT Body 3.0" and s.uid == "" and len(s.files) == 20 and s.shape == (512, 512, 20)
    truth = nib.load(str(case / "segmentation.nii.gz"))
    vol = read_dicom_volume(s)
    ras_shape, ras_affine = ras_geometry(truth.shape, truth.affine)
    assert vol.data.shape == ras_shape
    np.testing.assert_allclose(vol.affine, ras_affine, atol=1e-4)
    np.testing.assert_allclose(vol.source_affine, s.affine)
    assert nib.aff2axcodes(vol.source_affine) == ("L", "P", "S")  # DICOM's column, row, slice order
    labels = read_nifti_ras(case / "segmentation.nii.gz").data
    organs = np.isin(labels, [TRUTH["spleen"], TRUTH["liver"], TRUTH["pancreas"]])
    soft = (vol.data > 0) & (vol.data < 250)
    assert soft[organs].mean() > 0.99
    for wrong in (organs[::-1], organs[:, ::-1], organs[:, :, ::-1], organs.transpose(1, 0, 2)):
        assert soft[wrong].mean() < 0.97


def test_seg_of_the_reference_labels(case, tmp_path):
    """The truth as a SEG (no model): codes, the generic fallback, a kidney's side, and frames whose source slices'
    own pixels (read with pydicom alone) are soft tissue where the SEG says liver, spleen or pancreas."""
    (s,) = find_dicom_series(case / "dicom")[0]
    truth = nib.load(str(case / "segmentation.nii.gz"))
    classes = ["spleen", "liver", "stomach", "pancreas", "kidney_left", "disc"]
    raw = np.asanyarray(truth.dataobj)
    labels = np.zeros(raw.shape, np.uint8)
    for k, name in enumerate(classes, start=1):
        if name in TRUTH:
            labels[raw == TRUTH[name]] = k
    # onto the series' own voxel order (truth: L-A-S, the series: L-P-S)
    to_series = nib.orientations.ornt_transform(nib.io_orientation(truth.affine), nib.io_orientation(s.affine))
    labels = np.ascontiguousarray(nib.orientations.apply_orientation(labels, to_series))
    seg, notes = build_seg(s.files, labels, classes, model_file=Path(__file__), series_description=s.description)
    assert any("disc" in n and "85756007" in n for n in notes)
    assert any("no SeriesInstanceUID" in n for n in notes) and any("no StudyInstanceUID" in n for n in notes)
    seg.save_as(str(tmp_path / "truth_seg.dcm"))

    sources = _sources(case / "dicom")
    codes = {"spleen": "78961009", "liver": "10200004", "stomach": "69695003", "pancreas": "15776009",
             "kidney_left": "64033007", "disc": "85756007"}
    ds = _check_seg(tmp_path / "truth_seg.dcm", sources, classes, codes)
    kidney = ds.SegmentSequence[4].SegmentedPropertyTypeCodeSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # Left
    derived = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert derived.startswith("2.25.") and any(derived in n for n in notes)
    back = _seg_volume(tmp_path / "truth_seg.dcm", sources)
    assert np.array_equal(back, labels)

    read = hd.seg.segread(str(tmp_path / "truth_seg.dcm"))  # highdicom's own reading agrees
    index = _slice_index(sources)
    uids = sorted(index, key=index.get)
    pixels = read.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert np.array_equal(np.transpose(pixels, (2, 1, 0)), labels)

    by_uid = {_sop_uid(pydicom.dcmread(str(f), stop_before_pixels=True)): f for f in s.files}
    soft = []
    for k, uid in enumerate(uids):  # the source slice's own pixels under the SEG's organ pixels
        src = pydicom.dcmread(str(by_uid[uid]))
        hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        organ = np.isin(pixels[k], [1, 2, 4])
        soft.append(((hu > 0) & (hu < 250))[organ])
    assert np.concatenate(soft).mean() > 0.99


@pytest.mark.slow
def test_predict_dicom_both_formats(case, trained, tmp_path, capsys):
    """--format both on the DICOM folder: the NIfTI label map on the series' grid (the truth's RAS geometry) and a
    SEG referencing every source slice whose frames are that label map voxel for voxel."""
    out = tmp_path / "out"
    rc, stdout, err = _predict(capsys, trained, case / "dicom", out, "--format", "both")
    assert rc == 0, err
    assert "CT_Body_3.0_seg.nii.gz + " in stdout and "no SeriesInstanceUID" in err
    assert {p.name for p in out.iterdir()} == {"CT_Body_3.0_seg.nii.gz", "CT_Body_3.0_seg.dcm", "predictions.json"}
    report = json.loads((out / "predictions.json").read_text())
    (pred,) = report["predictions"]
    assert report["format"] == "both" and report["skipped"] == [] and report["failed"] == []
    assert pred["series_description"] == "CT Body 3.0" and pred["series_instance_uid"] == "" and pred["files"] == 20
    assert pred["output"] == str(out / "CT_Body_3.0_seg.nii.gz") and pred["seg"] == str(out / "CT_Body_3.0_seg.dcm")

    label_map = nib.load(pred["output"])
    truth = nib.load(str(case / "segmentation.nii.gz"))
    assert label_map.shape == truth.shape and label_map.get_data_dtype() == np.uint8
    shape, affine = ras_geometry(label_map.shape, label_map.affine)
    truth_shape, truth_affine = ras_geometry(truth.shape, truth.affine)
    assert shape == truth_shape
    np.testing.assert_allclose(affine, truth_affine, atol=1e-4)
    assert label_map.header["sform_code"] == 1 and label_map.header["qform_code"] == 1
    labels = np.asanyarray(label_map.dataobj)
    assert labels.max() > 0 and pred["voxels"]["liver"] == int((labels == 1).sum())

    sources = _sources(case / "dicom")
    _check_seg(out / "CT_Body_3.0_seg.dcm", sources, ["liver", "spleen"],
               {"liver": "10200004", "spleen": "78961009"})
    assert np.array_equal(_seg_volume(out / "CT_Body_3.0_seg.dcm", sources), labels)


@pytest.mark.slow
def test_folder_of_series_chooses_and_refuses(case, trained, tmp_path, capsys):
    """A folder holding the case twice (the blank-UID original and a copy with its own UIDs, in sub-folders), a
    localizer, a series with a missing slice, a non-image object and a NIfTI scan: --format seg segments both copies
    (names made distinct by UID or folder), each SEG referencing its own slices, and skips the rest with reasons."""
    src = case / "dicom"
    scans = tmp_path / "scans"
    _copy_series(src, scans / "original", series_uid=None)
    copy_uid = pydicom.uid.generate_uid()
    copied = _copy_series(src, scans / "copy" / "ct", series_uid=copy_uid)
    scout_uid, gap_uid, sr_uid = (pydicom.uid.generate_uid() for _ in range(3))
    files = sorted(src.iterdir())

    def localizer(ds):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    _copy_series(src, scans / "scout", series_uid=scout_uid, files=files[:1], edit=localizer)
    _copy_series(src, scans / "gap", series_uid=gap_uid, files=files[:3] + files[4:6])  # one slice missing
    report_ds = pydicom.Dataset()  # a text report: a DICOM object that is not an image
    report_ds.file_meta = pydicom.dataset.FileMetaDataset()
    report_ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report_ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    report_ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report_ds.SOPClassUID = report_ds.file_meta.MediaStorageSOPClassUID
    report_ds.SOPInstanceUID = report_ds.file_meta.MediaStorageSOPInstanceUID
    report_ds.SeriesInstanceUID, report_ds.Modality, report_ds.SeriesDescription = sr_uid, "SR", "report"
    report_ds.save_as(str(scans / "report.dcm"), enforce_file_format=True)
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4), np.float32), np.eye(4)), str(scans / "mr.nii.gz"))
    (scans / "notes.txt").write_text("not DICOM: ignored")

    out = tmp_path / "out"
    rc, stdout, err = _predict(capsys, trained, scans, out, "--format", "seg")
    assert rc == 0, err
    assert "2 DICOM SEG(s)" in stdout and "4 skipped" in stdout
    names = {p.name for p in out.iterdir()}
    assert names == {f"CT_Body_3.0_{copy_uid}_seg.dcm", "CT_Body_3.0_original_seg.dcm", "predictions.json"}
    report = json.loads((out / "predictions.json").read_text())
    assert [p["series_instance_uid"] for p in report["predictions"]] == [copy_uid, ""]
    assert all("output" not in p for p in report["predictions"])  # --format seg: no NIfTI label map
    skipped = {s.get("series_instance_uid", s["input"]): s for s in report["skipped"]}
    assert set(skipped) == {scout_uid, gap_uid, sr_uid, str(scans / "mr.nii.gz")}
    assert "localizer" in skipped[scout_uid]["reason"] and skipped[scout_uid]["files"] == 1
    assert "slice spacing is not uniform" in skipped[gap_uid]["reason"]
    assert "not an image" in skipped[sr_uid]["reason"] and skipped[sr_uid]["series_description"] == "report"
    assert "a DICOM SEG must reference" in skipped[str(scans / "mr.nii.gz")]["reason"]
    for uid in (scout_uid, gap_uid, sr_uid):
        assert f"note: skipped {skipped[uid]['input']}: {skipped[uid]['reason']}" in err and uid in skipped[uid]["input"]

    seg = _check_seg(out / f"CT_Body_3.0_{copy_uid}_seg.dcm", _sources(scans / "copy" / "ct"), ["liver", "spleen"],
                     {"liver": "10200004", "spleen": "78961009"})
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == copy_uid and set(copied) == {
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    original = _seg_volume(out / "CT_Body_3.0_original_seg.dcm", _sources(scans / "original"))
    assert np.array_equal(_seg_volume(out / f"CT_Body_3.0_{copy_uid}_seg.dcm", _sources(scans / "copy" / "ct")),
                          original)  # the same pixels give the same labels

    with pytest.raises(PredictionError, match=r"nothing to segment .*an earlier fedgin predict output \(DICOM SEG\)"):
        plan_outputs(out, tmp_path / "again", output_format="both")  # its own SEGs are never segmented again


def _nifti_scan(tmp_path):
    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    data = np.random.default_rng(0).normal(0, 1, (32, 32, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4, 4, 1])), str(scan))
    return scan


def test_seg_format_on_nifti_is_refused(tmp_path, capsys):
    """A NIfTI input has no DICOM to reference: --format seg on a NIfTI file, or a folder of only NIfTI files, refuses
    the run before the model is even read (exit 2, nothing written)."""
    scan = _nifti_scan(tmp_path)
    for inp in (scan, scan.parent):
        rc, _, err = _predict(capsys, tmp_path / "model.pt", inp, tmp_path / "out", "--format", "seg")
        assert rc == 2 and "a DICOM SEG must reference the DICOM series it segments" in err and str(scan) in err
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_both_formats_on_nifti_write_the_label_map(trained, tmp_path, capsys):
    """--format both on a NIfTI input: its label map, and a note that it gets no SEG."""
    scan = _nifti_scan(tmp_path)
    rc, _, err = _predict(capsys, trained, scan, tmp_path / "out", "--format", "both")
    assert rc == 0 and f"note: {scan}: NIfTI input: label map only" in err
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"scan_seg.nii.gz", "predictions.json"}
    (pred,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]
    assert "seg" not in pred and pred["notes"][0].startswith("NIfTI input: label map only")


def test_single_dicom_file_is_refused(case, tmp_path, capsys):
    first = sorted((case / "dicom").iterdir())[0]
    rc, _, err = _predict(capsys, tmp_path / "model.pt", first, tmp_path / "out")  # refused before the model
    assert rc == 2 and f"{first}: a single DICOM file; give the folder of its series" in err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_undecodable_slice_fails_that_series_only(case, trained, tmp_path, capsys):
    """A slice whose pixel data is cut short: its series fails with the file named (exit 1), no partial file is
    left, and the other series of the folder is still segmented."""
    files = sorted((case / "dicom").iterdir())[:4]
    _copy_series(case / "dicom", tmp_path / "in" / "good", series_uid=pydicom.uid.generate_uid(), files=files)
    bad_uid = pydicom.uid.generate_uid()
    _copy_series(case / "dicom", tmp_path / "in" / "bad", series_uid=bad_uid, files=files,
                 edit=lambda ds: setattr(ds, "SeriesDescription", "broken"))
    broken = tmp_path / "in" / "bad" / files[2].name
    broken.write_bytes(broken.read_bytes()[:-60_000])
    out = tmp_path / "out"
    rc, _, err = _predict(capsys, trained, tmp_path / "in", out, "--format", "both")
    assert rc == 1 and f"fedgin predict: error: {tmp_path / 'in' / 'bad'} [series {bad_uid} 'broken']: " in err
    assert f"{broken}: cannot read DICOM (no data elements: the file is truncated or corrupt)" in err
    assert {p.name for p in out.iterdir()} == {"CT_Body_3.0_seg.nii.gz", "CT_Body_3.0_seg.dcm", "predictions.json"}
    report = json.loads((out / "predictions.json").read_text())
    assert [f["series_instance_uid"] for f in report["failed"]] == [bad_uid]
