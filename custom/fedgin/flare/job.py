"""Build a runnable FLARE job from the one job definition in ``jobs/fedgin`` plus values.

A job variant (method, rounds, classes, model size, data location) is a set of values written into the top-level
variables of ``config_fed_server.json`` / ``config_fed_client.json``; no JSON tree is copied by hand. The
``fedgin`` package is copied into ``app/custom/`` (NVFlare 2.9 BYOC: custom code must physically be there; a
symlink would arrive empty), so the job runs on sites that have only nvflare, torch and monai installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import fedgin
from fedgin.common.options import OptionError, check_range, check_type

__all__ = ["default_template", "settable_variables", "build_job", "check_job_values", "task_from_sites",
           "task_from_datalists", "STRUCTURAL_KEYS"]

STRUCTURAL_KEYS = {"format_version", "components", "workflows", "executors", "task_data_filters",
                   "task_result_filters", "server"}
CONFIG_FILES = ("config_fed_server.json", "config_fed_client.json")


def default_template() -> Path:
    """``jobs/fedgin`` of the repository this package was installed from (editable install)."""
    path = Path(fedgin.__file__).resolve().parents[2] / "jobs" / "fedgin"
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"job template not found at {path}; pass the path of jobs/fedgin explicitly")
    return path


def _configs(job: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name in CONFIG_FILES:
        f = job / "app" / "config" / name
        try:
            out[name] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: cannot read job config: {e}") from e
    return out


def settable_variables(template: str | Path | None = None) -> dict[str, Any]:
    """Top-level variables of the job's configs with their template values (shared keys must agree)."""
    template = Path(template) if template else default_template()
    values: dict[str, Any] = {}
    for name, cfg in _configs(template).items():
        for k, v in cfg.items():
            if k in STRUCTURAL_KEYS:
                continue
            if k in values and values[k] != v:
                raise ValueError(f"{template}: variable {k!r} differs between the server and client configs")
            values[k] = v
    return values


