"""The environment says no: a full or read-only disk, an output path that is a folder or lies under a file, an
allocation that cannot succeed, Ctrl-C and SIGTERM. Each ends with one line (what happened, what was left), a
non-zero exit, no traceback and no temporary file.

Full and read-only disks are real: a small tmpfs mounted in a private mount namespace (``unshare -rm``); those
tests skip where the machine does not allow it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_toy_site
from fedgin.cli import main

FEDGIN = [sys.executable, "-m", "fedgin"]


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                       capture_output=True, timeout=30)
    return p.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs in a user namespace here")


def _on_small_disk(mount: Path, script: str, size_kb: int = 64, fill_kb: int = 0, read_only: bool = False,
                   timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell ``script`` with a fresh ``size_kb`` tmpfs at ``mount`` (``fill_kb`` of it used up, or read-only);
    the tmpfs exists only inside the namespace, so the script itself lists what is left on it."""
    mount.mkdir(parents=True, exist_ok=True)
    setup = f"mount -t tmpfs -o size={size_kb}k tmpfs {mount}"
    if fill_kb:
        setup += f" && head -c {fill_kb * 1024} /dev/zero > {mount}/filler 2>/dev/null; true"
    if read_only:
        setup += f" && mount -o remount,ro {mount}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"{setup}\n{script}"], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def site_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("env")
    site = write_toy_site(root, "site-ct", "ct", ["disc"], {"training": 2, "validation": 1, "test": 1})
    assert main(["train", "--data", str(site), "--output", str(root / "run"), "--steps", "2",
                 "--channels", "4,8"]) == 0
    return site, root / "run" / "model.pt"


def _one_line_error(stderr: str, *expected: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], (text, stderr)


@needs_mount
def test_full_disk_train_and_evaluate(site_and_model, tmp_path):
    site, model = site_and_model
    disk = tmp_path / "disk"
    p = _on_small_disk(disk, f"""
echo old > {disk}/res.json; cat /dev/zero > {disk}/filler 2>/dev/null
{' '.join(FEDGIN)} train --data {site} --output {disk}/run --steps 1 --channels 4,8; echo "rc=$?"
{' '.join(FEDGIN)} evaluate --model {model} --data {site} --output {disk}/res.json; echo "rc=$?"
echo LEFT; find {disk} -name '*.tmp*'; cat {disk}/res.json""", size_kb=64)
    out = p.stdout
    assert out.count("rc=2") == 2, (out, p.stderr)
    errors = [line for line in p.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2 and "Traceback" not in p.stderr, p.stderr
    assert "fedgin train: error: cannot write" in errors[0] and "the disk is full" in errors[0]
    assert "best_model.pt" in errors[0]  # what was left
    assert "fedgin evaluate: error: cannot write" in errors[1] and "res.json" in errors[1]
    left = out.split("LEFT", 1)[1].split()
    assert left == ["old"], out  # no temporary file, the earlier results file intact


@needs_mount
def test_read_only_disk(site_and_model, tmp_path):
    site, model = site_and_model
    disk = tmp_path / "ro"
    p = _on_small_disk(disk, f"""
{' '.join(FEDGIN)} train --data {site} --output {disk}/run --steps 1 --channels 4,8; echo "rc=$?"
{' '.join(FEDGIN)} job --output {disk}/job --data-root {site.parent.parent}; echo "rc=$?"
echo LEFT; ls -A {disk}""", read_only=True)
    assert p.stdout.count("rc=2") == 2, (p.stdout, p.stderr)
    errors = [line for line in p.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2 and "Traceback" not in p.stderr, p.stderr
    assert all("read-only" in e.lower() for e in errors), errors
    assert p.stdout.split("LEFT", 1)[1].split() == []


def test_output_is_a_folder_or_under_a_file(site_and_model, tmp_path, capsys):
    site, model = site_and_model
    (tmp_path / "a_file").write_text("keep")
    cases = [
        (["evaluate", "--model", str(model), "--data", str(site), "--output", str(tmp_path)], "is a folder"),
        (["evaluate", "--model", str(model), "--data", str(site), "--output", str(tmp_path / "a_file" / "r.json")],
         "is a file"),
        (["train", "--data", str(site), "--steps", "1", "--output", str(tmp_path / "a_file")], "is a file"),
        (["train", "--data", str(site), "--steps", "1", "--output", str(tmp_path / "a_file" / "run")], "is a file"),
        (["job", "--data-root", str(site.parent.parent), "--output", str(tmp_path / "a_file" / "job")], "a_file"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        _one_line_error(capsys.readouterr().err, expected)
    assert (tmp_path / "a_file").read_text() == "keep"


def test_output_symlink_is_not_written_through(site_and_model, tmp_path, capsys):
    site, model = site_and_model
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    assert main(["train", "--data", str(site), "--steps", "1", "--output", str(tmp_path / "link")]) == 2
    _one_line_error(capsys.readouterr().err, "symbolic link", str(target))
    (tmp_path / "res_link.json").symlink_to(tmp_path / "victim.json")
    assert main(["evaluate", "--model", str(model), "--data", str(site), "--output",
                 str(tmp_path / "res_link.json")]) == 2
    _one_line_error(capsys.readouterr().err, "symbolic link")
    assert list(target.iterdir()) == [] and not (tmp_path / "victim.json").exists()


def test_an_allocation_that_cannot_succeed(site_and_model, tmp_path, capsys):
    """A U-Net whose first layers need terabytes: one line, not a MemoryError traceback."""
    site, _ = site_and_model
    assert main(["train", "--data", str(site), "--steps", "1", "--channels", "200000,400000",
                 "--output", str(tmp_path / "run")]) == 2
    _one_line_error(capsys.readouterr().err, "out of memory")
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("sig, code, text", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_interrupted_training_says_what_is_left(site_and_model, tmp_path, sig, code, text):
    site, _ = site_and_model
    run = tmp_path / "run"
    p = subprocess.Popen([*FEDGIN, "train", "--data", str(site), "--steps", "100000", "--channels", "4,8",
                          "--output", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not any((run / "tb").glob("events*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err and f"fedgin train: {text}" in err and "re-run" in err
    assert not list(run.rglob("*.tmp*"))


def test_interrupted_prepare_leaves_the_old_cache(tmp_path):
    """SIGTERM while a site is prepared: the earlier cache is byte-identical and no temporary folder is left."""
    from fedgin.phantom import generate_dataset

    generate_dataset(tmp_path / "raw", "ct", 6, seed=1, progress=False)
    out = tmp_path / "cache"
    base = [*FEDGIN, "prepare", "--input", str(tmp_path / "raw"), "--site", "site-ct", "--modality", "ct",
            "--organs", "liver", "--output", str(out)]
    assert subprocess.run([*base, "--spacing", "8", "--size", "48"], capture_output=True).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    p = subprocess.Popen([*base, "--spacing", "1.0", "--size", "400"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".cache.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Traceback" not in err and "an earlier cache in --output is intact" in err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".cache.*"))
    assert json.loads((out / "datalist.json").read_text())["size_px"] == [48, 48]
