"""FedGIN jobs from values: checked, then built as an NVFlare Job API recipe (``fedgin.flare.recipe``).

A job variant (method, rounds, classes, model size, data location) is a set of values; ``job_values`` checks them
against ``JOB_DEFAULTS`` (types, ranges, the sites' ``TrainConfig``) before anything is built, ``make_recipe``
builds the ``FedGINRecipe`` that ``SimEnv``/``ProdEnv`` run, and ``build_job`` exports it as a job folder for
``nvflare simulator`` or ``nvflare job submit``. With ``code="job"`` the whole ``fedgin`` package travels in the
job's ``app/custom/`` (NVFlare 2.9 BYOC: custom code must physically be there; a symlink would arrive empty), so
the job runs on sites that have only nvflare, torch and monai installed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import fedgin
from fedgin.common.options import OptionError, check_range, check_type
from fedgin.flare.recipe import TRAIN_VARIABLES

__all__ = ["job_name", "settable_variables", "job_values", "make_recipe", "build_job", "export_recipe", "check_job_values", "task_from_sites",
           "task_from_datalists"]


def settable_variables() -> dict[str, Any]:
    """Every job value with its default (``fedgin.flare.recipe.JOB_DEFAULTS``)."""
    from fedgin.flare.recipe import JOB_DEFAULTS

    return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
            for k, v in JOB_DEFAULTS.items()}


def job_name(text: str) -> str:
    """``text`` as an NVFlare job name (letters, digits, ``.``, ``_``, ``-``; a method's ``+`` becomes ``_``)."""
    import re

    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    return name if name[:1].isalnum() else f"job{name}"


def job_values(values: dict[str, Any] | None = None, resume_from: str | Path | None = None) -> dict[str, Any]:
    """The defaults overridden by ``values``, checked, with what follows from them (``num_classes``; DSBN's
    ``domains``; ``start_round``/``num_rounds``/``resume_from`` of a resumed run).

    Raises:
        ValueError: an unknown variable, method or privacy filter, a bad type or range (``OptionError``), or a
            resume file that does not fit.
    """
    known = settable_variables()
    values = dict(values or {})
    values.pop("num_classes", None)  # follows from classes
    if "privacy" in values:
        from fedgin.flare.privacy import check_privacy

        check_privacy(values["privacy"])
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown job variable(s) {unknown}; settable: {sorted(known)}")
    values = check_job_values(values, known)
    merged = {**known, **values}
    from fedgin.engine.methods import model_domains

    domains = model_domains(merged["method"])  # raises on an unknown method
    if domains and not merged["domains"]:
        merged["domains"] = domains  # DSBN: one batch-norm branch per modality
    merged["num_classes"] = len(merged["classes"])
    if merged["sites"] and (len(set(merged["sites"])) != len(merged["sites"]) or "server" in merged["sites"]
                            or merged["min_clients"] > len(merged["sites"])):
        raise ValueError(f"sites {merged['sites']}: distinct site names, not 'server', at least min_clients = "
                         f"{merged['min_clients']} of them")
    if resume_from:
        merged.update(_resume_values(Path(resume_from), merged))
    return merged


def make_recipe(values: dict[str, Any] | None = None, name: str = "fedgin", code: str = "job",
                resume_from: str | Path | None = None):
    """The ``FedGINRecipe`` of these values (see ``build_job`` for ``code`` and ``resume_from``)."""
    from fedgin.flare.recipe import FedGINRecipe

    if code not in ("job", "site"):
        raise ValueError(f"code must be 'job' or 'site', not {code!r}")
    recipe = FedGINRecipe(job_values(values, resume_from), name=name)
    job = recipe._job  # noqa: SLF001 -- the recipe's FedJob; Recipe has no public accessor in 2.9
    if resume_from:
        job.add_file_to_server(str(Path(resume_from).resolve()), app_folder_type="config")
    if code == "job":
        job.add_file_to_clients(str(Path(fedgin.__file__).resolve().parent), dest_dir="fedgin")
        job.add_file_to_server(str(Path(fedgin.__file__).resolve().parent), dest_dir="fedgin")
    return recipe


def build_job(output: str | Path, values: dict[str, Any] | None = None, name: str | None = None,
              code: str = "job", resume_from: str | Path | None = None) -> Path:
    """Write a runnable job folder (the recipe's export).

    Args:
        output: job folder to create (replaced if it holds an earlier job, refused if it holds anything else).
        values: variable -> value (``settable_variables`` lists them); unknown variables raise ``ValueError``.
        name: job name in ``meta.json`` (default: the folder's name).
        code: ``job`` puts the ``fedgin`` package into ``app/custom/`` (bring-your-own-code: the simulator);
            ``site`` writes no code: every participant runs its installed ``fedgin`` and allow-lists its classes
            (POC and production, see ``fedgin.flare.site_policy``).
        resume_from: a global model file of an earlier run of this job (``FL_global_model.pt``, which records its
            round r): the new job starts from it at round r + 1 and runs up to ``num_rounds`` in total. The file
            travels in the job's ``app/config/``.

    Returns:
        The job folder, ready for ``nvflare simulator`` or ``nvflare job submit``.
    """
    output = Path(output)
    return export_recipe(make_recipe(values, name=name or Path(output).name, code=code, resume_from=resume_from),
                         output)


def export_recipe(recipe, output: str | Path) -> Path:
    """Write ``recipe``'s job folder at ``output`` (replacing an earlier job there, refusing anything else)."""
    output = Path(output)
    if output.exists() and not (output / "meta.json").is_file():
        raise FileExistsError(f"{output} exists and is not a job folder; refusing to overwrite it")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        recipe.export(tmp)
        built = Path(tmp) / recipe.name
        for cache in list(built.rglob("__pycache__")):
            shutil.rmtree(cache)
        if output.exists():
            shutil.rmtree(output)
        built.rename(output)
    return output


#: variable -> check_range arguments (types come from the defaults' values)
_RANGES: dict[str, dict[str, Any]] = {
    "min_clients": {"low": 1}, "num_rounds": {"low": 1}, "num_classes": {"low": 1}, "local_epochs": {"low": 0},
    "local_steps": {"low": 0}, "max_num_samples": {"low": 0}, "start_round": {"low": 0}, "gpus_per_site": {"low": 0},
    "wait_time_after_min_received": {"low": 0}, "cse_submit_model_timeout": {"low": 0, "low_open": True},
    "cse_validation_timeout": {"low": 0, "low_open": True},
}
_KINDS = {"clip_percentiles": "optional_float_list", "spacing_mm": "float_list", "size_px": "int_list",
          "classes": "str_list", "sites": "str_list"}


def train_job_values(train: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig`` values (plain JSON, ``model`` nested) -> the job variables that carry them."""
    out = {k: v for k, v in train.items() if k != "model"}
    unknown = sorted(set(out) - set(TRAIN_VARIABLES))
    if unknown:
        raise OptionError(f"train values {unknown}: not TrainConfig fields; known: {list(TRAIN_VARIABLES)} and model")
    return {**out, **dict(train.get("model") or {})}


def check_job_values(values: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Types (those of the defaults), ranges and consistency of job variables, before anything is
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
    from fedgin.flare.recipe import TRACKING

    if merged["tracking"] not in TRACKING:
        raise OptionError(f"job variable tracking: one of {', '.join(TRACKING)}, got {merged['tracking']!r}")
    from fedgin.flare.executor import SCAFFOLD_CONTROL_WEIGHTS

    if merged["scaffold_control_weights"] not in SCAFFOLD_CONTROL_WEIGHTS:
        raise OptionError(f"job variable scaffold_control_weights: one of {', '.join(SCAFFOLD_CONTROL_WEIGHTS)}, "
                          f"got {merged['scaffold_control_weights']!r}")
    import torch

    from fedgin.flare.server_optim import check_server_optimizer

    check_server_optimizer(merged["server_optimizer"], "job variable server_optimizer", torch.optim.Optimizer)
    if merged["server_lr_scheduler"]:
        check_server_optimizer(merged["server_lr_scheduler"], "job variable server_lr_scheduler",
                               torch.optim.lr_scheduler.LRScheduler)
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
    from fedgin.flare.persistor import read_round

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
    return {"start_round": start, "num_rounds": total - start, "resume_from": path.name}


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
