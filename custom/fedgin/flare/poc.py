"""POC mode: the production setup (``provisioning/project.yml``) on one workstation, driven by NVFlare's own CLI.

``nvflare poc prepare -i project.yml`` provisions real startup kits (mutual TLS, the FedGIN allow-list, ``byoc``
denied) with every host set to ``localhost``; each site's kit gets its own ``local/fedgin_site.json`` pointing at
that site's prepared data; ``nvflare poc start`` runs the server and one process per site; jobs are written without
code (``--code site``: the sites run the installed ``fedgin``), submitted and signed with ``nvflare job submit``,
and their results fetched with ``nvflare job download``. Nothing here imitates NVFlare: every step is its CLI.

The POC workspace is ``$NVFLARE_POC_WORKSPACE`` or ``workspace/poc``; ``nvflare poc prepare`` also registers the
admin kits in ``~/.nvflare/config.conf`` (set ``HOME`` to keep that away from your own configuration).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import fedgin
from fedgin.flare.executor import SITE_CONFIG_FILE
from fedgin.flare.simulate import nvflare_command, threads_per_process

__all__ = ["Poc", "PocError", "default_project", "default_workspace"]

PROGRESS = re.compile(r"(Round \d+ (?:started|finished)\.|REJECTED update of .*|Ignore the result from .*|"
                      r"Beginning model validation.*|received dead job report for client .*)")


class PocError(RuntimeError):
    """An NVFlare POC command failed or a job did not complete."""


def default_project() -> Path:
    """``provisioning/project.yml`` of the repository this package was installed from."""
    return Path(fedgin.__file__).resolve().parents[2] / "provisioning" / "project.yml"


def default_workspace() -> Path:
    return Path(os.environ.get("NVFLARE_POC_WORKSPACE") or "workspace/poc").resolve()


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
        self.workspace = Path(workspace).resolve() if workspace else default_workspace()
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
        if self.processes():
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

        used = self.workspace.parent / f"{self.workspace.name}.project.yml"  # outside: poc prepare wipes it
        used.write_text(f"# written by fedgin poc prepare from {project}\n" + yaml.safe_dump(spec, sort_keys=False))
        self.echo(f"POC: provisioning {len(clients)} sites ({', '.join(clients)}) from {project} "
                  f"into {self.workspace}")
        self.nvflare("poc", "prepare", "-i", str(used), "--force", timeout=120)
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
        """Start the server and every site (returns once they are connected)."""
        state = self.state()
        self.echo(f"POC: starting the server (localhost:{state['port']}) and {', '.join(state['sites'])}")
        self.nvflare("poc", "start", "--timeout", str(int(timeout)), timeout=timeout + 60,
                     env=self._threads_env(len(state["sites"])))

    def submit(self, job: str | Path, kit_id: str | None = None) -> str:
        """Submit (and sign) a job folder; returns the job id."""
        args = ["job", "submit", "-j", str(job)] + (["--kit-id", kit_id] if kit_id else [])
        out = self.nvflare(*args, timeout=180)
        m = re.search(r"job_id:\s*(\S+)", out)
        if not m:
            raise PocError(f"no job id in the output of `nvflare job submit`:\n{out.strip()[-2000:]}")
        self.echo(f"POC: submitted {job} as job {m.group(1)}")
        return m.group(1)

    def wait(self, job_id: str, timeout: float = 1800) -> str:
        """Wait for the job to end, echoing its rounds from the server's log; returns its final status.

        Raises:
            PocError: the job did not complete (failed, aborted or still running after ``timeout``).
        """
        self.echo(f"POC: waiting for job {job_id} (at most {timeout:.0f} s)")
        cmd = nvflare_command("job", "wait", job_id, "--timeout", str(int(timeout)))
        log = self.kit(self.state()["server"]) / job_id / "log.txt"
        seen = 0
        with subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) as p:
            t0 = time.monotonic()
            while p.poll() is None:
                seen = self._echo_progress(log, seen, t0)
                time.sleep(1)
            out = p.stdout.read() if p.stdout else ""
        self._echo_progress(log, seen, t0)
        m = re.search(r"status:\s*(\S+)", out)
        status = m.group(1) if m else "UNKNOWN"
        if status != "COMPLETED":
            raise PocError(f"job {job_id} ended with status {status}:\n{out.strip()[-2000:]}")
        return status

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

    def download(self, job_id: str, output: str | Path) -> dict[str, Path]:
        """Download the server's result of a job; returns the paths of its global/best model and cross-site results."""
        output = Path(output).resolve()
        output.mkdir(parents=True, exist_ok=True)
        self.nvflare("job", "download", job_id, "-o", str(output), timeout=300)
        ws = output / job_id / "workspace"
        res = {"workspace": ws, "global_model": ws / "app_server" / "FL_global_model.pt",
               "best_model": ws / "app_server" / "best_FL_global_model.pt",
               "cross_site": ws / "cross_site_val" / "cross_val_results.json", "log": ws / "log.txt"}
        if not res["global_model"].is_file():
            raise PocError(f"job {job_id}: no global model in the download {ws}")
        self.echo(f"POC: job {job_id} downloaded to {output / job_id}")
        return res

    def processes(self) -> list[int]:
        """PIDs of processes running from this POC workspace."""
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:
                text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if str(self.workspace) in text and p.pid != os.getpid():
                found.append(p.pid)
        return found

    def stop(self, timeout: float = 60) -> None:
        """Stop the system; processes still running from the workspace after ``timeout`` are killed."""
        if self.state_file.is_file():
            self.echo("POC: stopping")
            self.nvflare("poc", "stop", timeout=timeout + 60, check=False)
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(1)
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            self.echo(f"POC: killed {len(left)} process(es) that outlived `nvflare poc stop`")

    def clean(self) -> None:
        """Remove the POC workspace (the system must be stopped)."""
        if self.processes():
            raise PocError(f"POC processes still run from {self.workspace}: `fedgin poc stop` first")
        if self.workspace.exists():
            self.nvflare("poc", "clean", timeout=120, check=False)
        if self.workspace.exists():
            shutil.rmtree(self.workspace)
        self.echo(f"POC: removed {self.workspace}")