def build_job(output: str | Path, values: dict[str, Any] | None = None, template: str | Path | None = None,
              name: str | None = None, code: str = "job", resume_from: str | Path | None = None) -> Path:
    """Write a runnable job folder.

    Args:
        output: job folder to create (replaced if it holds an earlier job, refused if it holds anything else).
        values: variable → value; ``classes`` also sets ``num_classes``. Unknown variables raise ``ValueError``.
        template: the job definition (default ``jobs/fedgin``).
        name: job name in ``meta.json``.
        code: ``job`` copies the ``fedgin`` package into ``app/custom/`` (bring-your-own-code: the simulator);
            ``site`` writes no code: every participant runs its installed ``fedgin`` and allow-lists its classes
            (POC and production, see ``fedgin.flare.site_policy``).
        resume_from: a global model file of an earlier run of this job (``FL_global_model.pt``, which records its
            round r): the new job starts from it at round r + 1 and runs up to ``num_rounds`` in total. The file
            is copied into ``app/config/`` so that the job carries it to the server.

    Returns:
        The job folder, ready for ``nvflare simulator`` or ``nvflare job submit``.
    """
    if code not in ("job", "site"):
        raise ValueError(f"code must be 'job' or 'site', not {code!r}")
    template = Path(template) if template else default_template()
    output = Path(output)
    values = dict(values or {})
    known = settable_variables(template)
    if "classes" in values:
        values["num_classes"] = len(values["classes"])
    if "share_local_models" in values:  # the server's cross-site evaluation asks for local models only if shared
        values["submit_model_task"] = "submit_model" if values["share_local_models"] else ""
    if "privacy" in values:
        from fedgin.flare.privacy import check_privacy

        check_privacy(values["privacy"])
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown job variable(s) {unknown}; settable: {sorted(known)}")
    values = check_job_values(values, known)
    if "method" in values:
        from fedgin.engine.methods import model_domains

        domains = model_domains(values["method"])  # raises on an unknown method
        if domains and not values.get("domains"):
            values["domains"] = domains  # DSBN: one batch-norm branch per modality
    resume = _resume_values(Path(resume_from), {**known, **values}) if resume_from else None
    if resume:
        values.update(resume)
    if output.exists():
        if not (output / "meta.json").is_file():
            raise FileExistsError(f"{output} exists and is not a job folder; refusing to overwrite it")
        shutil.rmtree(output)
    tmp = output.with_name(output.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(template, tmp, ignore=shutil.ignore_patterns("custom", "__pycache__"))
    for fname, cfg in _configs(tmp).items():
        for k, v in values.items():
            if k in cfg:
                cfg[k] = v
        (tmp / "app" / "config" / fname).write_text(json.dumps(cfg, indent=2) + "\n")
    meta = json.loads((tmp / "meta.json").read_text())
    if name:
        meta["name"] = name
    if "min_clients" in values:
        meta["min_clients"] = values["min_clients"]
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if code == "job":
        pkg = Path(fedgin.__file__).resolve().parent
        shutil.copytree(pkg, tmp / "app" / "custom" / "fedgin",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if resume:
        from fedgin.flare.persistor import RESUME_FILE

        shutil.copyfile(resume_from, tmp / "app" / "config" / RESUME_FILE)
    tmp.rename(output)
    return output


#: variable -> check_range arguments (types come from the template's values)
_RANGES: dict[str, dict[str, Any]] = {
    "min_clients": {"low": 1}, "num_rounds": {"low": 1}, "num_classes": {"low": 1}, "local_epochs": {"low": 0},
    "local_steps": {"low": 0}, "max_num_samples": {"low": 0}, "start_round": {"low": 0},
    "wait_time_after_min_received": {"low": 0}, "cse_submit_model_timeout": {"low": 0, "low_open": True},
    "cse_validation_timeout": {"low": 0, "low_open": True},
}
_KINDS = {"clip_percentiles": "optional_float_list", "spacing_mm": "float_list", "size_px": "int_list",
          "classes": "str_list"}


#: the ``TrainConfig`` fields that are job variables of the same name: all of them but ``model``, whose fields
#: are job variables too (``channels``, ``strides``, ...)
TRAIN_VARIABLES = ("method", "augment_args", "batch_size", "lr", "weight_decay", "plateau_factor", "plateau_patience",
                   "min_lr", "lambda_dice", "lambda_focal", "focal_gamma", "loss_variant", "consistency_weight",
                   "sampler", "amp", "channels_last", "seed", "eval_batch_size")


def train_job_values(train: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig`` values (plain JSON, ``model`` nested) -> the job variables that carry them."""
    out = {k: v for k, v in train.items() if k != "model"}
    unknown = sorted(set(out) - set(TRAIN_VARIABLES))
    if unknown:
        raise OptionError(f"train values {unknown}: not TrainConfig fields; known: {list(TRAIN_VARIABLES)} and model")
    return {**out, **dict(train.get("model") or {})}


def check_job_values(values: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Types (those of the template's values), ranges and consistency of job variables, before anything is
    written; the sites' training values go through ``TrainConfig.from_dict``, the one check of training values.

    Raises:
        OptionError: ``job variable <name>: <problem>``: what NVFlare or a site would refuse (or do no work with)
            only after the job was submitted.
    """
    from fedgin.engine import TrainConfig

    out = dict(values)
    for key, value in values.items():
        template = known[key]
        kind = _KINDS.get(key) or {bool: "bool", int: "int", float: "float", str: "str", list: "list",
                                   dict: "dict"}.get(type(template))
        where = f"job variable {key}"
        if kind:
            out[key] = value = check_type(where, value, kind)
        if key in _RANGES:
            check_range(where, value, **_RANGES[key])
    merged = {**known, **out}
    classes = merged["classes"]
    if not classes or len(set(classes)) != len(classes) or "background" in classes or not all(classes):
        raise OptionError(f"job variable classes: give distinct class names (not 'background'), got {classes}")
    if len(merged["size_px"]) != 2 or min(merged["size_px"]) < 1:
        raise OptionError(f"job variable size_px: two positive integers [H, W], got {merged['size_px']}")
    if len(merged["spacing_mm"]) != 2 or min(merged["spacing_mm"]) <= 0:
        raise OptionError(f"job variable spacing_mm: two positive numbers of mm, got {merged['spacing_mm']}")
    if merged["local_epochs"] < 1 and merged["local_steps"] < 1:
        raise OptionError("job variables local_epochs and local_steps: a round would train nothing (give "
                          f"local_epochs >= 1 or local_steps >= 1, got {merged['local_epochs']} and "
                          f"{merged['local_steps']})")
    device = merged["device"]
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise OptionError(f"job variable device: auto, cpu, cuda or cuda:N, got {device!r}")
    model = {k: merged[k] for k in ("channels", "strides", "num_res_units", "norm", "dropout", "domains", "arch",
                                    "test_input")}
    train = {k: merged[k] for k in TRAIN_VARIABLES}
    TrainConfig.from_dict({**train, "model": model}, source="job variables")
    return out


def _resume_values(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``start_round``, the remaining ``num_rounds`` and ``resume_from`` for a job resuming from ``path``.

    Raises:
        ValueError: not a FedGIN global model, a model of another shape than the job's, or no round left.
    """
    from fedgin.engine.model import SegUNet
    from fedgin.flare.persistor import RESUME_FILE, read_round

    record = read_round(path)
    args = {k: values[k] for k in ("num_classes", "channels", "strides", "num_res_units", "norm", "dropout",
                                   "domains", "test_input", "arch")}
    expected = {k: tuple(v.shape) for k, v in SegUNet(**args).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in record["weights"].items()}
    if found != expected:
        diff = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise ValueError(f"{path}: its model does not fit this job's model (e.g. {diff[:3]}); resume with the "
                         "same classes, channels, strides and method as the run that wrote it")
    start, total = int(record["round"]) + 1, int(values["num_rounds"])
    if start >= total:
        raise ValueError(f"{path}: holds the model after round {start} and the job has {total} rounds: nothing "
                         "left to run (raise --rounds)")
    return {"start_round": start, "num_rounds": total - start, "resume_from": RESUME_FILE}


def task_from_sites(data_root: Path, values: dict, sites: list[str] | None = None) -> dict:
    """Take classes, slice size and spacing from the sites' datalists under ``data_root`` (all must agree);
    ``sites`` restricts this to those site folders (default: every ``<data_root>/*/datalist.json``)."""
    paths = [data_root / s / "datalist.json" for s in sites] if sites else sorted(data_root.glob("*/datalist.json"))
    values = task_from_datalists(paths, values)
    if paths:
        print(f"task from {data_root}: classes {values['classes']}, {values['size_px']} px at "
              f"{values['spacing_mm']} mm")
    return values


def task_from_datalists(paths: list[Path], values: dict) -> dict:
    """Set ``classes``, ``size_px``, ``spacing_mm`` and ``clip_percentiles`` of ``values`` from these datalists
    (which must agree with each other and with values already set)."""
    from fedgin.data.datalist import load_datalist, task_labels

    found = {}
    for path in paths:
        d = load_datalist(path)
        from fedgin.engine.training import clip_percentiles_of

        task = {"classes": task_labels(d), "size_px": list(d["size_px"]), "spacing_mm": list(d["spacing_mm"]),
                "clip_percentiles": clip_percentiles_of(d)}
        for key, value in task.items():
            if key in found and found[key][0] != value:
                raise ValueError(f"{path}: {key} {value} differs from {found[key][0]} in {found[key][1]}")
            found.setdefault(key, (value, path))
    for key, (value, path) in found.items():
        if key in values and values[key] != value:
            raise ValueError(f"--{'organs' if key == 'classes' else key}: {values[key]} differs from {value} in {path}")
        values[key] = value
    return values
