"""Production provisioning: the real ``nvflare provision`` on ``provisioning/project.yml``, checked file by file.

Expectations are derived from ``project.yml`` (participants, server name, port) and from the FedGIN job (the
component classes every kit must allow). ``nvflare provision`` has returned 0 on invalid projects in the past,
so every test asserts on the files produced, not only on the exit code. Each run takes about a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("nvflare")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from nvflare.fuel.sec.authz import AuthzContext, Person  # noqa: E402
from nvflare.lighter.utils import verify_folder_signature  # noqa: E402
from nvflare.security.security import FLAuthorizer  # noqa: E402

import fedgin  # noqa: E402
from fedgin.flare import site_policy  # noqa: E402
from fedgin.flare.provision import SITE_CONFIG_SAMPLE, SITE_README  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILE = REPO / "provisioning" / "project.yml"
PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)


def provision(project_file: Path, tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``nvflare provision`` in ``tmp`` (its own HOME and cwd); the repository's ``custom/`` comes first on
    the path so that the builder under test is this checkout's."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "home").mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(tmp / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "custom"), os.environ.get("PYTHONPATH")) if p)}
    workspace = tmp / "workspace"
    cmd = [sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project_file), "-w", str(workspace)]
    result = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return result, workspace


def prod_dirs(workspace: Path) -> list[Path]:
    return sorted(workspace.glob("*/prod_*"))


def participants(project: dict, kind: str) -> list[dict]:
    return [p for p in project["participants"] if p["type"] == kind]


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def public_der(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_keys_in(kit: Path) -> dict[Path, list[bytes]]:
    """Every PEM private key block in every file of a kit, as the DER of its public key, by file.

    A key marker that is not a parseable PEM block (an escaped key in JSON, say) is reported as ``b"unparsed"``.
    """
    found = {}
    for path in sorted(p for p in kit.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blocks = [m.group(0) for m in PEM_KEY.finditer(data)]
        keys = []
        for block in blocks:
            try:
                keys.append(public_der(serialization.load_pem_private_key(block, password=None)))
            except ValueError:
                keys.append(b"unparsed")
        if data.count(b"PRIVATE KEY-----") != 2 * len(blocks):
            keys.append(b"unparsed")
        if keys:
            found[path] = keys
    return found


def allowed(path: str, allow_list: list[str]) -> bool:
    """NVFlare 2.9's rule (ComponentPathAuthorizer): equal, or under an entry ending in '.', or under 'entry.'."""
    return any(path == e or path.startswith(e if e.endswith(".") else e + ".") for e in allow_list)


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load(PROJECT_FILE.read_text())


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory, project):
    """(prod_00 folder, the provisioning state: root CA and every participant's key as CertBuilder keeps them)."""
    result, workspace = provision(PROJECT_FILE, tmp_path_factory.mktemp("provision"))
    assert result.returncode == 0, result.stdout + result.stderr
    prods = prod_dirs(workspace)
    assert [p.name for p in prods] == ["prod_00"], result.stdout + result.stderr
    state = json.loads((workspace / project["name"] / "state" / "cert.json").read_text())
    return prods[0], state


def test_project_file_matches_the_job_sites(project):
    clients = {p["name"] for p in participants(project, "client")}
    assert clients == {"site-ct", "site-mri"}
    assert [p["role"] for p in participants(project, "admin")].count("project_admin") == 1  # POC needs exactly one
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", p["org"]) for p in project["participants"])
    builders = [b["path"].rsplit(".", 1)[-1] for b in project["builders"]]
    assert builders.index("StaticFileBuilder") < builders.index("FedGINKitBuilder") < builders.index("SignatureBuilder")
    assert builders.index("CertBuilder") < builders.index("SignatureBuilder")


def test_every_participant_has_a_kit_with_its_certificate(provisioned, project):
    prod, state = provisioned
    names = {p["name"] for p in project["participants"]}
    assert {d.name for d in prod.iterdir() if d.is_dir()} == names
    root = load_cert(prod / participants(project, "server")[0]["name"] / "startup" / "rootCA.pem")
    assert root.public_bytes(serialization.Encoding.PEM).decode() == state["root_cert"]
    for p in project["participants"]:
        startup = prod / p["name"] / "startup"
        crt = startup / ("server.crt" if p["type"] == "server" else "client.crt")
        assert (startup / "rootCA.pem").read_bytes() == root.public_bytes(serialization.Encoding.PEM)
        cert = load_cert(crt)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == p["name"]
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == p["org"]
        cert.verify_directly_issued_by(root)  # raises if not signed by this kit's root CA


