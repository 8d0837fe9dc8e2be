"""The production rehearsal: the FedGIN federation from distributed-provisioned kits, one host per participant.

Every participant of ``provisioning/project.yml`` gets its own network namespace (``fedgin.flare.netns``) with its
own address; the server is reached by its FQDN through each host's own hosts file; each kit is started with its
own ``startup/start.sh`` after ``nvflare preflight-check``; people act through their admin kits (FLARE API
``Session``, ``ProdEnv`` for the FedGIN recipe) from their own hosts. ``Rehearsal`` provides these steps;
``rehearse()`` runs the whole rehearsal (a federated job, the attacks, the resource check, a server crash and the
documented resume) and returns what happened, step by step. ``fedgin rehearse`` and ``provisioning/rehearse.sh``
run it for an IT team.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from fedgin.flare import distributed_provision
from fedgin.flare.kit_setup import setup_server_storage, setup_site
from fedgin.flare.netns import Hosts

__all__ = ["Rehearsal", "Step", "RehearsalError", "rehearse", "TOY_JOB"]

#: a job small enough for a rehearsal on 2 CPU cores (the task of ``write_toy_site``-like data: one class)
TOY_JOB = {"channels": [8, 16, 32], "strides": [2, 2], "local_steps": 2, "size_px": [32, 32], "batch_size": 4,
           "method": "gin", "cse_submit_model_timeout": 30, "cse_validation_timeout": 60}


class RehearsalError(RuntimeError):
    pass


@dataclass
class Step:
    """One step of the rehearsal: ``refused`` is set for an attack (True = the system refused it)."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    evidence: list[str] = field(default_factory=list)
    refused: bool | None = None


def _lines(path: Path, pattern: str) -> list[str]:
    if not path.is_file():
        return []
    rx = re.compile(pattern)
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if rx.search(line)]


