"""Run a FedGIN job in NVFlare's simulator and check what it produced.

A ``FedGINRecipe`` runs through NVFlare 2.9's ``SimEnv`` (``recipe.execute``); an exported job folder (for example
one a test altered) runs in the same simulator process NVFlare's ``SimEnv`` starts. Either way the simulator's
output goes to a log file, its round lines are echoed, and success is judged on the artifacts as well as on the
exit status ``SimEnv`` reports: the simulator exits 0 even when a client crashes (the global model, the cross-site
results and logs free of tracebacks are checked).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["SimulationResult", "run_simulator", "find_artifacts", "SimulationError", "nvflare_command", "simulator_policy",
           "mlflow_store",
           "threads_per_process"]

PROGRESS = re.compile(r"(round \d+/\d+: .*|Round \d+ started\.|cross.?site.*validat.*|validated model of .*|"
                      r"REJECTED update of .*)", re.I)


def nvflare_command(*args: str) -> list[str]:
    """``nvflare ARGS`` as an argv list (the console script, else ``python -m nvflare.cli``)."""
    exe = shutil.which("nvflare")
    return ([exe] if exe else [sys.executable, "-m", "nvflare.cli"]) + list(args)


def threads_per_process(processes: int) -> str:
    """``OMP_NUM_THREADS`` for ``processes`` training processes sharing this machine's cores. Without it every
    process starts one OpenMP thread per core and the oversubscribed threads run ~10x slower."""
    return str(max(1, (os.cpu_count() or 1) // max(1, processes)))


def oversubscription(omp_threads: str | None, processes: int, cores: int | None = None) -> str | None:
    """A warning when an ``OMP_NUM_THREADS`` the user set gives ``processes`` parallel clients more threads than
    the machine has cores (measured: 3.7 instead of 281 slices/s with 2 clients × 2 threads on 2 cores); None
    when it is unset, unreadable or fits."""
    cores = cores or os.cpu_count() or 1
    try:
        n = int(omp_threads) if omp_threads else 0
    except ValueError:
        return None
    if n * processes <= cores:
        return None
    return (f"warning: OMP_NUM_THREADS={n} for each of {processes} parallel clients is {n * processes} threads on "
            f"{cores} cores; oversubscribed training runs 10-100x slower. Unset it (each client then gets "
            f"{threads_per_process(processes)}) or set it to {threads_per_process(processes)}.")


class SimulationError(RuntimeError):
    """The simulator ran but did not produce a complete, error-free result."""


class SimulationResult(dict):
    """Paths of the artifacts: ``global_model``, ``best_model``, ``cross_site``, ``tb_events``, ``logs``."""


def find_artifacts(workspace: str | Path) -> SimulationResult:
    """The artifacts' paths in a simulator workspace (``<workspace>/server/simulate_job/...``)."""
    ws = Path(workspace)
    app = ws / "server" / "simulate_job" / "app_server"
    return SimulationResult(
        workspace=ws,
        global_model=app / "FL_global_model.pt",
        best_model=app / "best_FL_global_model.pt",
        cross_site=ws / "server" / "simulate_job" / "cross_site_val" / "cross_val_results.json",
        tb_events=ws / "server" / "simulate_job" / "tb_events",
        logs=sorted(ws.glob("*/log.txt")) + sorted(ws.glob("*/simulate_job/**/log.txt")),
    )


class _Progress(threading.Thread):
    """Echoes the progress lines a growing log file gains, until stopped; kills the simulator's processes once
    ``timeout`` seconds have passed."""

    def __init__(self, log: Path, echo: Callable[[str], None] | None, timeout: float | None) -> None:
        super().__init__(daemon=True)
        self.log, self.echo, self.timeout = log, echo, timeout
        self.t0, self.seen, self.timed_out = time.perf_counter(), 0, False
        self.done = threading.Event()

    def _poll(self) -> None:
        if not self.log.is_file():
            return
        with open(self.log, errors="replace") as f:
            f.seek(self.seen)
            text = f.read()
        complete = text[:text.rfind("\n") + 1]
        self.seen += len(complete.encode())
        for line in complete.splitlines():
            m = PROGRESS.search(line)
            if m and self.echo is not None:
                self.echo(f"  [{time.perf_counter() - self.t0:6.0f} s] {m.group(1).strip()}")

    def run(self) -> None:
        while not self.done.wait(1.0):
            self._poll()
            if self.timeout and time.perf_counter() - self.t0 > self.timeout and not self.timed_out:
                self.timed_out = True
                _kill_children()
        self._poll()


def mlflow_store(workspace: str | Path) -> str:
    """The MLflow tracking URI NVFlare's ``MLflowReceiver`` writes to when the job gives none: the store in the
    server's run folder of a simulator workspace."""
    run = Path(workspace) / "server" / "simulate_job"
    found = sorted(run.rglob("mlflow.db")) or sorted(run.rglob("mlruns"))
    if not found:
        raise FileNotFoundError(f"{run}: no MLflow store (was the job run with tracking mlflow or both?)")
    f = found[0]
    return f"sqlite:///{f}" if f.suffix == ".db" else f.resolve().as_uri()


