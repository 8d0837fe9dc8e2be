"""Production as institutions run it: ``fedgin.flare.rehearsal`` on Linux network namespaces.

Every participant of ``provisioning/project.yml`` is provisioned with distributed provisioning (keys made in its
own folder) and started from its own kit's ``start.sh`` on a host of its own, the server reached by its FQDN.
One federated job runs; then every attack of the threat model is tried against the live system and a killed server
is resumed. The test asserts on what the system logged and kept, independently of the rehearsal's own verdicts,
and that nothing (namespace, hosts file, process) is left behind. Skips where namespaces cannot be made.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("nvflare")
psutil = pytest.importorskip("psutil")

from conftest import write_toy_site  # noqa: E402
from fedgin.flare.netns import NETNS_ETC, Hosts, unavailable  # noqa: E402
from fedgin.flare.persistor import read_round  # noqa: E402

WHY = unavailable()
PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)

ATTACKS = ("attack: site not in the project takes part", "attack: client of another root CA",
           "attack: second connection with a connected site's name", "attack: job with custom code",
           "attack: component not on the allow-list", "attack: job altered after signing",
           "attack: another organisation's job", "attack: lead doing an org admin's work")


def _key_files(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` holding a PEM private key."""
    found = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            m = PEM_KEY.search(data)
            if m:
                found[p] = m.group(0)
    return found


def test_hosts_are_isolated_and_removed():
    if WHY:
        pytest.skip(f"network namespaces cannot be made here: {WHY}")
    with Hosts(["a", "b"], names={"server.example.org": "a"}) as net:
        ok = net.run("b", ["getent", "hosts", "server.example.org"], capture_output=True, text=True)
        assert ok.stdout.split()[0] == net.address["a"]
        outside = subprocess.run(["getent", "hosts", "server.example.org"], capture_output=True, text=True)
        assert outside.returncode != 0  # the name exists only inside the namespaces
        links = net.run("a", ["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert net.address["a"] in links and net.address["b"] not in links
        net.popen("a", ["sleep", "300"])
        assert net.pids("a")
        tag = net.tag
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in listed
    assert not list(NETNS_ETC.glob(f"{tag}-*"))
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "300"]]


@pytest.mark.slow
def test_production_rehearsal(tmp_path):
    if WHY:
        pytest.skip(f"network namespaces cannot be made here: {WHY}")
    from fedgin.flare.rehearsal import rehearse

    datalists = {s: write_toy_site(tmp_path / "data", s, m, ["disc"], {"training": 2, "validation": 1}, seed=i)
                 for i, (s, m) in enumerate((("site-ct", "ct"), ("site-mri", "mri")))}
    root = tmp_path / "rehearsal"
    steps = rehearse(root, datalists, values={"classes": ["disc"]}, rounds=2)
    by = {s.name: s for s in steps}
    report = "\n".join(f"{s.name}: ok={s.ok} refused={s.refused} {s.detail} {s.evidence[:2]}" for s in steps)
    assert all(s.ok for s in steps), report
    for name in ATTACKS:
        assert by[name].refused is True, report

    machines = root / "machines"
    server = next(machines.glob("fedgin.*/workspace/fedgin/prod_00/fedgin.*"))
    sites = {s: next(machines.glob(f"{s}/workspace/fedgin/prod_00/{s}")) for s in datalists}
    log = (server / "log.txt").read_text(errors="replace")

    # keys made at the site: each machine's folder holds its own private key and no other participant's
    keys = {m.name: _key_files(m) for m in machines.iterdir() if m.is_dir()}
    assert set(keys["project-admin"]) == {machines / "project-admin" / "ca" / "rootCA.key"}
    for machine, found in keys.items():
        for other, their in keys.items():
            if other != machine:
                assert not set(found.values()) & set(their.values()), f"{machine} holds a key of {other}"
    for site, kit in sites.items():
        assert (kit / "startup" / "client.key").read_bytes().strip() in {k.strip() for k in keys[site].values()}

    # the refusals, as the live system logged them
    assert "BYOC not permitted" in log
    assert "does not pass signature verification" in log
    # no real site was displaced by an impostor or a foreign CA: the only re-logins are the sites' first start after
    # their preflight dry run, before site-x (which connects ahead of every attack)
    assert "already registered" not in log[log.index("New client site-x@"):]
    assert "authenticated as 'site-mri' but claimed endpoint 'site-ct'" in log
    for kit in sites.values():
        job_logs = "".join(p.read_text(errors="replace") for p in kit.glob("*/log.txt"))
        assert "fedgin.engine.trainer.Engine' at config path" in job_logs and "is not in allow_list" in job_logs
        assert "refuses job" in (kit / "log.txt").read_text(errors="replace")  # the GPU job, with its reason
    stranger = next((root / "stranger").glob("site-x/workspace/fedgin/prod_00/site-x"))
    assert not [p for p in stranger.iterdir() if p.is_dir() and (p / "log.txt").exists()]  # site-x ran no job

    # the federated job and the resumed one: every round's global model, by job, none lost
    job_id = by["federated job"].evidence[0]
    for kit in sites.values():
        assert (kit / job_id / "outgoing_audit.jsonl").is_file()
    killed, resumed = by["fault: server killed mid-job, resumed"].evidence
    final = read_round(next(machines.glob(f"*/downloads/{resumed}/**/app_server/FL_global_model.pt")))  # the lead's
    rounds = [h["round"] for h in final["history"]]
    assert rounds == list(range(4)) and final["round"] == 3
    assert {h["job_id"] for h in final["history"]} == {killed, resumed}
    assert read_round(server / killed / "app_server" / "FL_global_model.pt")["round"] >= 1

    # nothing left behind: no namespace of the run, no process running from its folders
    assert by["clean-up"].ok
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
