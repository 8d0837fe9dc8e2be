"""``fedgin poc`` destructive steps act only on what fedgin owns (no NVFlare run, no real POC: seconds).

A workspace is fedgin's when ``prepare`` marked it (``.fedgin-poc-workspace`` recording its resolved path) and the
state file and server kit are there; ``clean``, ``stop``, ``start`` refuse anything else with one error line and
exit code 2, leaving it untouched. ``stop`` signals only processes ``start`` recorded (same PID and creation time,
still running from a kit of the workspace) and their descendants; without a record, processes whose command line
names a kit path. Real sleeper processes stand in for the POC's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

from fedgin.cli import main  # noqa: E402
from fedgin.flare.poc import MARKER_FILE, PIDS_FILE, PROJECT_HEADER, Poc, _protected  # noqa: E402

SLEEP = "import time; time.sleep(60)"
PARENT = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
          " print(c.pid, flush=True); time.sleep(60)")


def _tree(root: Path) -> dict:
    """Every entry under ``root`` (links not followed) with its kind and contents."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = (("link", os.readlink(p)) if p.is_symlink() else ("dir",) if p.is_dir()
                                             else ("file", p.read_bytes()))
    return out


def _owned(path: Path) -> Poc:
    """A workspace as ``prepare`` leaves it, without NVFlare: state file, kits, marker."""
    for kit in ("server", "site-a", "site-b"):
        (path / "fedgin" / "prod_00" / kit / "startup").mkdir(parents=True)
    (path / "fedgin_poc.json").write_text(json.dumps({"project": "fedgin", "server": "server",
                                                      "sites": ["site-a", "site-b"], "port": 8002}))
    poc = Poc(path, echo=None)
    poc.write_marker()
    return poc


def _data(path: Path) -> Path:
    """An ordinary folder of someone's files."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("keep me")
    (path / "sub" / "scan.bin").write_bytes(os.urandom(256))
    (path / "fedgin").mkdir()
    return path


def _dead(p: psutil.Process, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def nvflare(monkeypatch):
    """``Poc.nvflare`` replaced by a recorder: no NVFlare command runs."""
    calls = []
    monkeypatch.setattr(Poc, "nvflare", lambda self, *args, **kw: calls.append(args) or "")
    return calls


@pytest.fixture
def spawn():
    """spawn(*argv, child=False) -> psutil.Process of a sleeper with argv in its command line (and, with child, a
    sleeping child of its own, as ``.child``); all killed at the end."""
    started = []

    def run(*argv, child=False):
        p = subprocess.Popen([sys.executable, "-c", PARENT if child else SLEEP, *map(str, argv)],
                             stdout=subprocess.PIPE if child else None, text=True)
        started.append(p)
        proc = psutil.Process(p.pid)
        deadline = time.monotonic() + 10
        while proc.cmdline()[-len(argv):] != [str(a) for a in argv]:  # exec'd: argv visible
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.popen = p
        if child:
            proc.child = psutil.Process(int(p.stdout.readline()))
            started.append(proc.child)
        return proc

    yield run
    for p in started:
        try:
            p.kill()
        except (psutil.Error, ProcessLookupError):
            pass
    for p in started:
        if isinstance(p, subprocess.Popen):
            p.wait()


def _refused(capsys, argv, *fragments) -> str:
    """main(argv) ends with exit 2 and one error line holding every fragment."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("fedgin poc: error: refusing to ") and err.count("\n") == 1, err
    assert "Traceback" not in err + captured.out
    for f in fragments:
        assert f in err, (f, err)
    return err


