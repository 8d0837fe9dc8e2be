"""Keys made at the site: NVFlare 2.9's distributed provisioning for the FedGIN project.

Four steps, each on the machine of whoever owns it (``provisioning/README.md`` section 1):

1. project admin: ``nvflare cert init`` makes the root CA from a profile (project name, server FQDN, ports);
2. each participant: ``nvflare cert request`` makes its own private key and a signing request; only the request
   zip (CSR + name, org, role) leaves the machine;
3. project admin: ``nvflare cert approve`` signs each request, returning certificate + ``rootCA.pem``;
4. each participant: ``nvflare package`` builds its startup kit from the signed zip and its own key, running the
   project's builders (``FedGINKitBuilder``: allow-list, no BYOC) from its local participant file.

``provision(project_file, root)`` does all four for every participant of ``project.yml``, one folder (and one
``HOME``) per machine under ``root``: the rehearsal's way, and a worked example of the commands. No folder but a
participant's own ever holds its private key. NVFlare 2.9 issues no ``project_admin`` certificate this way (its
requests take ``lead``, ``member`` or ``org_admin``): that role stays with the central ``nvflare provision``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["provision", "profile", "participant_file", "ProvisionError", "REQUESTABLE_ROLES"]

REQUESTABLE_ROLES = ("lead", "member", "org_admin")
_NO_BUILD = ("nvflare.lighter.impl.cert.CertBuilder", "nvflare.lighter.impl.signature.SignatureBuilder")


class ProvisionError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    env = {**os.environ, "HOME": str(cwd / "home")}
    (cwd / "home").mkdir(parents=True, exist_ok=True)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ProvisionError(f"{what}: `{' '.join(cmd[2:])}` failed ({result.returncode}) in {cwd}:\n"
                             f"{(result.stdout + result.stderr).strip()[-3000:]}")
    return result.stdout


def _nvflare(*args: str) -> list[str]:
    return [sys.executable, "-m", "nvflare.cli", *args]


def profile(project: dict[str, Any]) -> dict[str, Any]:
    """The project admin's ``nvflare cert init`` profile of a ``project.yml``: name, scheme, mTLS, server."""
    server = [p for p in project["participants"] if p["type"] == "server"]
    if len(server) != 1:
        raise ProvisionError(f"project {project.get('name')!r} must have exactly one server, has {len(server)}")
    s = server[0]
    port = s.get("fed_learn_port", 8002)
    return {"name": project["name"], "scheme": project.get("scheme", "grpc"), "connection_security": "mtls",
            "server": {"host": s["name"], "fed_learn_port": port, "admin_port": s.get("admin_port", port)}}


def participant_file(project: dict[str, Any], name: str) -> dict[str, Any]:
    """A participant's own definition for ``nvflare cert request``: the project name, its entry of
    ``project.yml`` and the project's builders (kept on its machine; ``nvflare package`` runs them)."""
    entry = next((p for p in project["participants"] if p["name"] == name), None)
    if entry is None:
        raise ProvisionError(f"{name!r} is not a participant of project {project['name']!r}")
    if entry["type"] == "admin" and entry.get("role") not in REQUESTABLE_ROLES:
        raise ProvisionError(f"{name}: NVFlare 2.9's distributed provisioning issues only the roles "
                             f"{', '.join(REQUESTABLE_ROLES)}, not {entry.get('role')!r}; provision this person "
                             "centrally (nvflare provision)")
    return {"name": project["name"], "participants": [dict(entry)],
            "builders": [b for b in project.get("builders", []) if b["path"] not in _NO_BUILD]}


def provision(project_file: str | Path, root: str | Path, names: list[str] | None = None,
              ca_dir: str | Path | None = None) -> dict[str, Path]:
    """Distributed provisioning of ``names`` (default: every participant a request can be made for) under
    ``root``; returns ``{name: startup kit}``.

    Layout: ``root/project-admin/`` (the CA in ``ca/``, the requests in ``inbox/``), ``root/<name>/`` per
    participant (its request folder with its private key, and ``workspace/<project>/prod_00/<name>/``, its kit).
    ``ca_dir``: an existing CA folder to sign with (default: a new one under ``root/project-admin/ca``).
    """
    project_file, root = Path(project_file), Path(root).resolve()
    project = yaml.safe_load(project_file.read_text())
    names = names or [p["name"] for p in project["participants"]
                      if p["type"] != "admin" or p.get("role") in REQUESTABLE_ROLES]
    admin = root / "project-admin"
    (admin / "inbox").mkdir(parents=True, exist_ok=True)
    (admin / "profile.yaml").write_text(yaml.safe_dump(profile(project), sort_keys=False))
    ca = Path(ca_dir).resolve() if ca_dir else admin / "ca"
    if not (ca / "rootCA.pem").is_file():
        _run(_nvflare("cert", "init", "--profile", "profile.yaml", "-o", str(ca)), admin, "root CA")
    fingerprint = json.loads((ca / "ca.json").read_text())["rootCA_fingerprint"]
    kits = {}
    for name in names:
        machine = root / name
        machine.mkdir(parents=True, exist_ok=True)
        (machine / "participant.yaml").write_text(yaml.safe_dump(participant_file(project, name), sort_keys=False))
        _run(_nvflare("cert", "request", "-p", "participant.yaml"), machine, f"{name}: signing request")
        zips = sorted((machine / name).glob("*.request.zip"))
        if len(zips) != 1:
            raise ProvisionError(f"{name}: expected one request zip in {machine / name}, found {zips}")
        request = admin / "inbox" / zips[0].name
        shutil.copy2(zips[0], request)  # the only file that leaves the participant's machine
        _run(_nvflare("cert", "approve", str(request), "--ca-dir", str(ca), "--profile", "profile.yaml"), admin,
             f"{name}: signing")
        signed = admin / "inbox" / f"{name}.signed.zip"
        if not signed.is_file():
            raise ProvisionError(f"{name}: `nvflare cert approve` wrote no {signed}")
        shutil.copy2(signed, machine / signed.name)  # back to the participant
        _run(_nvflare("package", signed.name, "--request-dir", name, "--fingerprint", fingerprint, "-w",
                      "workspace", "--force"), machine, f"{name}: packaging")
        kit = machine / "workspace" / project["name"] / "prod_00" / name
        if not (kit / "startup").is_dir():
            raise ProvisionError(f"{name}: `nvflare package` made no kit at {kit}")
        kits[name] = kit
    return kits
