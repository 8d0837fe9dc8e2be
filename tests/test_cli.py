"""The console script: subcommands, documented options, clear errors."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python -m fedgin ARGS`` in a new process: the installed entry point itself."""
    return subprocess.run([sys.executable, "-m", "fedgin", *args], capture_output=True, text=True, timeout=120)


def _main(capsys, *args: str) -> subprocess.CompletedProcess:
    """``fedgin ARGS`` in this process (the same ``main``, without a new interpreter's start-up)."""
    from fedgin.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse: --help and usage errors
        code = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_help_lists_subcommands():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("phantom", "prepare", "train", "evaluate", "job", "demo"):
        assert cmd in out.stdout


def test_subcommand_help_documents_options(capsys):
    expected = {
        "phantom": ["--output", "--modality", "--cases", "--seed"],
        "prepare": ["--layout", "--input", "--output", "--site", "--modality", "--organs", "--spacing", "--size"],
        "train": ["--data", "--method", "--steps", "--epochs", "--output"],
        "evaluate": ["--model", "--data", "--split", "--output"],
        "export-bundle": ["--model", "--output", "--modality"],
    }
    for cmd, options in expected.items():
        out = _main(capsys, cmd, "--help")
        assert out.returncode == 0, out.stderr
        for opt in options:
            assert opt in out.stdout, (cmd, opt)


def test_missing_datalist_is_a_clear_error(tmp_path, capsys):
    out = _main(capsys, "train", "--data", str(tmp_path / "nope" / "datalist.json"), "--steps", "1",
                "--output", str(tmp_path))
    assert out.returncode == 2
    assert "nope/datalist.json" in out.stderr and "not found" in out.stderr


def test_experiment_arguments_are_checked_before_any_work(tmp_path, capsys):
    out = _main(capsys, "experiment", "heart", "--output", str(tmp_path / "h"), "--set", "roundz=3")
    assert out.returncode == 2 and "roundz" in out.stderr and "rounds" in out.stderr
    out = _main(capsys, "experiment", "abdomen-crossmodality", "--output", str(tmp_path / "a"), "--methods", "gin,gni")
    assert out.returncode == 2 and "gni" in out.stderr
    out = _main(capsys, "experiment", "heart", "--output", str(tmp_path / "h"), "--organs", "liver")
    assert out.returncode == 2 and "fixed classes" in out.stderr
    out = _main(capsys, "experiment", "heart", "--output", str(tmp_path / "h"), "--source", "site-ct1=whs:ct")
    assert out.returncode == 2 and "NAME=LAYOUT:MODALITY:PATH" in out.stderr
    out = _main(capsys, "experiment", "heart", "--output", str(tmp_path / "h"), "--source",
               f"site-ct1=whs:ct:{tmp_path / 'nowhere'}")
    assert out.returncode == 2 and "is not a folder" in out.stderr
    assert not (tmp_path / "h").exists() and not (tmp_path / "a").exists()
