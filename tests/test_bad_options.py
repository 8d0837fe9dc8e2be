"""Bad options and configuration values: one line naming the option or the file and field, exit 2, nothing written.

Each case runs ``fedgin.cli.main`` in-process on a tiny toy site (``conftest.write_toy_site``) and checks the exit
code, the message, and that the output path does not exist afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_toy_site
from fedgin.cli import main


@pytest.fixture
def site(tmp_path) -> Path:
    return write_toy_site(tmp_path, "site-ct", "ct", ["disc"], {"training": 2, "validation": 1, "test": 1})


def _fails(capsys, argv: list[str], *expected: str, code: int = 2) -> str:
    """Run ``fedgin ARGV``; assert the exit code and that stderr holds every expected text in one error line."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    return err


@pytest.mark.parametrize("extra, expected", [
    (["--steps", "0"], ["--steps", "positive integer", "got 0"]),
    (["--steps", "-5"], ["--steps", "got -5"]),
    (["--epochs", "0"], ["--epochs", "got 0"]),
    (["--steps", "2", "--batch-size", "0"], ["--batch-size", "got 0"]),
    (["--steps", "2", "--batch-size", "-1"], ["--batch-size", "got -1"]),
    (["--steps", "2", "--eval-every", "-1"], ["--eval-every", "got -1"]),
    (["--steps", "2", "--lr", "0"], ["--lr", "positive"]),
    (["--steps", "2", "--lr", "nan"], ["--lr", "finite"]),
    (["--steps", "2", "--channels", "16,,32"], ["--channels", "16,,32"]),
    (["--steps", "2", "--device", "cuda:3"], ["--device cuda:3"]),
    (["--steps", "2", "--device", "tpu"], ["--device", "tpu"]),
])
def test_train_options_out_of_range_do_no_work(site, tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--data", str(site), "--output", str(out), *extra], *expected)
    assert not out.exists()


@pytest.mark.parametrize("content, expected", [
    ("{bad json", ["--config", "not valid JSON"]),
    ('["a list"]', ["--config", "expected a JSON object"]),
    ('{"batch_size": "8"}', ["batch_size", "expected an integer", '"8"']),
    ('{"lr": -0.1}', ["lr", "must be > 0"]),
    ('{"amp": "yes"}', ["amp", "true or false"]),
    ('{"model": {"channels": [16, "a"]}}', ["model.channels[1]", "expected an integer"]),
    ('{"model": {"channels": [16, 32], "strides": [2, 2]}}', ["len(strides)"]),
    ('{"method": "gni"}', ["method", "gni"]),
    ('{"batch_sise": 8}', ["unknown key", "batch_sise"]),
])
def test_train_config_file_values_are_checked(site, tmp_path, capsys, content, expected):
    cfg = tmp_path / "run.json"
    cfg.write_text(content)
    out = tmp_path / "run"
    err = _fails(capsys, ["train", "--data", str(site), "--output", str(out), "--steps", "1", "--config", str(cfg)],
                 *expected)
    assert str(cfg) in err
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--rounds", "0"], ["--rounds", "got 0"]),
    (["--rounds", "-3"], ["--rounds", "got -3"]),
    (["--set", "channels=[16,32"], ["--set channels: not valid JSON: [16,32"]),
    (["--set", "classes=liver"], ["--set classes", "liver"]),
    (["--set", "num_rounds=many"], ["--set num_rounds", "many"]),
    (["--set", "lr=\"fast\""], ["--set lr", "a finite number"]),
    (["--set", "roundz=3"], ["--set roundz: unknown"]),
    (["--set", "lr=0.1", "--set", "lr=0.2"], ["--set lr: given twice"]),
    (["--set", "num_rounds=0"], ["num_rounds", "must be >= 1"]),
    (["--set", "batch_size=0"], ["batch_size", "must be >= 1"]),
    (["--set", "local_epochs=0"], ["local_epochs", "train nothing"]),
    (["--set", "device=gpu"], ["device", "gpu"]),
    (["--set", "privacy={\"filter\": \"blur\"}"], ["blur"]),
])
def test_job_values_are_refused_before_the_job_is_written(site, tmp_path, capsys, argv, expected):
    job = tmp_path / "job"
    _fails(capsys, ["job", "--output", str(job), "--data-root", str(site.parent.parent), *argv], *expected)
    assert not job.exists()


