"""POC mode: the production setup (``provisioning/project.yml``) on one workstation, driven by NVFlare's own CLI.

``nvflare poc prepare -i project.yml`` provisions real startup kits (mutual TLS, the FedGIN allow-list, ``byoc``
denied) with every host set to ``localhost``; each site's kit gets its own ``local/fedgin_site.json`` pointing at
that site's prepared data; ``nvflare poc start`` runs the server and one process per site; jobs are written without
code (``--code site``: the sites run the installed ``fedgin``) and submitted as a recipe through NVFlare 2.9's
``ProdEnv`` (the admin's startup kit, as in production) or, as a job folder, with ``nvflare job submit``; the job's
status and results come from ``ProdEnv`` too. Nothing here imitates NVFlare: every step is its CLI or its API.

The POC workspace is ``$NVFLARE_POC_WORKSPACE`` or ``workspace/poc``; ``nvflare poc prepare`` also registers the
admin kits in ``~/.nvflare/config.conf`` (set ``HOME`` to keep that away from your own configuration).

Destructive steps act only on what fedgin owns (``Poc.check``): ``prepare`` writes the marker ``.fedgin-poc-workspace``
(its resolved path, a random id, the fedgin version, the time) into the workspace NVFlare provisioned; ``start``,
``stop``, ``clean`` and a re-``prepare`` refuse a folder without a marker for exactly that path (and ``/``, a home
folder, a folder holding the current directory, a symbolic link). ``start`` records the processes it started
(``fedgin_poc_pids.json``: PID, creation time, kit); ``stop`` signals only those that are still the same processes,
and their descendants.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import fedgin
from fedgin.flare.executor import SITE_CONFIG_FILE
from fedgin.flare.simulate import nvflare_command, threads_per_process

__all__ = ["Poc", "PocError", "default_project", "default_workspace"]

PROGRESS = re.compile(r"(Round \d+ (?:started|finished)\.|REJECTED update of .*|Ignore the result from .*|"
                      r"Beginning model validation.*|received dead job report for client .*)")


MARKER_FILE = ".fedgin-poc-workspace"  # fedgin's ownership marker, written by ``prepare``
PIDS_FILE = "fedgin_poc_pids.json"  # the processes ``start`` started
PROJECT_HEADER = "# written by fedgin poc prepare"  # first line of the ``<workspace>.project.yml`` fedgin writes


@contextlib.contextmanager
def _quiet():
    """NVFlare's session manager prints its monitoring to stdout: keep it out of fedgin's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class PocError(RuntimeError):
    """An NVFlare POC command failed, a job did not complete, or a step refused a workspace that is not fedgin's."""


def default_project() -> Path:
    """``provisioning/project.yml`` of the repository this package was installed from."""
    return Path(fedgin.__file__).resolve().parents[2] / "provisioning" / "project.yml"


def default_workspace() -> Path:
    """``$NVFLARE_POC_WORKSPACE`` or ``workspace/poc``, absolute (not resolved: ``Poc`` refuses a symbolic link)."""
    return Path(os.path.abspath(os.environ.get("NVFLARE_POC_WORKSPACE") or "workspace/poc"))


def _protected() -> set[int]:
    """PIDs never signalled: 0, 1, this process and its parents."""
    import psutil

    return {0, 1, os.getpid()} | {p.pid for p in psutil.Process().parents()}


def _alive(p) -> bool:
    """The very process ``p`` (same PID and creation time) still runs (a zombie does not)."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kit_of(cmdline: list[str], kits: list[Path]) -> Path | None:
    """The kit whose path is an argument of ``cmdline``, whole or followed by ``/`` (``<kit>/startup/sub_start.sh``,
    ``-m <kit>``, ``-w <kit>/startup``); a path that merely contains a kit's path, or a longer name, does not count."""
    for arg in cmdline:
        for kit in kits:
            if arg == str(kit) or arg.startswith(str(kit) + os.sep):
                return kit
    return None