def _kill_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.contextmanager
def _output_to(log_path: Path, env: dict[str, str]) -> Iterator[Callable[[str], None]]:
    """Send this process's file descriptors 1 and 2 (which the simulator's processes inherit) to ``log_path`` and
    set ``env`` in ``os.environ`` while inside; yields a writer to the real standard output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    old_env = {k: os.environ.get(k) for k in env}
    real = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    os.environ.update(env)
    try:
        yield lambda line: print(line, file=real, flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        real.close()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def simulator_policy(ws: Path) -> None:
    """The sites' and the server's class allow-list (``fedgin.flare.site_policy``) in the simulator workspace's
    ``local/resources.json``: ``SimEnv`` would otherwise install NVFlare's default list, which names no fedgin
    class."""
    import json

    from fedgin.flare.site_policy import allow_list

    local = ws / "local"
    local.mkdir(parents=True, exist_ok=True)
    classes = sorted(set(allow_list("server")) | set(allow_list("client")))
    (local / "resources.json").write_text(json.dumps({"format_version": 2, "class_allow_list": classes}, indent=2))


def run_in_simenv(recipe: Any, clients: list[str], workspace: str | Path) -> Any:
    """``recipe.execute(SimEnv(...))`` as the ``jobs/*/job.py`` entries run it: fedgin's class allow-list in the
    job's workspace (``simulator_policy``) and each parallel client its share of the cores (``OMP_NUM_THREADS``,
    unless set: without it each starts one thread per core and runs 10-30x slower); returns NVFlare's ``Run``."""
    from nvflare.recipe import SimEnv

    workspace = Path(workspace).resolve()
    simulator_policy(workspace / recipe.name)
    os.environ.setdefault("OMP_NUM_THREADS", threads_per_process(len(clients)))
    return recipe.execute(SimEnv(clients=list(clients), workspace_root=str(workspace)))


def run_simulator(
    job: Any,
    workspace: str | Path,
    clients: list[str],
    threads: int | None = None,
    log_file: str | Path | None = None,
    echo: Callable[[str], None] | None = print,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    expect: tuple[str, ...] = ("global_model", "cross_site"),
) -> SimulationResult:
    """Run ``job`` (a ``FedGINRecipe``, through ``SimEnv``; or an exported job folder) with these clients, at most
    ``threads`` of them at a time, streaming its round lines to ``echo``.

    The simulator's workspace is ``<workspace>/<job name>`` (``SimEnv``'s layout; a folder's name is its job
    name), returned as ``result["workspace"]``; ``workspace`` is emptied first. ``expect``: the artefacts the run
    must leave (keys of ``find_artifacts``, or paths relative to the server's run folder ``server/simulate_job``).

    Raises:
        SimulationError: a failed run, a timeout, a missing global model or cross-site results, or a Traceback in
            a log.
    """
    root = Path(workspace)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    folder = None if hasattr(job, "execute") else Path(job)
    name = folder.name if folder is not None else job.name
    ws = root / name
    log_path = Path(log_file) if log_file else root.parent / f"{root.name}_simulator.log"
    log_path.write_text("")
    n = threads or len(clients)
    run_env = {**(env or {})}
    warning = oversubscription(run_env.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS")), n)
    if warning and echo is not None:
        echo(warning)
    if "OMP_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in run_env:
        run_env["OMP_NUM_THREADS"] = threads_per_process(n)  # parallel clients share the cores
    progress = _Progress(log_path, echo, timeout)
    t0 = time.perf_counter()
    failure = None
    if folder is not None:
        progress.start()
        with open(log_path, "ab") as log:
            cmd = [sys.executable, "-m", "nvflare.private.fed.app.simulator.simulator", str(folder), "-w", str(ws),
                   "-c", ",".join(clients), "-t", str(n)]
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **run_env}).returncode
        failure = f"exit code {rc}" if rc != 0 else None
    else:
        from nvflare.recipe import SimEnv

        simulator_policy(ws)
        with _output_to(log_path, run_env) as real_echo:
            progress.echo = (lambda line: real_echo(line)) if echo is print else echo
            progress.start()
            try:
                job.execute(SimEnv(clients=list(clients), num_threads=n, workspace_root=str(root)))
            except RuntimeError as e:  # SimEnv: the simulator process failed
                failure = str(e).splitlines()[0]
    progress.done.set()
    progress.join()
    res = find_artifacts(ws)
    res["simulator_log"] = log_path
    res["seconds"] = time.perf_counter() - t0
    problems = [f"exceeded {timeout} s"] if progress.timed_out else []
    if failure:
        problems.append(failure)
    for key in expect:
        path = Path(res[key]) if key in res else ws / "server" / "simulate_job" / key
        if not path.is_file():
            problems.append(f"missing {path}")
    bad = [str(p) for p in [log_path, *res["logs"]] if "Traceback" in Path(p).read_text(errors="replace")]
    if bad:
        problems.append(f"Traceback in {', '.join(bad)}")
    if problems:
        raise SimulationError("nvflare simulator failed: " + "; ".join(problems) + f" (full log: {log_path})")
    return res