def test_job_needs_its_data_and_a_valid_one_is_written(site, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FEDGIN_DATA_ROOT", raising=False)
    job = tmp_path / "job"
    _fails(capsys, ["job", "--output", str(job)], "--data-root", "simulator job")
    _fails(capsys, ["job", "--output", str(job), "--data-root", str(tmp_path / "nowhere")], "no such folder")
    _fails(capsys, ["job", "--output", str(job), "--data-root", str(tmp_path / "site-ct")], "no <site>/datalist.json")
    assert not job.exists()
    # a bare word is text for a text variable; channels without strides get one stride per level
    assert main(["job", "--output", str(job), "--data-root", str(tmp_path), "--set", "method=none",
                 "--set", "channels=[8,16,32]", "--rounds", "3"]) == 0
    cfg = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    args = cfg["executors"][0]["executor"]["args"]
    assert args["train"]["method"] == "none" and args["train"]["model"]["strides"] == [2, 2]
    assert args["classes"] == ["disc"]
    # a POC/production job (no code) reads its data location from each site's own config
    assert main(["job", "--output", str(tmp_path / "job2"), "--code", "site", "--rounds", "2"]) == 0


@pytest.mark.parametrize("argv, expected", [
    (["experiment", "heart", "--set", "rounds=0"], ["--set rounds", ">= 1"]),
    (["experiment", "heart", "--set", "size=big"], ["--set size", "big"]),
    (["experiment", "heart", "--set", "channels=[16,32"], ["--set channels: not valid JSON"]),
    (["experiment", "abdomen-crossmodality", "--set", "organs=liver"], ["--set organs", "liver"]),
    (["experiment", "heart", "--rounds", "0"], ["--rounds", "got 0"]),
    (["compare", "--channels", "16,x"], ["--channels", "'x'"]),
    (["compare", "--cases", "2"], ["--cases", "between 3"]),
    (["compare", "--size", "100000"], ["--size", "4096"]),
    (["preview", "--views", "0"], ["--views", "got 0"]),
    (["prepare", "--input", ".", "--output", "o", "--site", "s", "--modality", "ct", "--organs", "liver",
      "--spacing", "-1"], ["--spacing", "positive"]),
    (["prepare", "--input", ".", "--output", "o", "--site", "s", "--modality", "ct", "--organs", "liver",
      "--val-fraction", "1.5"], ["--val-fraction", "fraction"]),
    (["phantom", "--output", "o", "--modality", "ct", "--cases", "0"], ["--cases", "got 0"]),
])
def test_other_commands_check_their_values(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, [*argv, *(["--output", str(tmp_path / "out")] if argv[0] in ("experiment", "compare") else [])],
           *expected)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- datalists read back
def _edit(path: Path, change) -> Path:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["training"][0].update(num_slices="6"), ["num_slices must be a positive integer", "'6'"]),
    (lambda d: d["training"][0].update(case_id=7), ["case_id must be non-empty text"]),
    (lambda d: d["training"][0].update(image="../../escape_image.npy"), ["points outside the datalist's folder"]),
    (lambda d: d["training"][0].update(image="/etc/passwd"), ["points outside the datalist's folder"]),
    (lambda d: d.update(size_px="32"), ["size_px must be two positive integers"]),
    (lambda d: d.update(labels={"0": "background", "2": "disc"}), ["labels: ids must be 0..K"]),
    (lambda d: d.update(training={"a": 1}), ["training must be a list"]),
    (lambda d: d["validation"].append(dict(d["training"][0])), ["is listed twice", "training[0]", "validation[1]"]),
])
def test_hand_edited_datalist_fields_are_named(site, tmp_path, capsys, change, expected):
    _edit(site, change)
    out = tmp_path / "run"
    err = _fails(capsys, ["train", "--data", str(site), "--output", str(out), "--steps", "1"], *expected)
    assert str(site) in err
    assert not out.exists()


def test_a_case_pooled_twice_is_refused(tmp_path, capsys):
    """Two datalists of one site holding the same case (a copied site folder) would count it twice."""
    a = write_toy_site(tmp_path / "a", "site-ct", "ct", ["disc"], {"training": 2, "test": 1})
    b = write_toy_site(tmp_path / "b", "site-ct", "ct", ["disc"], {"training": 2, "test": 1})
    _fails(capsys, ["train", "--data", str(a), str(b), "--output", str(tmp_path / "run"), "--steps", "1"],
           "also in", "pooled once")
    model = tmp_path / "m.pt"
    assert not model.exists()


def test_cached_slices_with_nan_are_refused_by_evaluate_and_train(site, tmp_path, capsys):
    d = json.loads(site.read_text())
    img_path = site.parent / d["test"][0]["image"]
    img = np.load(img_path)
    img[2, 3, 4] = np.nan
    np.save(img_path, img)
    run = tmp_path / "run"
    _edit(site, lambda dl: None)
    err = _fails(capsys, ["evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(site)], "none.pt")
    # a real model is needed for evaluate: train one on the (finite) training split first
    assert main(["train", "--data", str(site), "--output", str(run), "--steps", "1", "--channels", "4,8"]) == 0
    capsys.readouterr()
    err = _fails(capsys, ["evaluate", "--model", str(run / "model.pt"), "--data", str(site), "--output",
                          str(tmp_path / "res.json")], str(img_path), "1 NaN", "prepare the site again")
    assert "slice 2" in err
    assert not (tmp_path / "res.json").exists()


@pytest.mark.parametrize("args, expected", [
    ({"train": {"batch_size": "8"}}, ["config_fed_client.json", "batch_size", "expected an integer"]),
    ({"train": {"model": {"channels": [16, 32], "strides": [2, 2]}}}, ["config_fed_client.json", "len(strides)"]),
    ({"local_epochs": "1"}, ["config_fed_client.json", "local_epochs"]),
    ({"local_epochs": 0, "local_steps": 0}, ["config_fed_client.json", "train nothing"]),
])
def test_hand_edited_job_config_fails_at_job_load_naming_the_file(args, expected):
    """What a site's NVFlare builds from config_fed_client.json: the error names the file and the field."""
    from fedgin.flare.executor import FedGINExecutor

    with pytest.raises(ValueError) as e:
        FedGINExecutor(classes=["liver"], **args)
    for text in expected:
        assert text in str(e.value)


@pytest.mark.parametrize("argv", [["compare", "--organs", ","], ["compare", "--methods", ","],
                                  ["experiment", "heart", "--methods", " "],
                                  ["experiment", "abdomen-crossmodality", "--organs", ","]])
def test_an_empty_list_of_names_is_refused(tmp_path, capsys, argv):
    _fails(capsys, [*argv, "--output", str(tmp_path / "out")], "give at least one name")
    assert not (tmp_path / "out").exists()
