"""What a participant's IT sets in its startup kit after unpacking it, before ``startup/start.sh``.

- a site: ``local/fedgin_site.json`` (the datalist its ``fedgin prepare`` wrote) and, where it has GPUs, the
  number and memory the kit's ``GPUResourceManager`` offers to jobs (``resource_spec``);
- the server: job storage and snapshots in its own workspace instead of NVFlare's ``/tmp/nvflare/...`` defaults
  (a reboot empties ``/tmp``, and with it every job's record and result).

Each writes ``local/resources.json`` (which replaces ``resources.json.default`` completely) from the ``.default``
file, keeping the allow-list and everything else ``FedGINKitBuilder`` put there. ``fedgin kit setup`` runs these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["setup_site", "setup_server_storage", "setup_gpus", "site_resources", "KitError", "SITE_CONFIG_FILE"]

SITE_CONFIG_FILE = "fedgin_site.json"
GPU_MANAGER = "nvflare.app_common.resource_managers.gpu_resource_manager.GPUResourceManager"
SITE_GPU_MANAGER = "fedgin.flare.resources.SiteGPUResourceManager"  # FedGINKitBuilder's: explains a refusal
STORAGE = {"job_manager": "jobs-storage", "snapshot_persistor": "snapshot-storage"}


class KitError(ValueError):
    pass


def _kind(kit: Path) -> str:
    startup = kit / "startup"
    for kind, name in (("server", "fed_server.json"), ("client", "fed_client.json"), ("admin", "fed_admin.json")):
        if (startup / name).is_file():
            return kind
    raise KitError(f"{kit}: not a startup kit (no startup/fed_server.json, fed_client.json or fed_admin.json)")


def site_resources(kit: str | Path) -> dict[str, Any]:
    """The resources the kit runs with: ``local/resources.json`` if the site wrote one, else the ``.default``."""
    local = Path(kit) / "local"
    for name in ("resources.json", "resources.json.default"):
        path = local / name
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise KitError(f"{path}: not valid JSON ({e})") from e
    raise KitError(f"{local}: no resources.json(.default): not a provisioned kit")


def _write(kit: Path, resources: dict[str, Any]) -> Path:
    from fedgin.common.outputs import write_text_atomic

    return write_text_atomic(kit / "local" / "resources.json", json.dumps(resources, indent=2) + "\n")


def setup_site(kit: str | Path, datalist: str | Path) -> Path:
    """Point a site kit at its data: ``local/fedgin_site.json`` = ``{"datalist": <absolute path>}``."""
    kit, datalist = Path(kit).resolve(), Path(datalist).resolve()
    if _kind(kit) != "client":
        raise KitError(f"{kit}: not a site (client) kit")
    if not datalist.is_file():
        raise KitError(f"{datalist}: no such datalist (run fedgin prepare at this site first)")
    from fedgin.common.outputs import write_text_atomic

    return write_text_atomic(kit / "local" / SITE_CONFIG_FILE, json.dumps({"datalist": str(datalist)}, indent=2) + "\n")


def setup_server_storage(kit: str | Path, root: str | Path | None = None) -> Path:
    """Keep the server's job store and snapshots under ``root`` (default: the kit's own folder), absolute paths
    (NVFlare's ``FilesystemStorage`` refuses relative ones)."""
    kit = Path(kit).resolve()
    if _kind(kit) != "server":
        raise KitError(f"{kit}: not the server kit")
    root = Path(root).resolve() if root else kit
    resources = site_resources(kit)
    snapshot = resources.get("snapshot_persistor", {}).get("args", {}).get("storage", {}).get("args")
    managers = [c for c in resources.get("components", []) if c.get("id") == "job_manager"]
    if snapshot is None or not managers:
        raise KitError(f"{kit}/local: no snapshot_persistor storage or job_manager to move (not a 2.9 server kit?)")
    snapshot["root_dir"] = str(root / STORAGE["snapshot_persistor"])
    managers[0].setdefault("args", {})["uri_root"] = str(root / STORAGE["job_manager"])
    return _write(kit, resources)


def setup_gpus(kit: str | Path, num_gpus: int, mem_per_gpu_gib: float = 0, check_host: bool = True) -> Path:
    """Offer ``num_gpus`` GPUs of ``mem_per_gpu_gib`` GiB each to jobs (the kit's ``GPUResourceManager``).

    Raises:
        KitError: not a site kit, or (``check_host``) more GPUs than this machine has: NVFlare's manager would
            refuse to start the site with a less clear message.
    """
    kit = Path(kit).resolve()
    if _kind(kit) != "client":
        raise KitError(f"{kit}: not a site (client) kit")
    if num_gpus < 0 or mem_per_gpu_gib < 0:
        raise KitError(f"GPUs and their memory cannot be negative ({num_gpus}, {mem_per_gpu_gib} GiB)")
    if check_host and num_gpus:
        import torch

        have = torch.cuda.device_count()
        if num_gpus > have:
            raise KitError(f"{kit}: cannot offer {num_gpus} GPU(s): this machine has {have} (torch.cuda)")
    resources = site_resources(kit)
    managers = [c for c in resources.get("components", []) if c.get("id") == "resource_manager"]
    if not managers or managers[0].get("path") not in (GPU_MANAGER, SITE_GPU_MANAGER):
        raise KitError(f"{kit}/local: no GPUResourceManager 'resource_manager' component to configure")
    managers[0]["args"] = {**managers[0].get("args", {}), "num_of_gpus": int(num_gpus),
                           "mem_per_gpu_in_GiB": mem_per_gpu_gib}
    return _write(kit, resources)