def _yaml(path: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PocError(f"{path}: cannot read the project file: {e}") from e


class Poc:
    """One POC system.

    Args:
        workspace: the POC workspace (created by ``prepare``, removed by ``clean``).
        home: ``HOME`` for the NVFlare commands (where ``~/.nvflare/config.conf`` goes); None keeps yours.
        echo: where progress lines go.
    """

    def __init__(self, workspace: str | Path | None = None, home: str | Path | None = None,
                 echo: Callable[[str], None] | None = print) -> None:
        self.given = Path(os.path.abspath(workspace)) if workspace else default_workspace()
        self.workspace = self.given.resolve()
        self.home = Path(home).resolve() if home else None
        self.echo = echo or (lambda s: None)

    # ------------------------------------------------------------------ plumbing
    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "NVFLARE_POC_WORKSPACE": str(self.workspace)}
        if self.home:
            env["HOME"] = str(self.home)
        return env

    def _threads_env(self, sites: int) -> dict[str, str]:
        """This POC's environment with ``OMP_NUM_THREADS`` = each site's share of the cores (unless set): every site
        of a workstation POC trains at once."""
        env = self.env
        env.setdefault("OMP_NUM_THREADS", threads_per_process(sites))
        return env

    def nvflare(self, *args: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> str:
        """Run ``nvflare ARGS`` with this POC's environment; returns its output (stdout + stderr)."""
        try:
            p = subprocess.run(nvflare_command(*args), env=env or self.env, capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise PocError(f"`nvflare {' '.join(args)}` did not finish in {timeout:.0f} s") from e
        out = p.stdout + p.stderr
        if check and p.returncode != 0:
            raise PocError(f"`nvflare {' '.join(args)}` failed (exit {p.returncode}):\n{out.strip()[-2000:]}")
        return out

    @property
    def state_file(self) -> Path:
        return self.workspace / "fedgin_poc.json"

    def state(self) -> dict:
        if not self.state_file.is_file():
            raise PocError(f"no prepared POC workspace at {self.workspace}: run `fedgin poc prepare` first")
        return json.loads(self.state_file.read_text())

    def kit(self, participant: str) -> Path:
        """The startup kit folder of ``participant`` (site, server or admin)."""
        return self.workspace / self.state()["project"] / "prod_00" / participant

    # ------------------------------------------------------------------ ownership
    @property
    def marker_file(self) -> Path:
        return self.workspace / MARKER_FILE

    @property
    def project_copy(self) -> Path:
        """The project file ``prepare`` writes beside the workspace (``nvflare poc prepare`` wipes the workspace)."""
        return self.workspace.parent / f"{self.workspace.name}.project.yml"

    def write_marker(self) -> dict:
        """Mark the workspace as fedgin's: ``.fedgin-poc-workspace`` with its resolved path, a random id, the fedgin
        version and the time (``prepare`` calls this once NVFlare has provisioned the folder)."""
        mark = {"workspace": str(self.workspace), "id": uuid.uuid4().hex, "fedgin_version": fedgin.__version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.marker_file.write_text(json.dumps(mark, indent=2) + "\n")
        return mark

    def _forbidden(self) -> str | None:
        """Belt and braces, marker or not: ``/``, a home folder (``$HOME``, this POC's ``home``), the current
        directory, or a folder holding one of them."""
        ws = self.workspace
        if ws == Path(ws.anchor):
            return "it is the root folder"
        try:
            cwd = [("the current directory", Path.cwd().resolve())]
        except OSError:
            cwd = []
        homes = [("the home folder", Path(os.path.expanduser("~")).resolve())] + ([("the home folder", self.home)]
                                                                                  if self.home else [])
        for what, path in homes + cwd:
            if ws == path:
                return f"it is {what}"
            if ws in path.parents:
                return f"it contains {what} {path}"
        return None

    def check(self, action: str) -> bool:
        """May ``action`` (prepare, start, stop, clean) act on this workspace?

        Checked in order: the workspace path is not a symbolic link; it is not ``/``, a home folder, the current
        directory or a folder holding one of them; it is a folder; it holds ``.fedgin-poc-workspace``, which parses
        and records exactly this resolved path (a copied or moved look-alike does not); and, except for ``prepare``,
        the state file ``fedgin_poc.json`` and the server kit ``<project>/prod_00/<server>`` are there. ``prepare``
        also refuses to overwrite a ``<workspace>.project.yml`` that fedgin did not write.

        Returns:
            True: the workspace is fedgin's; False: it does not exist (for ``prepare``: or is an empty folder).

        Raises:
            PocError: ``refusing to ACTION PATH: WHY; WHAT TO DO`` (one line).
        """
        ws = self.workspace

        def refuse(path, why: str, todo: str = "pass the workspace `fedgin poc prepare` made with --workspace"):
            raise PocError(f"refusing to {action} {path}: {why}; {todo}")

        if self.given.is_symlink():
            refuse(self.given, f"it is a symbolic link (to {os.readlink(self.given)}), which fedgin does not follow",
                   "pass the real path of the workspace")
        why = self._forbidden()
        if why:
            refuse(ws, why, "fedgin never acts on it, marked or not: pass a dedicated POC workspace with --workspace")
        if action == "prepare" and os.path.lexists(self.project_copy) and not self._ours(self.project_copy):
            refuse(self.project_copy, "prepare writes this file and it was not written by fedgin",
                   "move it away or choose another --workspace")
        if not os.path.lexists(ws):
            return False
        if not ws.is_dir():
            refuse(ws, "it is not a folder", "pass the POC workspace folder with --workspace")
        if not self.marker_file.is_file():
            if action == "prepare" and not any(ws.iterdir()):
                return False
            if action == "prepare":
                refuse(ws, f"the folder is not empty and has no {MARKER_FILE} marker (`nvflare poc prepare --force` "
                           "would delete everything in it)", "choose a new or empty folder for --workspace")
            refuse(ws, f"it has no {MARKER_FILE} marker, so `fedgin poc prepare` did not make it",
                   "check --workspace (remove the folder yourself if you are sure it is a stale POC workspace)")
        try:
            mark = json.loads(self.marker_file.read_text())
            owner = mark["workspace"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            refuse(ws, f"its marker {self.marker_file} is unreadable ({type(e).__name__}: {e})",
                   "check --workspace (remove the folder yourself if you are sure it is a stale POC workspace)")
        if owner != str(ws):
            refuse(ws, f"its {MARKER_FILE} marker was written for {owner} (a copied or moved workspace)",
                   f"use {owner}, or prepare a new workspace in an empty folder")
        if action != "prepare":
            missing = self._missing_layout()
            if missing:
                refuse(ws, f"it is marked but {missing}, so it is not a complete POC workspace",
                       "run `fedgin poc prepare` again")
        return True

    def _missing_layout(self) -> str | None:
        """What of a prepared workspace is missing: the state file, or the server kit it names."""
        try:
            state = self.state()
            kit = self.kit(state["server"])
        except (PocError, OSError, ValueError, KeyError, TypeError):
            return f"its state file {self.state_file} is missing or unreadable"
        return None if kit.is_dir() else f"its server kit {kit} is missing"

    @staticmethod
    def _ours(path: Path) -> bool:
        """``path`` is a plain file whose first line is fedgin's header."""
        try:
            return path.is_file() and not path.is_symlink() and path.open().readline().startswith(PROJECT_HEADER)
        except (OSError, UnicodeDecodeError):
            return False

    # ------------------------------------------------------------------ processes
    def _kits(self) -> list[Path]:
        """The kit folders of this workspace, ``<workspace>/<project>/prod_00/*`` ([] without a state file)."""
        try:
            prod = self.workspace / self.state()["project"] / "prod_00"
            return sorted(p for p in prod.iterdir() if p.is_dir())
        except (PocError, OSError, ValueError, KeyError, TypeError):
            return []

    def _running(self) -> list:
        """[(psutil.Process, kit)] of processes whose command line names a kit of this workspace (``_kit_of``)."""
        import psutil

        kits, protected, found = self._kits(), _protected(), []
        if not kits:
            return []
        for p in psutil.process_iter(["cmdline"]):
            kit = _kit_of(p.info["cmdline"] or [], kits) if p.pid not in protected else None
            if kit:
                found.append((p, kit))
        return found

    def processes(self) -> list[int]:
        """PIDs of processes running from this workspace's kits: a kit folder is an argument of their command line,
        whole or followed by ``/`` (never a substring match of an arbitrary path)."""
        return [p.pid for p, _ in self._running()]

    def record_processes(self) -> list[dict]:
        """Write ``fedgin_poc_pids.json``: PID, creation time and kit of every process running from this workspace's
        kits (``start`` calls this once ``nvflare poc start`` returns)."""
        import psutil

        procs = []
        for p, kit in self._running():
            try:
                procs.append({"pid": p.pid, "create_time": p.create_time(), "kit": str(kit), "cmdline": p.cmdline()})
            except psutil.Error:
                continue
        (self.workspace / PIDS_FILE).write_text(json.dumps({"recorded": time.time(), "processes": procs}, indent=2))
        return procs

    def _targets(self) -> list:
        """The processes ``stop`` may signal (psutil.Process objects, identity = PID + creation time).

        With a readable ``fedgin_poc_pids.json``: each recorded process that still runs with the recorded creation
        time (a reused PID is not it) and still names its recorded kit, which must be a kit of this workspace;
        without one (a system started by hand): the processes running from this workspace's kits. Plus their
        descendants (taken now, before anything stops). Never this process, its parents or PID 1.
        """
        import psutil

        record, entries = self.workspace / PIDS_FILE, None
        if record.is_file():
            try:
                entries = list(json.loads(record.read_text())["processes"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.echo(f"POC: {record} is unreadable ({e}): stopping what runs from the kits instead")
        protected = _protected()
        if entries is None:
            roots = [p for p, _ in self._running()]
        else:
            kits, roots = self._kits(), []
            for e in entries:
                try:
                    p, kit = psutil.Process(int(e["pid"])), Path(e["kit"])
                    same = abs(p.create_time() - float(e["create_time"])) < 0.01
                    if (same and p.pid not in protected and kit in kits and _kit_of(p.cmdline(), [kit])
                            and _alive(p)):
                        roots.append(p)
                except (psutil.Error, ValueError, KeyError, TypeError):
                    continue
        found = {}
        for p in roots:
            found[p.pid] = p
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.Error:
                pass
        return [p for pid, p in sorted(found.items()) if pid not in protected]

    # ------------------------------------------------------------------ steps
    def prepare(self, datalists: dict[str, str | Path], project: str | Path | None = None,
                port: int | None = None, heartbeat_timeout: float | None = None) -> dict:
        """Provision the POC kits from ``project`` and point each site's kit at its datalist.

        Args:
            datalists: {site name: its datalist.json}; every client of the project needs one.
            project: the project file (default ``provisioning/project.yml``).
            port: FL (and admin) port of the server instead of the project's (e.g. to run beside another POC).
            heartbeat_timeout: seconds without a heartbeat after which the server drops a site (NVFlare's
                default 600): a crashed site then stops being waited for (cross-site evaluation included).
        """
        if self.check("prepare") and self.processes():
            raise PocError(f"a POC system runs from {self.workspace}: `fedgin poc stop` before preparing again")
        project = Path(project).resolve() if project else default_project()
        spec = _yaml(project)
        parts = spec.get("participants", [])
        clients = [p["name"] for p in parts if p.get("type") == "client"]
        missing = sorted(set(clients) - set(datalists))
        extra = sorted(set(datalists) - set(clients))
        if missing or extra:
            raise PocError(f"{project}: sites {clients}; no data given for {missing}" if missing else
                           f"{project}: sites {clients}; data given for unknown site(s) {extra}")
        for site, path in datalists.items():
            if not Path(path).is_file():
                raise PocError(f"site {site}: datalist {path} not found (make it with `fedgin prepare`)")
        server = next(p for p in parts if p.get("type") == "server")
        if port:
            server["fed_learn_port"] = server["admin_port"] = int(port)
        self.workspace.parent.mkdir(parents=True, exist_ok=True)
        import yaml

        used = self.project_copy
        used.write_text(f"{PROJECT_HEADER} from {project}\n" + yaml.safe_dump(spec, sort_keys=False))
        self.echo(f"POC: provisioning {len(clients)} sites ({', '.join(clients)}) from {project} "
                  f"into {self.workspace}")
        try:  # --force wipes the folder: check() made sure it is missing, empty or ours
            self.nvflare("poc", "prepare", "-i", str(used), "--force", timeout=120)
        finally:  # even a failed provisioning leaves a folder only fedgin made: mark it so prepare may retry
            if self.workspace.is_dir() and not self.workspace.is_symlink():
                self.write_marker()
        state = {"project": spec["name"], "project_file": str(used), "server": server["name"],
                 "port": server.get("fed_learn_port", 8002), "sites": clients,
                 "admin": next(p["name"] for p in parts if p.get("role") == "project_admin"),
                 "datalists": {s: str(Path(p).resolve()) for s, p in datalists.items()}}
        self.state_file.write_text(json.dumps(state, indent=2))
        if heartbeat_timeout:
            for name in ("resources.json", "resources.json.default"):
                res = self.kit(state["server"]) / "local" / name
                if res.is_file():
                    conf = json.loads(res.read_text())
                    conf["servers"][0]["heart_beat_timeout"] = float(heartbeat_timeout)
                    res.write_text(json.dumps(conf, indent=2) + "\n")
        for site, path in state["datalists"].items():
            cfg = self.kit(site) / "local" / SITE_CONFIG_FILE
            cfg.write_text(json.dumps({"datalist": path}, indent=2) + "\n")
            self.echo(f"  {site}: {cfg} -> {path}")
        return state

    def start(self, timeout: float = 90) -> None:
        """Start the server and every site (returns once they are connected) of a workspace that is fedgin's
        (``check``); records the processes running from its kits afterwards (``record_processes``), even if
        ``nvflare poc start`` failed."""
        self.check("start")
        state = self.state()
        self.echo(f"POC: starting the server (localhost:{state['port']}) and {', '.join(state['sites'])}")
        try:
            self.nvflare("poc", "start", "--timeout", str(int(timeout)), timeout=timeout + 60,
                         env=self._threads_env(len(state["sites"])))
        finally:
            self.record_processes()

    def prod_env(self, kit_id: str | None = None):
        """NVFlare's ``ProdEnv`` on this POC's admin kit (``kit_id``, default the project admin): how 2.9 submits a
        recipe to, and asks the status and results of, a running federation (the same as in production)."""
        from nvflare.recipe import ProdEnv

        admin = kit_id or self.state()["admin"]
        kit = self.kit(admin)
        if not (kit / "startup").is_dir():
            raise PocError(f"no admin startup kit {kit} (admins of this POC: see {self.project_copy})")
        return ProdEnv(startup_kit_location=str(kit), username=admin, login_timeout=30.0)

    def submit(self, job, kit_id: str | None = None) -> str:
        """Submit a job; returns its id. A recipe (``fedgin.flare.job.make_recipe(..., code="site")``) goes through
        NVFlare's ``ProdEnv``; a job folder through ``nvflare job submit`` (what a user types), which signs it."""
        if hasattr(job, "execute"):
            with _quiet():
                run = job.execute(self.prod_env(kit_id))
            job_id = run.get_job_id()
            self.echo(f"POC: submitted recipe {job.name} through ProdEnv as job {job_id}")
            return job_id
        args = ["job", "submit", "-j", str(job)] + (["--kit-id", kit_id] if kit_id else [])
        out = self.nvflare(*args, timeout=180)
        m = re.search(r"job_id:\s*(\S+)", out)
        if not m:
            raise PocError(f"no job id in the output of `nvflare job submit`:\n{out.strip()[-2000:]}")
        self.echo(f"POC: submitted {job} as job {m.group(1)}")
        return m.group(1)

    def wait(self, job_id: str, timeout: float = 1800, kit_id: str | None = None) -> str:
        """Wait for the job to end (its status from ``ProdEnv``), echoing its rounds from the server's log; returns
        its final status (``COMPLETED``).

        Raises:
            PocError: the job did not complete (failed, aborted or still running after ``timeout``).
        """
        self.echo(f"POC: waiting for job {job_id} (at most {timeout:.0f} s)")
        env = self.prod_env(kit_id)
        log = self.kit(self.state()["server"]) / job_id / "log.txt"
        seen, t0, status = 0, time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            seen = self._echo_progress(log, seen, t0)
            with _quiet():
                status = env.get_job_status(job_id)
            if status and status.startswith("FINISHED"):
                break
            time.sleep(2)
        self._echo_progress(log, seen, t0)
        final = (status or "UNKNOWN").split(":")[-1]
        if not (status or "").startswith("FINISHED"):
            raise PocError(f"job {job_id} still {status} after {timeout:.0f} s")
        if final != "COMPLETED":
            raise PocError(f"job {job_id} ended with status {status} (server log: {log})")
        return final

    def _echo_progress(self, log: Path, seen: int, t0: float) -> int:
        """Echo the progress lines the server's job log gained since byte ``seen``; returns the new offset."""
        if not log.is_file():
            return seen
        with open(log, errors="replace") as f:
            f.seek(seen)
            text = f.read()
        for line in text.splitlines():
            m = PROGRESS.search(line)
            if m:
                self.echo(f"  [{time.monotonic() - t0:5.0f} s] {m.group(1).strip()}")
        return seen + len(text.encode())

    def abort(self, job_id: str) -> None:
        self.nvflare("job", "abort", job_id, "--force", timeout=120, check=False)

    def download(self, job_id: str, output: str | Path, kit_id: str | None = None) -> dict[str, Path]:
        """Download the server's result of a finished job (``ProdEnv``) into ``output/<job id>``; returns the paths
        of its global/best model and cross-site results."""
        output = Path(output).resolve()
        output.mkdir(parents=True, exist_ok=True)
        with _quiet():
            got = self.prod_env(kit_id).get_job_result(job_id, timeout=60)
        if not got or not Path(got).is_dir():
            raise PocError(f"job {job_id}: no result to download (status: not finished?)")
        dest = output / job_id
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(got, dest)
        ws = dest / "workspace" if (dest / "workspace").is_dir() else dest
        res = {"workspace": ws, "global_model": ws / "app_server" / "FL_global_model.pt",
               "best_model": ws / "app_server" / "best_FL_global_model.pt",
               "cross_site": ws / "cross_site_val" / "cross_val_results.json", "log": ws / "log.txt"}
        if not res["global_model"].is_file():
            raise PocError(f"job {job_id}: no global model in the download {ws}")
        self.echo(f"POC: job {job_id} downloaded to {dest}")
        return res

    def stop(self, timeout: float = 60) -> None:
        """Stop the system of a workspace that is fedgin's (``check``; nothing to do if it does not exist).

        Takes the processes it may signal first (``_targets``: the recorded ones that are still the same processes,
        and their descendants), then runs ``nvflare poc stop``, waits up to ``timeout`` s, and SIGKILLs only the
        survivors of that set. Processes running from the kits but outside it are reported, not signalled.
        """
        import psutil

        if not self.check("stop"):
            self.echo(f"POC: no workspace at {self.workspace}: nothing to stop")
            return
        targets = self._targets()
        self.echo("POC: stopping")
        self.nvflare("poc", "stop", timeout=timeout + 60, check=False)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = []
        for p in targets:
            if _alive(p) and p.pid not in _protected():
                try:
                    p.kill()  # psutil refuses a reused PID
                    killed.append(p.pid)
                except psutil.Error:
                    pass
        if killed:
            self.echo(f"POC: killed {len(killed)} process(es) that outlived `nvflare poc stop`: {killed}")
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not any(_alive(p) for p in targets):
            (self.workspace / PIDS_FILE).unlink(missing_ok=True)
        others = [pid for pid in self.processes() if pid not in {p.pid for p in targets}]
        if others:
            self.echo(f"POC: not started by `fedgin poc start`, left running: {others}")

    def clean(self) -> None:
        """Remove a workspace that is fedgin's (``check``), once nothing runs from it, and the
        ``<workspace>.project.yml`` beside it if fedgin wrote it (its first line is fedgin's header)."""
        if not self.check("clean"):
            self.echo(f"POC: no workspace at {self.workspace}: nothing to clean")
            return
        if self.processes():
            raise PocError(f"POC processes still run from {self.workspace}: `fedgin poc stop` first")
        self.nvflare("poc", "clean", timeout=120, check=False)  # also drops its kits from ~/.nvflare/config.conf
        if self.workspace.exists():
            shutil.rmtree(self.workspace)
        if self._ours(self.project_copy):
            self.project_copy.unlink()
        self.echo(f"POC: removed {self.workspace}")
