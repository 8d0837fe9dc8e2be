"""What a FedGIN site (or the server) lets a job run: the class allow-list and the authorization policy.

Decision (production and POC): **jobs carry no code.** Every participant installs the pinned ``fedgin-flare``
package itself, and its ``local/resources.json`` allow-lists exactly the component classes the FedGIN job uses
(NVFlare 2.9 checks every component ``path`` of a job without ``custom/`` against that list). Its
``local/authorization.json`` denies the ``byoc`` right to every role, so nobody, the project admin included, can
ship Python code to a hospital through a job; a job can only choose values (method, rounds, ...) for classes the
hospital's IT installed and reviewed. Code changes reach a site as a new package version that its IT installs.

The simulator keeps bring-your-own-code (``fedgin job`` copies the package into ``app/custom/``) because it runs
only on the researcher's own machine.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

__all__ = [
    "SERVER_CLASSES",
    "CLIENT_CLASSES",
    "allow_list",
    "authorization_policy",
    "job_component_paths",
    "extend_resources",
    "RIGHTS",
]

# Classes of the FedGIN job (fedgin.flare.recipe) that NVFlare's default allow-list lacks (exact paths, no package prefixes).
SERVER_CLASSES = (
    "fedgin.flare.persistor.RoundPersistor",
    "fedgin.engine.model.SegUNet",
    "fedgin.flare.aggregator.CheckedAggregator",
    "fedgin.flare.model_selection.FedGINModelSelector",
    "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver",
    # federated optimisers (fedgin.engine.methods): SCAFFOLD's controller and FedOpt's server step (its server
    # optimiser and scheduler are plain values, config_type "dict", built by the generator, not by the job loader)
    "nvflare.app_common.workflows.scatter_and_gather_scaffold.ScatterAndGatherScaffold",
    "fedgin.flare.server_optim.FedOptGenerator",
)
CLIENT_CLASSES = (
    "fedgin.flare.executor.FedGINExecutor",
    "fedgin.flare.stats.SiteStatistics",  # fedgin stats: the site's federated-statistics generator
    "fedgin.flare.privacy.PrivacyFilter",
    "fedgin.flare.audit.OutgoingAudit",
    "nvflare.app_common.widgets.streaming.AnalyticsSender",
)

# The rights NVFlare 2.9 knows (nvflare/fuel/sec/authz), as in its default authorization.json.
RIGHTS = ("submit_job", "clone_job", "manage_job", "download_job", "view", "operate", "shell_commands", "byoc",
          "server-predeployed-flwr")


def allow_list(role: str) -> list[str]:
    """NVFlare's default allow-list plus the FedGIN classes of ``role`` (``server`` or ``client``)."""
    extra = {"server": SERVER_CLASSES, "client": CLIENT_CLASSES}[role]
    return list(DEFAULT_CLASS_ALLOW_LIST) + [c for c in extra if c not in DEFAULT_CLASS_ALLOW_LIST]


def authorization_policy() -> dict[str, Any]:
    """NVFlare's default role policy with ``byoc`` denied to every role (``project_admin`` spelled out) and the
    sites' operation (``operate``, ``shell_commands``) reserved for their ``org_admin`` (NVFlare's default gives
    it to a ``lead`` too)."""
    return {
        "format_version": "1.0",
        "permissions": {
            "project_admin": {**{r: "any" for r in RIGHTS}, "byoc": "none", "server-predeployed-flwr": "none"},
            "org_admin": {
                "submit_job": "none", "clone_job": "none", "manage_job": "o:submitter",
                "download_job": "o:submitter", "view": "any", "operate": "o:site", "shell_commands": "o:site",
                "byoc": "none", "server-predeployed-flwr": "none",
            },
            # a researcher runs jobs; operating a hospital's site (restart, shutdown, its files) is its IT's
            "lead": {
                "submit_job": "any", "clone_job": "n:submitter", "manage_job": "n:submitter",
                "download_job": "n:submitter", "view": "any", "operate": "none", "shell_commands": "none",
                "byoc": "none", "server-predeployed-flwr": "none",
            },
            "member": {"view": "any"},
        },
    }


def job_component_paths(config: Any) -> set[str]:
    """Every component ``path``/``class_path`` in a job config, nested ones included (what the site checks); a
    dict of ``config_type`` ``"dict"`` is a value NVFlare does not build (FedOpt's optimiser arguments)."""
    found: set[str] = set()
    if isinstance(config, dict):
        if config.get("config_type") == "dict":
            return found
        for key in ("path", "class_path"):
            if isinstance(config.get(key), str) and "." in config[key]:
                found.add(config[key])
        for value in config.values():
            found |= job_component_paths(value)
    elif isinstance(config, list):
        for value in config:
            found |= job_component_paths(value)
    return found


def extend_resources(resources_file: str | Path, role: str) -> dict[str, Any]:
    """Add the FedGIN classes to the ``class_allow_list`` of a kit's ``resources.json(.default)``, in place.

    Keeps everything else of the file (resource manager, snapshot persistor, ...) and enforcement ``enforce``.
    """
    path = Path(resources_file)
    try:
        resources = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the site resources: {e}") from e
    resources = copy.deepcopy(resources)
    listed = resources.get("class_allow_list", list(DEFAULT_CLASS_ALLOW_LIST))
    resources["class_allow_list"] = listed + [c for c in allow_list(role) if c not in listed]
    resources["class_list_enforcement_mode"] = "enforce"
    path.write_text(json.dumps(resources, indent=2) + "\n")
    return resources