class Rehearsal:
    """The federation of ``project_file`` on namespace hosts under ``root``.

    Args:
        root: working folder (one sub-folder per participant's machine).
        datalists: ``{site: datalist.json}`` for every client of the project.
        project_file: default ``provisioning/project.yml``.
        echo: progress lines (``None``: quiet).
    """

    def __init__(self, root: str | Path, datalists: dict[str, str | Path], project_file: str | Path | None = None,
                 echo: Callable[[str], None] | None = print):
        from fedgin.flare.poc import default_project

        self.root = Path(root).resolve()
        self.project_file = Path(project_file or default_project()).resolve()
        self.project = yaml.safe_load(self.project_file.read_text())
        parts = self.project["participants"]
        self.server = next(p["name"] for p in parts if p["type"] == "server")
        self.sites = [p["name"] for p in parts if p["type"] == "client"]
        missing = sorted(set(self.sites) - set(datalists))
        if missing:
            raise RehearsalError(f"no datalist for the site(s) {missing} of {self.project_file}")
        self.datalists = {s: Path(datalists[s]).resolve() for s in self.sites}
        self.people = {p["name"]: p for p in parts if p["type"] == "admin"
                       and p.get("role") in distributed_provision.REQUESTABLE_ROLES}
        self.echo = echo or (lambda _: None)
        self.kits: dict[str, Path] = {}
        self.hosts = {self.server: "server", **{s: s for s in self.sites},
                      **{n: f"adm{i}" for i, n in enumerate(self.people)},
                      "rogue": "rogue", "twin": "twin", "stranger": "stranger"}
        self.net: Hosts | None = None

    # ---- provisioning -------------------------------------------------------------------------------------------
    def provision(self) -> dict[str, Path]:
        """Keys made at each participant's machine (``distributed_provision``), plus the attackers' kits: a
        ``site-ct`` of another root CA (``rogue``) and a ``site-x`` signed by this CA but in no job (``stranger``)."""
        self.kits = distributed_provision.provision(self.project_file, self.root / "machines")
        other = distributed_provision.provision(self.project_file, self.root / "rogue", names=[self.sites[0]])
        self.kits["rogue"] = other[self.sites[0]]
        extra = yaml.safe_load(self.project_file.read_text())
        extra["participants"].append({"name": "site-x", "type": "client", "org": "hospital_a"})
        stranger_file = self.root / "stranger-project.yml"
        stranger_file.write_text(yaml.safe_dump(extra, sort_keys=False))
        self.kits["stranger"] = distributed_provision.provision(
            stranger_file, self.root / "stranger", names=["site-x"],
            ca_dir=self.root / "machines" / "project-admin" / "ca")["site-x"]
        # a real site's kit (site-mri: its own valid certificate) made to claim another site's name (site-ct)
        impostor, victim = self.sites[1], self.sites[0]
        twin = self.root / "twin" / impostor / impostor  # its machine: root/twin/<impostor>
        if twin.exists():
            shutil.rmtree(twin)
        shutil.copytree(self.kits[impostor], twin)
        cfg = twin / "startup" / "fed_client.json"
        cfg.write_text(cfg.read_text().replace(f'"fqsn": "{impostor}"', f'"fqsn": "{victim}"'))
        sub = twin / "startup" / "sub_start.sh"
        sub.write_text(sub.read_text().replace(f"uid={impostor} ", f"uid={victim} "))
        self.kits["twin"] = twin
        for site in self.sites:
            setup_site(self.kits[site], self.datalists[site])
        setup_site(self.kits["rogue"], self.datalists[self.sites[0]])
        setup_site(self.kits["twin"], self.datalists[impostor])
        setup_site(self.kits["stranger"], self.datalists[self.sites[0]])
        setup_server_storage(self.kits[self.server])
        return self.kits

    # ---- hosts and processes --------------------------------------------------------------------------------------
    def __enter__(self) -> "Rehearsal":
        self.net = Hosts(list(self.hosts.values()), names={self.server: "server"}, tag=None)
        self.net.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.net:
            self.net.close()

    def machine(self, who: str) -> Path:
        kit = self.kits[who]
        return next(p for p in kit.parents if p.parent.name in ("machines", "rogue", "stranger", "twin"))

    def env(self, who: str, threads: int = 1) -> dict[str, str]:
        home = self.machine(who) / "home"
        home.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NVFL", "OMP_", "MKL_"))}
        return {**env, "HOME": str(home), "PATH": path, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}

    def preflight(self, who: str) -> subprocess.CompletedProcess:
        """``nvflare preflight-check -p <kit>`` on ``who``'s host (a site or admin needs the server up)."""
        cmd = [sys.executable, "-m", "nvflare.cli", "preflight-check", "-p", str(self.kits[who])]
        if os.geteuid() == 0:  # its dry run must start within NVFlare's fixed 5 s: ahead of other work on the CPU
            cmd = ["nice", "-n", "-10", *cmd]
        return self.net.run(self.hosts[who], cmd, env=self.env(who), cwd=self.machine(who), capture_output=True,
                            text=True, timeout=180)

    def start(self, who: str) -> None:
        """``startup/start.sh`` of ``who``'s kit on its host (it starts NVFlare's restart loop in the background)."""
        kit = self.kits[who]
        with open(kit / "start.out", "ab") as out:
            self.net.run(self.hosts[who], ["bash", str(kit / "startup" / "start.sh")], env=self.env(who), cwd=kit,
                         stdout=out, stderr=subprocess.STDOUT, timeout=60, check=True)

    def crash(self, who: str) -> list[int]:
        """SIGKILL every process on ``who``'s host: the machine dies."""
        return self.net.kill(self.hosts[who])

    def admin(self, person: str, ops: list[dict], timeout: float = 900) -> list[dict]:
        """``fedgin.flare.admin_ops`` with ``person``'s kit, on their host; the answers, one per operation."""
        machine = self.machine(person)
        ops_file = machine / "ops.json"
        ops_file.write_text(json.dumps(ops))
        cmd = [sys.executable, "-m", "fedgin.flare.admin_ops", str(self.kits[person]), str(ops_file)]
        r = self.net.run(self.hosts[person], cmd, env=self.env(person), cwd=machine, capture_output=True, text=True,
                         timeout=timeout)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RehearsalError(f"{person}: admin session failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")

    def one(self, person: str, op: dict, timeout: float = 900) -> dict:
        return self.admin(person, [op], timeout)[0]

    def connected(self, person: str) -> list[str]:
        answer = self.one(person, {"op": "status"}, timeout=120)
        return answer["result"]["clients"] if answer["ok"] else []

    def wait_connected(self, person: str, sites: list[str], timeout: float = 180) -> list[str]:
        deadline = time.monotonic() + timeout
        clients: list[str] = []
        while time.monotonic() < deadline:
            try:
                clients = self.connected(person)
            except RehearsalError:
                clients = []
            if set(sites) <= set(clients):
                return clients
            time.sleep(3)
        raise RehearsalError(f"after {timeout:.0f} s the server lists {clients}, not {sites}")

    def server_log(self, job_id: str | None = None) -> Path:
        kit = self.kits[self.server]
        return kit / job_id / "log.txt" if job_id else kit / "log.txt"

    def site_log(self, who: str, job_id: str | None = None) -> Path:
        kit = self.kits[who]
        return kit / job_id / "log.txt" if job_id else kit / "log.txt"

    def wait_log(self, path: Path, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RehearsalError(f"{text!r} not in {path} after {timeout:.0f} s")

    def lead(self, org_index: int = 0) -> str:
        leads = [n for n, p in self.people.items() if p["role"] == "lead"]
        return leads[org_index]

    def org_admin(self, org: str) -> str:
        return next(n for n, p in self.people.items() if p["role"] == "org_admin" and p["org"] == org)


# ---- the rehearsal ---------------------------------------------------------------------------------------------------
def _timed(steps: list[Step], echo, name: str, fn: Callable[[], Step]) -> Step:
    t = time.monotonic()
    echo(f"[rehearsal] {name} ...")
    try:
        step = fn()
    except Exception as e:  # a step that broke is a result too; the rest still runs where it can
        step = Step(name, False, f"{type(e).__name__}: {e}")
    step.name, step.seconds = name, time.monotonic() - t
    mark = "refused" if step.refused else ("NOT REFUSED" if step.refused is False else ("ok" if step.ok else "FAILED"))
    echo(f"[rehearsal] {name}: {mark} ({step.seconds:.0f} s) {step.detail}")
    steps.append(step)
    return step


def _check_result(r: Rehearsal, download: Path, job_id: str, rounds: int) -> tuple[bool, str, dict]:
    from fedgin.flare.persistor import read_round

    ws = download / "workspace" if (download / "workspace").is_dir() else download
    model = read_round(ws / "app_server" / "FL_global_model.pt")
    cross = json.loads((ws / "cross_site_val" / "cross_val_results.json").read_text())
    audits = {s: r.kits[s] / job_id / "outgoing_audit.jsonl" for s in r.sites}
    sent = {s: sum(1 for line in p.read_text().splitlines() if '"train"' in line) if p.is_file() else 0
            for s, p in audits.items()}
    ok = (model["round"] == rounds - 1 and set(cross) == set(r.sites) and all(n == rounds for n in sent.values())
          and "Traceback" not in (ws / "log.txt").read_text(errors="replace"))
    dice = {s: cross[s].get("SRV_FL_global_model.pt", {}).get("val_dice") for s in cross}
    return ok, f"round {model['round']}, cross-site Dice {dice}, train updates sent {sent}", model


def rehearse(root: str | Path, datalists: dict[str, str | Path], project_file: str | Path | None = None,
             values: dict[str, Any] | None = None, rounds: int = 3, echo: Callable[[str], None] | None = print
             ) -> list[Step]:
    """Run the whole rehearsal; returns its steps (see ``provisioning/README.md``, section Rehearsal)."""
    echo = echo or (lambda _: None)
    steps: list[Step] = []
    values = {**TOY_JOB, **(values or {})}
    rh = Rehearsal(root, datalists, project_file, echo=echo)
    _timed(steps, echo, "distributed provisioning", lambda: Step("", True, f"{len(rh.provision())} kits, keys made "
                                                              "in each machine's own folder"))
    with rh:
        up = _timed(steps, echo, "server: preflight and start", lambda: _start_server(rh))
        if up.ok:
            up = _timed(steps, echo, "sites: preflight and start", lambda: _start_sites(rh))
        if not up.ok:  # nothing else can run: stop here rather than wait out every later step's timeout
            left = rh.net.leftovers
            rh.net.close()
            steps.append(Step("clean-up", not any(left().values()), f"left behind: {left()}"))
            return steps
        lead_a, lead_b = rh.lead(0), rh.lead(1)
        values = {**values, "sites": rh.sites}  # the deploy map: a site the job does not name never gets it
        _timed(steps, echo, "site-x (not in the project, this CA's certificate) connects",
               lambda: _stranger_connects(rh, lead_a))
        job = _timed(steps, echo, "federated job", lambda: _federated_job(rh, lead_a, values, rounds))
        _timed(steps, echo, "attack: site not in the project takes part", lambda: _stranger_took_part(rh, job))
        _timed(steps, echo, "attack: client of another root CA", lambda: _foreign_ca(rh, lead_a))
        _timed(steps, echo, "attack: second connection with a connected site's name", lambda: _twin(rh, lead_a))
        _timed(steps, echo, "attack: job with custom code", lambda: _byoc(rh, lead_a, values))
        _timed(steps, echo, "attack: component not on the allow-list", lambda: _not_allowed(rh, lead_a, values))
        _timed(steps, echo, "attack: job altered after signing", lambda: _tampered(rh, lead_a, values))
        gpu = _timed(steps, echo, "resources: a job asking for a GPU", lambda: _gpu_job(rh, lead_b, values))
        if gpu.ok:
            _timed(steps, echo, "attack: another organisation's job", lambda: _cross_org(rh, gpu.evidence[0], lead_b))
        _timed(steps, echo, "attack: lead doing an org admin's work", lambda: _lead_operates(rh))
        if job.ok:
            _timed(steps, echo, "fault: server killed mid-job, resumed", lambda: _server_restart(rh, lead_a, values))
        leftovers = rh.net.leftovers
    left = leftovers()
    steps.append(Step("clean-up", not any(left.values()), f"left behind: {left}"))
    return steps


def _start_server(r: Rehearsal) -> Step:
    pre = r.preflight(r.server)
    if pre.returncode != 0:
        return Step("", False, f"preflight-check failed: {(pre.stdout + pre.stderr)[-1500:]}")
    r.start(r.server)
    r.wait_connected(r.lead(0), [], timeout=120)
    return Step("", True, "preflight passed; server up, reached by its FQDN", evidence=[pre.stdout[-400:]])


def _start_sites(r: Rehearsal) -> Step:
    evidence = []
    for who in r.sites + list(r.people):
        for attempt in range(1, 4):  # NVFlare's dry run gets a fixed 5 s to start, which a busy machine can miss
            pre = r.preflight(who)
            if pre.returncode == 0 or "Check server available | PASSED" not in pre.stdout.replace("  ", " "):
                break
            time.sleep(5)
        if pre.returncode != 0:
            return Step("", False, f"{who}: preflight-check failed ({attempt} tries): "
                                   f"{(pre.stdout + pre.stderr)[-1500:]}")
        evidence.append(f"{who}: preflight passed" + (f" (try {attempt}: the dry run missed its 5 s before)"
                                                      if attempt > 1 else ""))
    time.sleep(2)
    for site in r.sites:
        r.start(site)
    clients = r.wait_connected(r.lead(0), r.sites, timeout=180)
    return Step("", True, f"connected: {clients}", evidence=evidence)


def _federated_job(r: Rehearsal, lead: str, values: dict, rounds: int) -> Step:
    answers = r.admin(lead, [{"op": "recipe", "values": {**values, "num_rounds": rounds}, "name": "rehearsal"}])
    if not answers[0]["ok"]:
        return Step("", False, f"submit refused: {answers[0]['error']}")
    job_id = answers[0]["result"]
    to = r.machine(lead) / "downloads"
    done = r.admin(lead, [{"op": "wait", "job_id": job_id, "timeout": 900},
                          {"op": "download", "job_id": job_id, "to": str(to)}])
    if done[0].get("result") != "FINISHED:COMPLETED" or not done[1]["ok"]:
        return Step("", False, f"job {job_id}: {done}")
    ok, detail, _ = _check_result(r, Path(done[1]["result"]), job_id, rounds)
    return Step("", ok, f"job {job_id}: {detail}", evidence=[job_id])


def _since(path: Path, offset: int, pattern: str) -> list[str]:
    """Lines matching ``pattern`` that ``path`` gained after byte ``offset``."""
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    rx = re.compile(pattern)
    return [line.strip() for line in text.splitlines() if rx.search(line)]


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _intruder(r: Rehearsal, who: str, lead: str, wait: float, expect: str) -> Step:
    """Start ``who``'s kit on its host for ``wait`` s; refused if the server never lists it beside the real sites,
    no real site was displaced (re-registered) and the server or the intruder logged ``expect``."""
    server_log = r.server_log()
    at = _size(server_log)
    r.start(who)
    time.sleep(wait)
    clients = r.connected(lead)
    r.crash(who)
    displaced = _since(server_log, at, r"already registered|New client (" + "|".join(map(re.escape, r.sites)) + ")@")
    evidence = _since(server_log, at, expect) + _lines(r.kits[who] / "log.txt", expect)
    # a crashed site-x stays listed until the server's heartbeat timeout: only the real sites are compared
    refused = set(clients) - {"site-x"} == set(r.sites) and not displaced and bool(evidence)
    return Step("", refused, f"clients afterwards {clients}; real sites re-registered: {displaced or 'none'}",
                evidence=evidence[:6], refused=refused)


def _foreign_ca(r: Rehearsal, lead: str) -> Step:
    # the TLS handshake fails inside gRPC: the server logs nothing, the intruder retries for ever
    return _intruder(r, "rogue", lead, 25, r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|re-challenge|"
                                           r"Retrying")


def _twin(r: Rehearsal, lead: str) -> Step:
    return _intruder(r, "twin", lead, 25, r"authenticated as|CNMismatch|identity|registration rejected|"
                                          r"no registration session")


def _stranger_connects(r: Rehearsal, lead: str) -> Step:
    r.start("stranger")
    clients = r.wait_connected(lead, r.sites + ["site-x"], timeout=90)
    return Step("", True, f"the server accepts any certificate of its root CA: clients {clients} (NVFlare 2.9 "
                          "keeps no list of the project's sites)")


def _stranger_took_part(r: Rehearsal, job: Step) -> Step:
    kit = r.kits["stranger"]
    job_id = job.evidence[0] if job.evidence else None
    ran = [p.name for p in kit.iterdir() if p.is_dir() and (p / "log.txt").exists() and p.name not in
           ("startup", "local", "transfer")]
    heard = _lines(r.server_log(job_id), r"site-x") if job_id else ["(no federated job ran)"]
    r.crash("stranger")
    refused = bool(job_id) and not ran and not heard
    return Step("", refused, f"site-x ran {ran or 'no job'}; the server's job log names it {len(heard)} time(s)",
                evidence=heard[:3], refused=refused)


def _job_folder(r: Rehearsal, who: str, values: dict, name: str, code: str = "site") -> Path:
    from fedgin.flare.job import build_job

    folder = r.machine(who) / "jobs" / name
    if folder.exists():
        shutil.rmtree(folder)
    return build_job(folder, values, name=name, code=code)


def _final(r: Rehearsal, lead: str, job_id: str, timeout: float = 300) -> str:
    """The job's final status (``FINISHED:...``), or ``TIMEOUT:<status>`` / the error of asking."""
    a = r.one(lead, {"op": "wait", "job_id": job_id, "timeout": timeout})
    return a.get("result", a.get("error"))


def _nothing_ran(r: Rehearsal, job_id: str) -> list[str]:
    """Sites at which the job trained or sent anything (its outgoing audit exists)."""
    return [s for s in r.sites if (r.kits[s] / job_id / "outgoing_audit.jsonl").exists()]


def _byoc(r: Rehearsal, lead: str, values: dict) -> Step:
    folder = _job_folder(r, lead, {**values, "num_rounds": 1}, "byoc", code="job")
    assert (folder / "app" / "custom").is_dir()
    a = r.one(lead, {"op": "submit", "folder": str(folder)})
    if not a["ok"]:
        return Step("", True, f"refused at submit: {a['error']}", evidence=[a["error"]], refused=True)
    job_id = a["result"]
    status = _final(r, lead, job_id)
    evidence = _lines(r.server_log(), rf"BYOC not permitted|{job_id}.*(Failed to deploy|FAILED)")
    ran = _nothing_ran(r, job_id)
    refused = status != "FINISHED:COMPLETED" and not ran and any("BYOC" in e for e in evidence)
    return Step("", refused, f"job {job_id}: {status}; ran at {ran or 'no site'}", evidence=evidence[:4],
                refused=refused)


def _not_allowed(r: Rehearsal, lead: str, values: dict) -> Step:
    folder = _job_folder(r, lead, {**values, "num_rounds": 1}, "not_allowed")
    cfg = folder / "app" / "config" / "config_fed_client.json"
    conf = json.loads(cfg.read_text())
    conf.setdefault("components", []).append({"id": "intruder", "path": "fedgin.engine.trainer.Engine", "args": {}})
    cfg.write_text(json.dumps(conf, indent=2))
    a = r.one(lead, {"op": "submit", "folder": str(folder)})
    if not a["ok"]:
        return Step("", True, f"refused at submit: {a['error']}", evidence=[a["error"]], refused=True)
    job_id = a["result"]
    status = _final(r, lead, job_id)
    evidence = []
    for s in r.sites:
        evidence += [f"{s}: {e}" for e in _lines(r.site_log(s, job_id), r"is not in allow_list")][:1]
    evidence += _lines(r.server_log(), rf"unsafe component|Aborting job {job_id}")[:2]
    ran = _nothing_ran(r, job_id)
    refused = status != "FINISHED:COMPLETED" and not ran and any("allow_list" in e for e in evidence)
    return Step("", refused, f"job {job_id}: {status}; trained at {ran or 'no site'}", evidence=evidence,
                refused=refused)


def _tampered(r: Rehearsal, lead: str, values: dict) -> Step:
    folder = _job_folder(r, lead, {**values, "num_rounds": 1}, "tampered")
    a = r.one(lead, {"op": "submit_tampered", "folder": str(folder), "file": "app/config/config_fed_server.json",
                     "old": '"num_rounds": 1', "new": '"num_rounds": 1000'})
    if not a["ok"]:
        return Step("", True, f"refused at submit: {a['error']}", evidence=[a["error"]], refused=True)
    job_id = a["result"]
    status = _final(r, lead, job_id)
    evidence = _lines(r.server_log(), r"signature verification|UNSIGNED_JOB")
    ran = _nothing_ran(r, job_id) + [s for s in r.sites if (r.kits[s] / job_id).exists()]
    refused = status != "FINISHED:COMPLETED" and not ran and bool(evidence)
    return Step("", refused, f"job {job_id}: {status}; reached {sorted(set(ran)) or 'no site'}",
                evidence=evidence[:3], refused=refused)


def _gpu_job(r: Rehearsal, lead: str, values: dict) -> Step:
    a = r.one(lead, {"op": "recipe", "values": {**values, "num_rounds": 1, "gpus_per_site": 1}, "name": "gpu"})
    if not a["ok"]:
        return Step("", False, f"submit failed: {a['error']}")
    job_id = a["result"]
    r.wait_log(r.server_log(), f"Try to schedule job {job_id}", timeout=120)
    time.sleep(3)
    meta = r.one(lead, {"op": "meta", "job_id": job_id})["result"] or {}
    sites = {s: _lines(r.site_log(s), r"refuses job " + re.escape(job_id)) for s in r.sites}
    server = _lines(r.server_log(), rf"schedule job {job_id}")
    ok = meta.get("status") == "SUBMITTED" and all(sites.values()) and not any(
        (r.kits[s] / job_id).exists() for s in r.sites)
    return Step("", ok, f"job {job_id} stays {meta.get('status')}; sites that said why they refuse it: "
                        f"{sorted(s for s, v in sites.items() if v)}",
                evidence=[job_id] + [f"{s}: {v[0]}" for s, v in sites.items() if v] + server[:1])


def _cross_org(r: Rehearsal, job_id: str, owner: str) -> Step:
    """``owner`` (a lead) submitted ``job_id``; the other hospital's lead and IT admin try to abort, download and
    delete it; then the owner's own IT admin aborts it and the owner deletes it (the policy is not deny-all)."""
    owner_org = r.people[owner]["org"]
    other_org = next(p["org"] for p in r.people.values() if p["org"] != owner_org)
    others = [n for n, p in r.people.items() if p["org"] == other_org]
    tries = [{"op": "abort", "job_id": job_id}, {"op": "download", "job_id": job_id, "to": "stolen"},
             {"op": "delete", "job_id": job_id}]
    evidence, refused = [], True
    for person in others:
        for a in r.admin(person, tries):
            evidence.append(f"{person} {a['op']}: {'ALLOWED' if a['ok'] else a['error']}")
            refused &= not a["ok"] and "not authorized" in a["error"]
    still = (r.one(owner, {"op": "meta", "job_id": job_id})["result"] or {}).get("status")
    refused &= still == "SUBMITTED" and not any((r.machine(p) / "stolen").exists() and
                                                any((r.machine(p) / "stolen").iterdir()) for p in others)
    own_admin = r.org_admin(owner_org)
    abort = r.one(own_admin, {"op": "abort", "job_id": job_id})
    status = _final(r, owner, job_id, timeout=60)
    delete = r.one(owner, {"op": "delete", "job_id": job_id})
    evidence += [f"{own_admin} abort: {'allowed' if abort['ok'] else abort['error']} -> {status}",
                 f"{owner} delete: {'allowed' if delete['ok'] else delete['error']}"]
    controls = abort["ok"] and status == "FINISHED:ABORTED" and delete["ok"]
    return Step("", refused and controls, f"other organisation refused: {refused}; owner's IT and owner allowed: "
                                          f"{controls}", evidence=evidence, refused=refused and controls)


def _lead_operates(r: Rehearsal) -> Step:
    """A lead tries its own site's operations (``operate``, ``shell_commands``: org admin only); its org admin does
    them on its own site and is refused on the other hospital's."""
    lead = r.lead(0)
    org = r.people[lead]["org"]
    own = next(s for s in r.sites if s == r.sites[0])
    other = r.sites[1]
    it = r.org_admin(org)
    lead_tries = r.admin(lead, [{"op": "shell", "target": own}, {"op": "command", "text": f"sys_info client {own}"},
                                {"op": "command", "text": f"restart client {own}"}])
    it_tries = r.admin(it, [{"op": "shell", "target": own}, {"op": "shell", "target": other}])

    def denied(a: dict) -> bool:
        return (not a["ok"] and "not authorized" in a["error"]) or (a["ok"] and "not authorized" in str(a["result"]))

    evidence = [f"{lead} {a['op']}: {a.get('error') or str(a.get('result'))[:160]}" for a in lead_tries]
    evidence += [f"{it} {a['op']}: {a.get('error') or str(a.get('result'))[:160]}" for a in it_tries]
    refused = all(denied(a) for a in lead_tries) and not denied(it_tries[0]) and it_tries[0]["ok"] \
        and denied(it_tries[1])
    still = r.connected(lead)
    refused &= set(r.sites) <= set(still)
    return Step("", refused, f"lead refused {sum(map(denied, lead_tries))}/{len(lead_tries)}; org admin on its own "
                             f"site: {'ok' if it_tries[0]['ok'] else 'refused'}, on the other: "
                             f"{'refused' if denied(it_tries[1]) else 'ALLOWED'}", evidence=evidence, refused=refused)


def _server_restart(r: Rehearsal, lead: str, values: dict, rounds: int = 4, kill_after: int = 1) -> Step:
    """Kill the server's host once round ``kill_after`` is persisted, start it again from its kit, then resume by
    the documented procedure (NVFlare 2.9 does not restore a running job from a snapshot)."""
    from fedgin.flare.persistor import read_round

    a = r.one(lead, {"op": "recipe", "values": {**values, "num_rounds": rounds}, "name": "restart"})
    if not a["ok"]:
        return Step("", False, f"submit failed: {a['error']}")
    job_id = a["result"]
    r.wait_log(r.server_log(job_id), f"Round {kill_after} finished.", timeout=600)
    killed = r.crash(r.server)
    saved = r.kits[r.server] / job_id / "app_server" / "FL_global_model.pt"
    before = read_round(saved)["round"]
    t = time.monotonic()
    r.start(r.server)
    r.wait_connected(lead, r.sites, timeout=240)
    back = time.monotonic() - t
    stale = (r.one(lead, {"op": "meta", "job_id": job_id})["result"] or {}).get("status")
    abort = r.one(lead, {"op": "abort", "job_id": job_id})
    # the procedure: the server's operator hands the lead the last global model, the lead resubmits from it
    handed = r.machine(lead) / "resume" / "FL_global_model.pt"
    handed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(saved, handed)
    b = r.one(lead, {"op": "recipe", "values": {**values, "num_rounds": rounds}, "name": "restart_resumed",
                     "resume_from": str(handed)})
    if not b["ok"]:
        return Step("", False, f"resume submit failed: {b['error']}")
    resumed = b["result"]
    done = r.admin(lead, [{"op": "wait", "job_id": resumed, "timeout": 900},
                          {"op": "download", "job_id": resumed, "to": str(r.machine(lead) / "downloads")}])
    if done[0].get("result") != "FINISHED:COMPLETED" or not done[1]["ok"]:
        return Step("", False, f"resumed job {resumed}: {done}")
    ws = Path(done[1]["result"])
    ws = ws / "workspace" if (ws / "workspace").is_dir() else ws
    final = read_round(ws / "app_server" / "FL_global_model.pt")
    history = [(h["round"], h["job_id"]) for h in final.get("history", [])]
    expected = [(i, job_id) for i in range(before + 1)] + [(i, resumed) for i in range(before + 1, rounds)]
    ok = history == expected and final["round"] == rounds - 1
    return Step("", ok, f"killed {len(killed)} server processes after round {before} was saved; server back and "
                        f"sites reconnected in {back:.0f} s; the killed job stayed {stale} (abort: "
                        f"{'ok' if abort['ok'] else abort['error']}); resumed as {resumed}: final round "
                        f"{final['round']}, rounds by job {history}",
                evidence=[job_id, resumed])
