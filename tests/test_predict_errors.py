"""``fedgin predict`` / ``fedgin preview`` on bad inputs and bad output paths: a clear message naming the file, a
non-zero exit, and no lost, doubled or partial output."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import write_toy_site
from fedgin.cli import main
from fedgin.data.finite import NonFiniteError
from fedgin.phantom import generate_dataset
from fedgin.inference.predict import run_predictions
from fedgin.reporting.preview import slices_from_datalist


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on 2 phantom CT cases (8 mm, 48 px), and one phantom CT scan (float32)."""
    from fedgin.data import prepare_site
    from fedgin.engine import TrainConfig
    from fedgin.engine.training import train

    root = tmp_path_factory.mktemp("predict_errors")
    generate_dataset(root / "raw", "ct", 2, seed=3, progress=False)
    prepare_site(layout="totalseg", input_dir=root / "raw", output_dir=root / "site", site="site-ct", modality="ct",
                 organs=["liver", "spleen"], spacing=8.0, size=48, val_fraction=0.0, test_fraction=0.0,
                 progress=False)
    config = TrainConfig.from_dict({"method": "none", "batch_size": 8, "lr": 3e-3, "seed": 0,
                                    "model": {"channels": [8, 16, 32], "strides": [2, 2]}})
    train([root / "site" / "datalist.json"], root / "model", config, steps=60, progress=False)
    return root / "model" / "model.pt", root / "raw" / "ct0000" / "ct.nii.gz"