def test_each_kit_holds_only_its_own_private_key(provisioned, project):
    prod, state = provisioned
    root_key = public_der(serialization.load_pem_private_key(state["root_pri_key"].encode(), password=None))
    all_keys = {p["name"]: public_der(serialization.load_pem_private_key(state[p["name"]]["pri_key"].encode(),
                                                                          password=None))
                for p in project["participants"]}
    assert len(set(all_keys.values()) | {root_key}) == len(all_keys) + 1
    for p in project["participants"]:
        kit = prod / p["name"]
        found = private_keys_in(kit)
        own_file = kit / "startup" / ("server.key" if p["type"] == "server" else "client.key")
        assert list(found) == [own_file], f"{p['name']}: private keys in {list(found)}"
        assert found[own_file] == [all_keys[p["name"]]]
        cert = load_cert(kit / "startup" / own_file.with_suffix(".crt").name)
        assert cert_public_der(cert) == all_keys[p["name"]], f"{p['name']}: key does not match its certificate"
        assert oct(own_file.stat().st_mode & 0o777) == "0o600"
        text = b"".join(f.read_bytes() for f in kit.rglob("*") if f.is_file())
        assert state["root_pri_key"].encode() not in text


def test_server_and_client_connection_configs(provisioned, project):
    prod, _ = provisioned
    server = participants(project, "server")[0]
    port = server["fed_learn_port"]
    fed_server = json.loads((prod / server["name"] / "startup" / "fed_server.json").read_text())["servers"][0]
    assert fed_server["service"]["target"] == f"{server['name']}:{port}"
    assert fed_server["admin_server"] == server["name"]
    assert fed_server["admin_port"] == server.get("admin_port", port)
    assert fed_server["connection_security"] == "mtls"
    for client in participants(project, "client"):
        cfg = json.loads((prod / client["name"] / "startup" / "fed_client.json").read_text())
        assert [s["service"]["target"] for s in cfg["servers"]] == [f"{server['name']}:{port}"]
        assert cfg["servers"][0]["identity"] == server["name"]
        assert cfg["client"]["connection_security"] == "mtls"
        assert cfg["client"]["fqsn"] == client["name"]
    for admin in participants(project, "admin"):
        cfg = json.loads((prod / admin["name"] / "startup" / "fed_admin.json").read_text())["admin"]
        assert (cfg["host"], cfg["port"], cfg["username"]) == (server["name"], server.get("admin_port", port),
                                                               admin["name"])