# ---------------------------------------------------------------------------------------------- refusals
def _case(name: str, tmp: Path, monkeypatch):
    """(workspace argument, message fragments, folder that must stay unchanged, argv of a victim process)."""
    home = _data(tmp / "home")
    monkeypatch.setenv("HOME", str(home))
    ws = tmp / "poc"
    if name == "root":
        return "/", ["refusing to {} /:", "it is the root folder"], None, ["/"]
    if name == "home":
        return home, ["it is the home folder"], home, [home, home / "fedgin" / "prod_00" / "server"]
    if name == "home-parent":
        return tmp, [f"it contains the home folder {home}"], home, [tmp]
    if name == "data":
        data = _data(tmp / "data")
        return data, [f"it has no {MARKER_FILE} marker"], data, [data / "notes.txt", data / "fedgin"]
    if name == "file":
        (tmp / "a_file").write_text("not a folder")
        return tmp / "a_file", ["it is not a folder"], tmp, [tmp / "a_file"]
    _owned(tmp / "original")
    kit = "fedgin/prod_00/site-a/startup/sub_start.sh"
    if name in ("copy-no-marker", "copy-other-path"):
        shutil.copytree(tmp / "original", ws)
        if name == "copy-no-marker":
            (ws / MARKER_FILE).unlink()
            return ws, [f"it has no {MARKER_FILE} marker"], ws, [ws / kit]
        return ws, [f"its {MARKER_FILE} marker was written for {tmp / 'original'}"], ws, [ws / kit]
    if name == "symlink":
        (tmp / "link").symlink_to(tmp / "original")
        return (tmp / "link", [f"refusing to {{}} {tmp / 'link'}: it is a symbolic link (to {tmp / 'original'})"],
                tmp / "original", [tmp / "original" / kit])
    ws = tmp / "original"
    if name == "marked-no-state":
        (ws / "fedgin_poc.json").unlink()
        return ws, ["it is marked but its state file", "is missing or unreadable"], ws, [ws / kit]
    if name == "marker-garbage":
        (ws / MARKER_FILE).write_text("{not json")
        return ws, [f"its marker {ws / MARKER_FILE} is unreadable"], ws, [ws / kit]
    if name == "marked-but-home":
        monkeypatch.setenv("HOME", str(ws))
        return ws, ["it is the home folder", "marked or not"], ws, [ws / kit]
    if name == "marked-but-holds-cwd":
        monkeypatch.chdir(ws / "fedgin")
        return ws, [f"it contains the current directory {ws / 'fedgin'}", "marked or not"], ws, [ws / kit]
    raise AssertionError(name)


CASES = ["root", "home", "home-parent", "data", "file", "copy-no-marker", "copy-other-path", "symlink",
         "marked-no-state", "marker-garbage", "marked-but-home", "marked-but-holds-cwd"]


@pytest.mark.parametrize("action", ["clean", "stop", "start"])
@pytest.mark.parametrize("case", CASES)
def test_destructive_steps_refuse_what_fedgin_does_not_own(case, action, tmp_path, monkeypatch, capsys, nvflare,
                                                           spawn):
    path, fragments, victim, argv = _case(case, tmp_path, monkeypatch)
    before = _tree(victim) if victim else None
    proc = spawn(*argv) if action == "stop" else None
    if proc and case in ("symlink", "marked-no-state", "marker-garbage", "marked-but-home", "marked-but-holds-cwd"):
        Poc(tmp_path / "original", echo=None).record_processes()  # the victim is even recorded
        before = _tree(victim)
    where = f"{path}:" if case != "symlink" else ""
    _refused(capsys, ["poc", "--workspace", str(path), action, *(["--timeout", "0.5"] if action == "stop" else [])],
             *[f.format(action) for f in fragments], where)
    assert nvflare == []  # no NVFlare command ran
    if victim:
        assert _tree(victim) == before
    if proc:
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE


