"""Keys made at the site (``fedgin.flare.distributed_provision``: NVFlare 2.9's ``nvflare cert init / request /
approve`` and ``nvflare package``) and what a site's or the server's IT sets in its kit (``fedgin kit setup``).

Runs the real commands, one folder and ``HOME`` per participant's machine, and checks the files they produced.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

pytest.importorskip("nvflare")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402

from conftest import write_toy_site  # noqa: E402
from fedgin.flare import distributed_provision as dp  # noqa: E402
from fedgin.flare import site_policy  # noqa: E402
from fedgin.flare.kit_setup import (GPU_MANAGER, SITE_GPU_MANAGER, KitError, setup_gpus,  # noqa: E402
                                    setup_server_storage, setup_site, site_resources)
from fedgin.flare.poc import default_project  # noqa: E402
from fedgin.flare.resources import SiteGPUResourceManager  # noqa: E402

PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)


def _public(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return root, dp.provision(default_project(), root / "machines",
                              names=["fedgin.consortium.example.org", "site-ct", "researcher@hospital-a.example.org",
                                     "it-admin@hospital-b.example.org"])


def test_each_private_key_stays_on_its_own_machine(kits):
    root, made = kits
    machines = root / "machines"
    keys = {}
    for machine in (p for p in machines.iterdir() if p.is_dir()):
        keys[machine.name] = {f: _public(m.group(0)) for f in machine.rglob("*") if f.is_file()
                              for m in PEM_KEY.finditer(f.read_bytes())}
    assert set(keys) == set(made) | {"project-admin"}
    assert [f.name for f in keys["project-admin"]] == ["rootCA.key"]  # the signer saw only requests
    for name, found in keys.items():
        others = set().union(*(set(v.values()) for k, v in keys.items() if k != name))
        assert not set(found.values()) & others, f"{name} holds another participant's key"
    inbox = b"".join(f.read_bytes() for f in (machines / "project-admin" / "inbox").iterdir())
    assert b"PRIVATE KEY" not in inbox
    for name, kit in made.items():
        startup = kit / "startup"
        own = startup / ("server.key" if name.startswith("fedgin.") else "client.key")
        crt = x509.load_pem_x509_certificate((own.with_suffix(".crt")).read_bytes())
        spki = crt.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert spki == _public(own.read_bytes())
        assert crt.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        root_ca = x509.load_pem_x509_certificate((startup / "rootCA.pem").read_bytes())
        crt.verify_directly_issued_by(root_ca)
        assert oct(own.stat().st_mode & 0o777) == "0o600"


def test_roles_in_certificates_and_the_fedgin_policy_in_the_kits(kits):
    _, made = kits
    role = x509.ObjectIdentifier("1.2.840.113549.1.9.2")  # unstructuredName: NVFlare's role field
    for name, want in (("researcher@hospital-a.example.org", "lead"), ("it-admin@hospital-b.example.org", "org_admin")):
        crt = x509.load_pem_x509_certificate((made[name] / "startup" / "client.crt").read_bytes())
        assert crt.subject.get_attributes_for_oid(role)[0].value == want
    for name in ("fedgin.consortium.example.org", "site-ct"):
        local = made[name] / "local"
        assert json.loads((local / "authorization.json.default").read_text()) == site_policy.authorization_policy()
        resources = json.loads((local / "resources.json.default").read_text())
        kind = "server" if name.startswith("fedgin.") else "client"
        assert set(site_policy.allow_list(kind)) <= set(resources["class_allow_list"])
    site = json.loads((made["site-ct"] / "local" / "resources.json.default").read_text())
    assert site["allow_log_streaming"] is False
    assert [c["path"] for c in site["components"] if c["id"] == "resource_manager"] == [SITE_GPU_MANAGER]
    cfg = json.loads((made["site-ct"] / "startup" / "fed_client.json").read_text())
    assert cfg["servers"][0]["service"]["target"] == "fedgin.consortium.example.org:8002"
    assert cfg["client"]["connection_security"] == "mtls"


def test_project_admin_cannot_be_requested(tmp_path):
    with pytest.raises(dp.ProvisionError, match="project_admin"):
        dp.participant_file(yaml.safe_load(default_project().read_text()), "project-admin@consortium.example.org")
    with pytest.raises(dp.ProvisionError, match="not a participant"):
        dp.participant_file(yaml.safe_load(default_project().read_text()), "site-x")


def test_kit_setup_of_a_site_and_the_server(kits, tmp_path):
    _, made = kits
    site, server = made["site-ct"], made["fedgin.consortium.example.org"]
    datalist = write_toy_site(tmp_path / "data", "site-ct", "ct", ["disc"], {"training": 1})
    cfg = setup_site(site, datalist)
    assert json.loads(cfg.read_text()) == {"datalist": str(datalist.resolve())}
    with pytest.raises(KitError, match="no such datalist"):
        setup_site(site, tmp_path / "missing.json")
    with pytest.raises(KitError, match="not a site"):
        setup_site(server, datalist)
    written = setup_server_storage(server)
    res = json.loads(written.read_text())
    assert res["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] == str(server / "snapshot-storage")
    managers = [c["args"]["uri_root"] for c in res["components"] if c["id"] == "job_manager"]
    assert managers == [str(server / "jobs-storage")]
    assert res["class_allow_list"] == json.loads((server / "local" / "resources.json.default").read_text())[
        "class_allow_list"]
    with pytest.raises(KitError, match="this machine has"):
        setup_gpus(site, 64)  # more than any machine running the tests
    setup_gpus(site, 2, 16, check_host=False)
    manager = next(c for c in site_resources(site)["components"] if c["id"] == "resource_manager")
    assert manager["args"]["num_of_gpus"] == 2 and manager["args"]["mem_per_gpu_in_GiB"] == 16
    assert manager["path"] in (GPU_MANAGER, SITE_GPU_MANAGER)


def test_site_says_why_it_refuses_a_gpu_job():
    manager = SiteGPUResourceManager(num_of_gpus=0, mem_per_gpu_in_GiB=0)
    ok, reason = manager.check_resources({"num_of_gpus": 1}, FLContext())
    assert not ok and "asks for 1 GPU(s)" in reason and "offers 0" in reason and "fedgin kit setup --gpus" in reason
    assert manager.check_resources({}, FLContext())[0]  # a job that asks for nothing still runs


def test_job_names_its_sites_and_the_gpus_it_needs(tmp_path):
    from fedgin.flare.job import build_job

    meta = json.loads((build_job(tmp_path / "a", {"sites": ["site-ct", "site-mri"], "gpus_per_site": 1},
                                 code="site") / "meta.json").read_text())
    assert meta["deploy_map"] == {"app": ["server", "site-ct", "site-mri"]}
    assert meta["resource_spec"] == {"@default": {"num_of_gpus": 1}}
    meta = json.loads((build_job(tmp_path / "b", {}, code="site") / "meta.json").read_text())
    assert meta["deploy_map"] == {"app": ["@ALL"]} and meta["resource_spec"] == {}
    for bad in ({"sites": ["site-ct"]}, {"sites": ["site-ct", "site-ct"]}, {"gpus_per_site": -1}):
        with pytest.raises(ValueError):
            build_job(tmp_path / "c", bad, code="site")