def test_job_components_are_on_each_kit_allow_list(provisioned, project, tmp_path):
    from fedgin.flare.job import build_job

    prod, _ = provisioned
    needed = {"server": set(), "client": set()}
    # every receiver, and the server components of each federated optimiser (FedOpt with a scheduler, SCAFFOLD)
    for i, values in enumerate(({"tracking": "both"}, {"method": "gin+scaffold"},
                                {"method": "gin+fedopt", "server_optimizer": {"path": "torch.optim.Adam"},
                                 "server_lr_scheduler": {"path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                                         "args": {"T_max": 10}}})):
        config = build_job(tmp_path / f"job{i}", values, code="site") / "app" / "config"
        for role in needed:
            needed[role] |= site_policy.job_component_paths(json.loads((config / f"config_fed_{role}.json").read_text()))
    assert {"fedgin.flare.server_optim.FedOptGenerator",
            "nvflare.app_common.workflows.scatter_and_gather_scaffold.ScatterAndGatherScaffold"} <= needed["server"]
    assert any(c.startswith("fedgin.") for c in needed["server"]) and any(c.startswith("fedgin.") for c in
                                                                        needed["client"])
    for p in participants(project, "server") + participants(project, "client"):
        resources = json.loads((prod / p["name"] / "local" / "resources.json.default").read_text())
        allow_list = resources["class_allow_list"]
        assert resources["class_list_enforcement_mode"] == "enforce"
        assert "*" not in allow_list
        missing = sorted(c for c in needed[p["type"]] if not allowed(c, allow_list))
        assert not missing, f"{p['name']}: not allow-listed: {missing}"
        kept = ("components", "snapshot_persistor") if p["type"] == "server" else ("components", "client")
        assert all(k in resources for k in kept), f"{p['name']}: the rest of the file was not kept"
        if p["type"] == "client":  # a site's error log (it names the site's files) is not streamed to the server
            assert resources["allow_log_streaming"] is p.get("allow_log_streaming", True) is False


def test_authorization_denies_byoc_to_every_role(provisioned, project):
    prod, _ = provisioned
    admins = participants(project, "admin")
    for p in participants(project, "server") + participants(project, "client"):
        policy = json.loads((prod / p["name"] / "local" / "authorization.json.default").read_text())
        assert policy == site_policy.authorization_policy()
        authorizer = FLAuthorizer(p["org"], policy)
        people = [Person(a["name"], a["org"], a["role"]) for a in admins]
        people += [Person(f"{role}@{p['org']}.example.org", p["org"], role) for role in policy["permissions"]]
        for person in people:
            ok, _ = authorizer.authorize(AuthzContext(right="byoc", user=person, submitter=person))
            assert not ok, f"{p['name']}: {person} may bring code"
        for lead in (a for a in admins if a["role"] == "lead"):  # the policy is not simply "deny all"
            person = Person(lead["name"], lead["org"], lead["role"])
            assert authorizer.authorize(AuthzContext(right="submit_job", user=person, submitter=person))[0]
            for right in ("operate", "shell_commands"):  # operating a site is its IT's (org_admin) work
                assert not authorizer.authorize(AuthzContext(right=right, user=person, submitter=person))[0]
        if p["type"] == "client":
            for it in (a for a in admins if a["role"] == "org_admin"):
                person = Person(it["name"], it["org"], it["role"])
                own = authorizer.authorize(AuthzContext(right="operate", user=person, submitter=person))[0]
                assert own is (it["org"] == p["org"]), (p["name"], it["name"])


def test_client_kits_carry_site_config_sample_and_instructions(provisioned, project):
    prod, _ = provisioned
    for client in participants(project, "client"):
        local = prod / client["name"] / "local"
        datalist = Path(json.loads((local / SITE_CONFIG_SAMPLE).read_text())["datalist"])
        assert datalist.is_absolute() and datalist.parts[-2:] == (client["name"], "datalist.json")
        assert not (local / "fedgin_site.json").exists()  # the site writes its own
        readme = (local / SITE_README).read_text()
        for text in (client["name"], fedgin.__version__, "fedgin_site.json", "fedgin prepare", "startup/start.sh",
                     "sha256"):
            assert text in readme
    server = participants(project, "server")[0]
    assert not (prod / server["name"] / "local" / SITE_CONFIG_SAMPLE).exists()


def test_signature_files_verify(provisioned):
    """NVFlare 2.9's SignatureBuilder signs only CC and HE kits (mTLS is the trust anchor of plain kits), so this
    project gets no signature.json; any that appears must verify against the kit's root CA."""
    prod, _ = provisioned
    signed = sorted(prod.rglob("signature.json"))
    for sig in signed:
        kit = next(p for p in sig.parents if p.parent == prod)
        assert verify_folder_signature(str(sig.parent), str(kit / "startup" / "rootCA.pem"), single_signer=True,
                                       signature_file="signature.json"), sig
    assert signed == [], "NVFlare now signs plain kits: check that sites may still add local/fedgin_site.json"


def _variant(tmp_path: Path, edit) -> Path:
    project = yaml.safe_load(PROJECT_FILE.read_text())
    edit(project)
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


def _hyphenated_org(project: dict) -> None:
    participants(project, "client")[0]["org"] = "hospital-a"


def _second_site_ct(project: dict) -> None:
    project["participants"].append({"name": "site-ct", "type": "client", "org": "hospital_b"})


@pytest.mark.parametrize("edit, message", [(_hyphenated_org, "hospital-a"), (_second_site_ct, "site-ct")])
def test_invalid_project_is_refused(tmp_path, edit, message):
    """2.9 exits with 4 (INVALID_ARGS) and writes no kit; we require a non-zero code and no kit."""
    result, workspace = provision(_variant(tmp_path, edit), tmp_path / "run")
    assert result.returncode != 0
    assert prod_dirs(workspace) == []
    assert message in result.stdout + result.stderr


def test_builder_before_static_files_fails_without_kits(tmp_path):
    def misorder(project: dict) -> None:
        builders = project["builders"]
        ours = next(b for b in builders if b["path"].endswith("FedGINKitBuilder"))
        builders.remove(ours)
        builders.insert(1, ours)

    result, workspace = provision(_variant(tmp_path, misorder), tmp_path / "run")
    assert result.returncode != 0
    assert prod_dirs(workspace) == []
    assert "after StaticFileBuilder" in result.stdout + result.stderr