def test_prepare_refuses_a_folder_nvflare_would_wipe(tmp_path, monkeypatch, capsys, nvflare):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sites = ["--site", f"site-ct={tmp_path / 'ct.json'}", "--site", f"site-mri={tmp_path / 'mri.json'}"]
    data = _data(tmp_path / "data")
    before = _tree(data)
    _refused(capsys, ["poc", "--workspace", str(data), "prepare", *sites], f"refusing to prepare {data}:",
             f"the folder is not empty and has no {MARKER_FILE} marker", "`nvflare poc prepare --force` would delete")
    assert _tree(data) == before
    _owned(tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    _refused(capsys, ["poc", "--workspace", str(tmp_path / "copy"), "prepare", *sites],
             f"marker was written for {tmp_path / 'original'}")
    (tmp_path / "fresh.project.yml").write_text("mine: true\n")  # someone's file where prepare writes its copy
    _refused(capsys, ["poc", "--workspace", str(tmp_path / "fresh"), "prepare", *sites],
             f"refusing to prepare {tmp_path / 'fresh.project.yml'}: prepare writes this file")
    assert (tmp_path / "fresh.project.yml").read_text() == "mine: true\n"
    _refused(capsys, ["poc", "--workspace", str(tmp_path / "home"), "prepare", *sites], "it is the home folder")
    assert nvflare == []
    (tmp_path / "empty").mkdir()
    assert Poc(tmp_path / "empty").check("prepare") is False  # missing or empty: NVFlare may create it
    assert Poc(tmp_path / "missing").check("prepare") is False
    assert Poc(tmp_path / "original").check("prepare") is True  # ours: may be prepared again


def test_missing_workspace_is_nothing_to_do(tmp_path, capsys, nvflare):
    for action in ("stop", "clean"):
        assert main(["poc", "--workspace", str(tmp_path / "none"), action]) == 0
        assert f"no workspace at {tmp_path / 'none'}: nothing to {action}" in capsys.readouterr().out
    assert nvflare == []


# ---------------------------------------------------------------------------------------------- processes
def test_stop_signals_only_the_recorded_processes_and_their_descendants(tmp_path, capsys, nvflare, spawn):
    poc = _owned(tmp_path / "poc")
    ws, kit_a, kit_b = poc.workspace, poc.kit("site-a"), poc.kit("site-b")
    victim = _data(tmp_path / "data")
    ours = spawn("-m", kit_a, "-w", kit_a / "startup", child=True)  # a site process with a job process below it
    reused = spawn(kit_b / "startup" / "sub_start.sh")  # its recorded creation time will not match: a reused PID
    mentions = spawn(ws, ws / "notes.txt", f"{kit_a}2", f"/elsewhere{kit_a}", f"{kit_a}.bak/x")
    other = spawn(victim, victim / "fedgin" / "prod_00" / "site-a")
    assert sorted(poc.processes()) == sorted([ours.pid, reused.pid])  # kit paths only, never a mention
    recorded = poc.record_processes()
    assert {r["pid"]: r["kit"] for r in recorded} == {ours.pid: str(kit_a), reused.pid: str(kit_b)}
    record = json.loads((ws / PIDS_FILE).read_text())
    for r in record["processes"]:
        if r["pid"] == reused.pid:
            r["create_time"] -= 100
    (ws / PIDS_FILE).write_text(json.dumps(record))

    assert main(["poc", "--workspace", str(ws), "stop", "--timeout", "0.5"]) == 0
    out = capsys.readouterr().out
    assert nvflare == [("poc", "stop")]
    assert _dead(ours) and _dead(ours.child)
    assert f"killed 2 process(es) that outlived `nvflare poc stop`: {sorted([ours.pid, ours.child.pid])}" in out
    for p in (reused, mentions, other):
        assert p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    assert f"not started by `fedgin poc start`, left running: [{reused.pid}]" in out
    assert not (ws / PIDS_FILE).exists()


def test_stop_without_a_record_takes_the_kit_processes_of_an_owned_workspace(tmp_path, nvflare, spawn):
    poc = _owned(tmp_path / "poc")
    server = spawn("-m", poc.kit("server"), "-s", "fed_server.json")
    mentions = spawn(poc.workspace, poc.workspace / "fedgin" / "prod_00")
    poc.stop(timeout=0.5)
    assert _dead(server)
    assert mentions.is_running() and mentions.status() != psutil.STATUS_ZOMBIE


def test_stop_never_takes_itself_its_parents_or_pid_1(tmp_path, monkeypatch):
    import fedgin.flare.poc as poc_module

    poc = _owned(tmp_path / "poc")
    protected = {os.getpid(), os.getppid(), 1}
    assert protected <= _protected()
    monkeypatch.setattr(poc_module, "_kit_of", lambda cmdline, kits: kits[0])  # as if every process named a kit
    assert not protected & set(poc.processes())
    assert not protected & {p.pid for p in poc._targets()}  # no record: the (now all) kit processes
    fake = [{"pid": pid, "create_time": psutil.Process(pid).create_time(), "kit": str(poc.kit("server"))}
            for pid in sorted(protected) if psutil.pid_exists(pid)]
    (poc.workspace / PIDS_FILE).write_text(json.dumps({"processes": fake}))
    assert poc._targets() == []  # recorded, same creation time, "matching": still never taken (nor what is below)


def test_clean_removes_only_the_owned_workspace_and_its_project_copy(tmp_path, capsys, nvflare, spawn):
    poc = _owned(tmp_path / "poc")
    copy = tmp_path / "poc.project.yml"
    copy.write_text(f"{PROJECT_HEADER} from /x/project.yml\nname: fedgin\n")
    (tmp_path / "beside.txt").write_text("keep")
    site = spawn(poc.kit("site-a") / "startup" / "sub_start.sh")
    assert main(["poc", "--workspace", str(poc.workspace), "clean"]) == 2
    assert f"POC processes still run from {poc.workspace}: `fedgin poc stop` first" in capsys.readouterr().err
    assert (poc.workspace / MARKER_FILE).is_file()
    site.kill()
    assert _dead(site)
    assert main(["poc", "--workspace", str(poc.workspace), "clean"]) == 0
    assert nvflare == [("poc", "clean")]
    assert not poc.workspace.exists() and not copy.exists()
    assert (tmp_path / "beside.txt").read_text() == "keep"

    poc = _owned(tmp_path / "poc")
    copy.write_text("name: someone else's project\n")  # not fedgin's header: stays
    assert main(["poc", "--workspace", str(poc.workspace), "clean"]) == 0
    assert not poc.workspace.exists() and copy.read_text() == "name: someone else's project\n"
