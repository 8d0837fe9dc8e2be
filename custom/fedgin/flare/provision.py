"""Provisioning builder that writes the FedGIN site policy into every startup kit ``nvflare provision`` makes.

``provisioning/project.yml`` names it by path (``fedgin.flare.provision.FedGINKitBuilder``), so ``fedgin-flare``
must be importable by the Python that runs ``nvflare provision``. Order in ``builders``: after ``StaticFileBuilder``
(which writes the ``local/*.default`` files this builder edits) and before ``CertBuilder``/``SignatureBuilder``
(``SignatureBuilder`` signs ``local/`` in HE kits, so any edit after it would break those signatures).
"""

from __future__ import annotations

import json
from pathlib import Path

from nvflare.lighter.constants import ProvFileName
from nvflare.lighter.spec import Builder, Project, ProvisionContext

import fedgin
from fedgin.flare import site_policy

__all__ = ["FedGINKitBuilder", "SITE_CONFIG_SAMPLE", "SITE_README"]

SITE_CONFIG_SAMPLE = "fedgin_site.json.sample"
SITE_README = "FEDGIN_README.txt"

_README = """FedGIN site {site} (organisation {org}), fedgin-flare {version}
========================================================

This kit was provisioned for the project {project}. Jobs carry no code: this site runs only the
fedgin-flare package its IT installs; local/resources.json.default allow-lists NVFlare's default classes plus
exactly the FedGIN classes.
local/authorization.json.default denies bring-your-own-code (byoc) to every role.

1. Install the pinned package, the wheel the project admin built from the git tag of version {version}:
       sha256sum fedgin_flare-{version}-py3-none-any.whl    # must equal the published sha256
       install torch first (CPU or CUDA build, as the repository's install.sh does), then
       python -m pip install fedgin_flare-{version}-py3-none-any.whl
2. Prepare this site's data (images and labels never leave the site):
       fedgin prepare --site {site} --input <dataset> --output {data_dir} --modality <ct|mri> --organs <...>
3. Point the Executor at the datalist: copy local/{sample} to local/fedgin_site.json and set
   "datalist" to the datalist.json that step 2 wrote.
4. Start the client:  startup/start.sh   (it runs python3 from PATH: activate the environment of step 1 first;
   outbound connection to the server only, no inbound port).

Keep startup/client.key secret: it is this site's identity. A local/resources.json or local/authorization.json,
if you write one, replaces the *.default file completely (keep the class_allow_list and "byoc": "none").
"""


class FedGINKitBuilder(Builder):
    """Harden the server and client kits for FedGIN: class allow-list, no BYOC, a site data-config sample.

    Args:
        data_root: folder under which the sample ``fedgin_site.json`` puts ``<site>/datalist.json``.
    """

    def __init__(self, data_root: str = "/data/fedgin"):
        if not isinstance(data_root, str) or not data_root.startswith("/"):
            raise ValueError(f"data_root must be an absolute path, got {data_root!r}")
        self.data_root = data_root.rstrip("/")

    def build(self, project: Project, ctx: ProvisionContext):
        """Edit ``local/`` of the server and of every client kit (admin kits are left as they are)."""
        server = project.get_server()
        if server:
            self._apply_policy(Path(ctx.get_local_dir(server)), "server")
        for client in project.get_clients():
            local = Path(ctx.get_local_dir(client))
            self._apply_policy(local, "client")
            self._resource_manager(local)
            self._log_streaming(local, client.get_prop("allow_log_streaming"))
            data_dir = f"{self.data_root}/{client.name}"
            sample = {"datalist": f"{data_dir}/datalist.json"}
            (local / SITE_CONFIG_SAMPLE).write_text(json.dumps(sample, indent=2) + "\n")
            (local / SITE_README).write_text(_README.format(
                site=client.name, org=client.org, project=project.name, version=fedgin.__version__,
                data_dir=data_dir, sample=SITE_CONFIG_SAMPLE))

    @staticmethod
    def _resource_manager(local: Path) -> None:
        """The site's GPU manager says why it refuses a job (``fedgin.flare.resources.SiteGPUResourceManager``)."""
        from fedgin.flare.kit_setup import GPU_MANAGER, SITE_GPU_MANAGER

        path = local / ProvFileName.RESOURCES_JSON_DEFAULT
        resources = json.loads(path.read_text())
        for c in resources.get("components", []):
            if c.get("id") == "resource_manager" and c.get("path") == GPU_MANAGER:
                c["path"] = SITE_GPU_MANAGER
        path.write_text(json.dumps(resources, indent=2) + "\n")

    @staticmethod
    def _log_streaming(local: Path, allowed) -> None:
        """Honour ``allow_log_streaming: false`` on a client in project.yml. NVFlare 2.9's StaticFileBuilder reads it
        with a truthiness fallback (``Entity.get_prop_fb``), so a site's ``false`` silently becomes the default
        ``true`` and the site's error log (which names its files) is streamed to the server."""
        if allowed is None:
            return
        if not isinstance(allowed, bool):
            raise ValueError(f"allow_log_streaming must be true or false, not {allowed!r}")
        path = local / ProvFileName.RESOURCES_JSON_DEFAULT
        resources = json.loads(path.read_text())
        resources["allow_log_streaming"] = allowed
        path.write_text(json.dumps(resources, indent=2) + "\n")

    @staticmethod
    def _apply_policy(local: Path, role: str) -> None:
        resources = local / ProvFileName.RESOURCES_JSON_DEFAULT
        if not resources.is_file():
            raise RuntimeError(f"{resources} missing: list FedGINKitBuilder after StaticFileBuilder in project.yml")
        if (local / ProvFileName.SIGNATURE_JSON).exists():
            raise RuntimeError(f"{local} is already signed: list FedGINKitBuilder before SignatureBuilder")
        site_policy.extend_resources(resources, role)
        authz = local / ProvFileName.AUTHORIZATION_JSON_DEFAULT
        authz.write_text(json.dumps(site_policy.authorization_policy(), indent=2) + "\n")