def _save(path, data=None, affine=None):
    """A small float32 NIfTI (32 x 32 x 8 noise unless ``data``)."""
    if data is None:
        data = np.random.default_rng(len(str(path))).normal(0, 1, (32, 32, 8)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _files(folder):
    """{name: bytes} of every file in ``folder`` (hidden ones included)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def _predict(capsys, model, inp, out, *extra):
    rc = main(["predict", "--model", str(model), "--input", str(inp), "--output", str(out), "--device", "cpu",
               *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_nan_scan_refused_then_repaired(trained, tmp_path, capsys):
    model, phantom = trained
    src = nib.load(str(phantom))
    data = np.asanyarray(src.dataobj).astype(np.float32)
    data[10, 11, 12] = np.nan
    data[20, 20, 30] = np.inf
    scan = _save(tmp_path / "in" / "scan.nii.gz", data, src.affine)
    before = _files(scan.parent)
    out = tmp_path / "out"

    rc, _, err = _predict(capsys, model, scan.parent, out)
    assert rc == 1
    assert f"fedgin predict: error: {scan}: the image holds non-finite values: 1 NaN, 1 +Inf" in err
    assert "first at voxel (10, 11, 12)" in err and "--nonfinite repair" in err  # the file's own voxel order
    assert set(_files(out)) == {"predictions.json"}  # no all-background label map
    report = json.loads((out / "predictions.json").read_text())
    assert report["predictions"] == [] and [f["input"] for f in report["failed"]] == [str(scan)]

    rc, stdout, _ = _predict(capsys, model, scan.parent, out, "--nonfinite", "repair")
    assert rc == 0 and "1 repaired" in stdout
    seg = np.asanyarray(nib.load(str(out / "scan_seg.nii.gz")).dataobj)
    assert seg.shape == data.shape and seg.dtype == np.uint8 and (seg == 1).sum() > 1000  # liver found
    _predict(capsys, model, phantom, tmp_path / "clean")  # the scan without the two bad voxels: the same labels
    clean = np.asanyarray(nib.load(str(tmp_path / "clean" / "ct_seg.nii.gz")).dataobj)
    assert (seg != clean).mean() < 1e-3
    report = json.loads((out / "predictions.json").read_text())
    assert report["nonfinite"] == "repair" and report["failed"] == []
    assert report["predictions"][0]["repaired"].startswith("1 NaN, 1 +Inf voxel(s)")
    assert _files(scan.parent) == before


def test_two_inputs_one_output_name_refused(trained, tmp_path, capsys):
    model, _ = trained
    a, b = _save(tmp_path / "in" / "x.nii"), _save(tmp_path / "in" / "x.nii.gz")
    rc, _, err = _predict(capsys, model, tmp_path / "in", tmp_path / "out")
    assert rc == 2 and str(a) in err and str(b) in err and "x_seg.nii.gz" in err
    assert not (tmp_path / "out").exists()


def test_output_in_input_folder(trained, tmp_path, capsys):
    model, _ = trained
    folder = tmp_path / "scans"
    _save(folder / "a.nii.gz"), _save(folder / "b.nii")
    inputs = _files(folder)
    (tmp_path / "link").symlink_to(folder)
    for inp in (folder, folder / "a.nii.gz", tmp_path / "link"):  # the folder, a file of it, a symlink to it
        rc, _, err = _predict(capsys, model, inp, folder)
        assert rc == 2 and f"--output {folder} is the input folder" in err and "--allow-output-in-input" in err
        assert _files(folder) == inputs

    rc, _, _ = _predict(capsys, model, folder, folder, "--allow-output-in-input")
    assert rc == 0 and set(_files(folder)) == {"a.nii.gz", "b.nii", "a_seg.nii.gz", "b_seg.nii.gz", "predictions.json"}
    rc, stdout, err = _predict(capsys, model, folder, folder, "--allow-output-in-input")  # its own outputs stay out
    assert rc == 0 and "2 label map(s)" in stdout and "2 skipped" in stdout
    assert f"note: skipped {folder / 'a_seg.nii.gz'}: an earlier fedgin predict output" in err
    assert set(_files(folder)) == {"a.nii.gz", "b.nii", "a_seg.nii.gz", "b_seg.nii.gz", "predictions.json"}
    assert {k: v for k, v in _files(folder).items() if k in inputs} == inputs
    report = json.loads((folder / "predictions.json").read_text())
    assert [p["input"] for p in report["predictions"]] == [str(folder / "a.nii.gz"), str(folder / "b.nii")]
    assert [s["input"] for s in report["skipped"]] == [str(folder / "a_seg.nii.gz"), str(folder / "b_seg.nii.gz")]

    user = _save(folder / "c_seg.nii.gz")  # someone's own mask next to c.nii.gz: never overwritten
    _save(folder / "c.nii.gz")
    before = _files(folder)
    rc, _, err = _predict(capsys, model, folder, folder, "--allow-output-in-input")
    assert rc == 2 and f"would overwrite the input {user}" in err and _files(folder) == before


def test_folder_with_bad_files_keeps_going(trained, tmp_path, capsys):
    model, _ = trained
    folder = tmp_path / "in"
    good = [_save(folder / "a.nii.gz"), _save(folder / "e.nii.gz")]
    raw = good[0].read_bytes()
    (folder / "b.nii.gz").write_bytes(raw[: len(raw) // 2])  # truncated
    (folder / "c.nii.gz").write_bytes(b"not a NIfTI")
    _save(folder / "d.nii.gz", np.zeros((32, 32, 1), np.float32))  # 2-D
    inputs, out = _files(folder), tmp_path / "out"
    rc, stdout, err = _predict(capsys, model, folder, out)
    assert rc == 1 and "2 label map(s)" in stdout and "3 failed" in stdout
    assert f"fedgin predict: error: {folder / 'b.nii.gz'}: cannot read the voxel data, file truncated" in err
    assert f"fedgin predict: error: {folder / 'c.nii.gz'}: cannot read NIfTI" in err
    assert f"fedgin predict: error: {folder / 'd.nii.gz'}: a 2D image" in err
    assert set(_files(out)) == {"a_seg.nii.gz", "e_seg.nii.gz", "predictions.json"}  # no partial files
    report = json.loads((out / "predictions.json").read_text())
    assert [p["input"] for p in report["predictions"]] == [str(g) for g in good]
    assert [f["input"] for f in report["failed"]] == [str(folder / n) for n in ("b.nii.gz", "c.nii.gz", "d.nii.gz")]
    assert all(f["error"].startswith(f["input"]) for f in report["failed"])
    assert _files(folder) == inputs


def test_output_paths_refused(trained, tmp_path, capsys):
    model, _ = trained
    scan = _save(tmp_path / "in" / "x.nii.gz")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    rc, _, err = _predict(capsys, model, scan, tmp_path / "link")
    assert rc == 2 and f"--output {tmp_path / 'link'}: is a symbolic link to {real}" in err
    assert not list(real.iterdir())

    rc, _, err = _predict(capsys, model, scan, scan)
    assert rc == 2 and f"--output {scan}: exists and is a file, not a folder" in err
    rc, _, err = _predict(capsys, model, scan, scan / "sub")
    assert rc == 2 and f"--output {scan / 'sub'}: cannot be created, {scan} is a file" in err

    precious = _save(tmp_path / "precious.nii.gz")
    kept = precious.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_seg.nii.gz").symlink_to(precious)
    rc, _, err = _predict(capsys, model, scan, out)
    assert rc == 2 and f"{out / 'x_seg.nii.gz'}: the output exists as a symbolic link (to {precious})" in err
    assert (out / "x_seg.nii.gz").is_symlink() and precious.read_bytes() == kept
    assert [p.name for p in out.iterdir()] == ["x_seg.nii.gz"]


def test_ctrl_c_leaves_no_partial_file(trained, tmp_path, capsys, monkeypatch):
    model, _ = trained
    scan = _save(tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "out"
    earlier = _save(out / "x_seg.nii.gz").read_bytes()  # an earlier run's label map: kept whole
    save = nib.save

    def save_then_interrupt(img, path):  # Ctrl-C once the partial file is written, before the rename
        save(img, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_predictions(model, scan, out, device="cpu", progress=False)
    assert set(_files(out)) == {"x_seg.nii.gz", "predictions.json"}
    assert (out / "x_seg.nii.gz").read_bytes() == earlier
    assert "Ctrl-C after 0 of 1" in json.loads((out / "predictions.json").read_text())["interrupted"]
    assert main(["predict", "--model", str(model), "--input", str(scan), "--output", str(out)]) != 0
    assert set(_files(out)) == {"x_seg.nii.gz", "predictions.json"} and "interrupted" in capsys.readouterr().err


def test_preview_refuses_nan(tmp_path, capsys):
    data = np.random.default_rng(0).normal(0, 1, (32, 32, 8)).astype(np.float32)
    data[3, 4, 5] = np.nan
    scan = _save(tmp_path / "nan.nii.gz", data, np.diag([8.0, 8, 8, 1]))
    png = tmp_path / "fig" / "preview.png"
    args = ["preview", "--input", str(scan), "--output", str(png), "--views", "1", "--spacing", "8", "--size", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"fedgin preview: error: {scan}: the image holds non-finite values: 1 NaN" in err
    assert not png.parent.exists()
    assert main(args + ["--nonfinite", "repair"]) == 0
    assert [p.name for p in png.parent.iterdir()] == ["preview.png"]

    dl = write_toy_site(tmp_path, "site-ct", "ct", ["disc"], {"training": 1}, size=32, slices=6)
    cache = tmp_path / "site-ct" / "cases" / "cttr00_image.npy"
    image = np.load(cache)
    image[2, 5, 5] = np.inf
    np.save(cache, image)
    with pytest.raises(NonFiniteError, match=f"{cache}: the cached slices of case cttr00 hold non-finite"):
        slices_from_datalist(dl)
