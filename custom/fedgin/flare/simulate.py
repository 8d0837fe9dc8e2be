"""Run a job in the real ``nvflare simulator`` (a subprocess) and check what it produced.

The simulator exits 0 even when a client crashes, so success is judged on its artifacts: the global model, the
cross-site results and logs free of tracebacks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

__all__ = ["SimulationResult", "run_simulator", "find_artifacts", "SimulationError", "nvflare_command",
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
    ws = Path(workspace)
    app = ws / "server" / "simulate_job" / "app_server"
    return SimulationResult(
        global_model=app / "FL_global_model.pt",
        best_model=app / "best_FL_global_model.pt",
        cross_site=ws / "server" / "simulate_job" / "cross_site_val" / "cross_val_results.json",
        tb_events=ws / "server" / "simulate_job" / "tb_events",
        logs=sorted(ws.glob("*/log.txt")) + sorted(ws.glob("*/simulate_job/**/log.txt")),
    )


def run_simulator(
    job: str | Path,
    workspace: str | Path,
    clients: list[str],
    threads: int | None = None,
    log_file: str | Path | None = None,
    echo: Callable[[str], None] | None = print,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> SimulationResult:
    """``nvflare simulator JOB -w WORKSPACE -c CLIENTS -t THREADS``, streaming its progress lines to ``echo``.

    Raises:
        SimulationError: non-zero exit, missing global model or cross-site results, or a Traceback in a log.
    """
    ws = Path(workspace)
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    log_path = Path(log_file) if log_file else ws.parent / f"{ws.name}_simulator.log"
    cmd = nvflare_command("simulator", str(job), "-w", str(ws), "-c", ",".join(clients), "-t",
                          str(threads or len(clients)))
    run_env = {**os.environ, **(env or {})}
    warning = oversubscription(run_env.get("OMP_NUM_THREADS"), threads or len(clients))
    if warning and echo is not None:
        echo(warning)
    run_env.setdefault("OMP_NUM_THREADS", threads_per_process(threads or len(clients)))  # parallel clients
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo is not None:
                m = PROGRESS.search(line)
                if m:
                    echo(f"  [{time.perf_counter() - t0:6.0f} s] {m.group(1).strip()}")
            if timeout and time.perf_counter() - t0 > timeout:
                proc.kill()
                raise SimulationError(f"simulator exceeded {timeout} s; log: {log_path}")
        rc = proc.wait()
    res = find_artifacts(ws)
    res["simulator_log"] = log_path
    res["seconds"] = time.perf_counter() - t0
    problems = []
    if rc != 0:
        problems.append(f"exit code {rc}")
    for key in ("global_model", "cross_site"):
        if not Path(res[key]).is_file():
            problems.append(f"missing {res[key]}")
    bad = [str(p) for p in [log_path, *res["logs"]] if "Traceback" in Path(p).read_text(errors="replace")]
    if bad:
        problems.append(f"Traceback in {', '.join(bad)}")
    if problems:
        raise SimulationError("nvflare simulator failed: " + "; ".join(problems) + f" (full log: {log_path})")
    return res
