"""One training run of an experiment (local, centralized or federated) and its evaluation, with resume.

Every experiment (``fedgin compare``, ``fedgin experiment ...``) is a list of such runs on prepared sites, so they
all share one definition of the training settings, all with the same budget: ``rounds`` passes over each site's
training slices (``rounds`` epochs for local and centralized training; ``rounds`` FLARE rounds of one local epoch
for the federation, run in the real ``nvflare simulator``).

- ``local`` / ``centralized``: ``fedgin.engine.training.train`` on the pooled training slices of ``sites``; the final
  model is evaluated.
- ``federated``: the FedGIN recipe run in ``SimEnv`` with ``sites`` as clients; the final global model is evaluated,
  or, with ``heldout`` (a held-out site's datalist), the best global model chosen at the server on its validation
  cases. FedBN has no global batch norm: each test datalist is evaluated with the local model of a training site
  of the same modality.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fedgin.engine.methods import Method, get_method

__all__ = ["SETTINGS", "train_run", "evaluate_run", "cached_run"]

SETTINGS = ("local", "centralized", "federated")


def _model_values(method: Method, channels: list[int], test_input: str) -> dict[str, Any]:
    return {"channels": list(channels), "strides": [2] * (len(channels) - 1), "domains": method.domains,
            "test_input": method.test_input(test_input)}


def train_run(setting: str, method: str, sites: dict[str, Path], out: Path, *, rounds: int, channels: list[int],
              seed: int = 0, test_input: str = "raw", heldout: Path | None = None,
              job_values: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
              steps: int | None = None) -> dict[str, Any]:
    """Train one model; returns ``{"model": path | {site: path} (FedBN), "seconds": float, ...}``.

    Args:
        setting: ``local`` (one site), ``centralized`` (pooled sites) or ``federated``.
        sites: site name → datalist path (the federation's clients, or the data pooled).
        heldout: federated only: the held-out site whose validation cases select the best global model.
        job_values: extra job variables for the federated run (e.g. ``{"local_epochs": 2}``).
        train: further ``TrainConfig`` values (plain JSON, e.g. ``{"sampler": "organ", "loss_variant":
            "authors"}``; ``model`` a dict of ``ModelConfig`` values), for every setting; the job variables of the
            same names in a federation. ``method`` and ``seed`` are the arguments.
        steps: local / centralized only: train exactly this many optimiser steps instead of ``rounds`` epochs
            (the step-matched control of ``fedgin compare``).
    """
    from fedgin.engine import TrainConfig

    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; known: {SETTINGS}")
    method_obj = get_method(method)  # resolved once, here: everything below reads this object
    train = dict(train or {})
    clash = sorted({"method", "seed"} & set(train))
    if clash:
        raise ValueError(f"train values {clash}: give them as the run's own arguments")
    model = {**_model_values(method_obj, channels, test_input), **dict(train.pop("model", None) or {})}
    cfg = TrainConfig.from_dict({**train, "method": method, "seed": seed, "model": model}, source="train values")
    t0 = time.perf_counter()
    if setting == "federated":
        if steps is not None:
            raise ValueError("steps: a federation's budget is its rounds (and local epochs), not a step count")
        from fedgin.flare.job import train_job_values

        extra = {**train_job_values({**train, "model": model}), **(job_values or {})}
        return _federated(method_obj, sites, out, rounds, seed, heldout, extra, t0)
    if method_obj.needs_federation:
        raise ValueError(f"method {method!r} needs a federation (setting 'federated')")
    if setting == "local" and len(sites) != 1:
        raise ValueError(f"local training takes one site, got {sorted(sites)}")
    from fedgin.engine.training import train

    res = train(list(sites.values()), out / "train", cfg, epochs=None if steps else rounds, steps=steps,
                progress=False)
    return {"model": res["model"], "seconds": time.perf_counter() - t0}


def _federated(method: Method, sites, out, rounds, seed, heldout, extra, t0) -> dict[str, Any]:
    from fedgin.flare.job import export_recipe, job_name, make_recipe, task_from_sites
    from fedgin.flare.simulate import run_simulator

    roots = {Path(p).parents[1] for p in sites.values()}
    for site, p in sites.items():
        if Path(p).parent.name != site:
            raise ValueError(f"{p}: a federated site's datalist must be <data_root>/{site}/datalist.json")
    if len(roots) != 1:
        raise ValueError(f"the federation's sites must share one data root, got {sorted(map(str, roots))}")
    root = roots.pop()
    values = {"method": method.name, "num_rounds": rounds, "seed": seed, "data_root": str(root),
              "min_clients": len(sites), **extra}
    if heldout is not None:
        values["heldout_datalist"] = str(Path(heldout).resolve())
    values = task_from_sites(root, values, sites=list(sites))
    recipe = make_recipe(values, name=job_name(out.name))
    export_recipe(recipe, out / "job")  # what ran, as a job folder
    sim = run_simulator(recipe, out / "workspace", list(sites), echo=None)
    result: dict[str, Any] = {"seconds": time.perf_counter() - t0, "global_model": str(sim["global_model"])}
    if method.batch_norm == "local":
        result["model"] = {s: str(sim["workspace"] / s / "simulate_job" / f"app_{s}" / "local_model.pt")
                           for s in sites}
    elif heldout is not None:
        result["model"] = str(sim["best_model"])
        log = sim["global_model"].parent / "heldout_validation.json"
        result["heldout_validation"] = json.loads(log.read_text())["rounds"]
    else:
        result["model"] = str(sim["global_model"])
    return result


def evaluate_run(trained: dict[str, Any], tests: list[Path], split: str = "test",
                 site_modality: dict[str, str] | None = None) -> dict[str, Any]:
    """3D Dice, HD95 and NSD of a trained run on the ``split`` cases of ``tests`` (``fedgin.engine.evaluation.evaluate``
    format, ``surface=True``), in each test volume's source geometry.

    For FedBN (``trained["model"]`` a dict of local models) each test datalist is scored with the local model of a
    site of its modality (``site_modality``: site → modality).
    """
    from fedgin.data.datalist import load_datalist
    from fedgin.engine.metrics import summarise
    from fedgin.engine.evaluation import evaluate

    model = trained["model"]
    if not isinstance(model, dict):
        return evaluate(model, tests, split, progress=False, surface=True, geometry="source")
    parts = []
    for test in tests:
        modality = load_datalist(test)["modality"]
        site = next((s for s, m in (site_modality or {}).items() if m == modality and s in model), None)
        if site is None:
            raise ValueError(f"{test}: no local model of a {modality} site to evaluate it with")
        parts.append(evaluate(model[site], [test], split, progress=False, surface=True, geometry="source"))
    cases = [c for p in parts for c in p["cases"]]
    summary = summarise(cases, parts[0]["classes"])
    return {**parts[0], "model": "local models", "cases": cases, "summary": summary,
            "mean_dice": summary["mean_dice"]}


def cached_run(cell: Path, fn) -> dict[str, Any]:
    """``fn()`` unless ``cell/result.json`` exists; the result is written atomically, so a crash leaves no
    half-finished cell and an interrupted experiment resumes where it stopped. Returns the result."""
    done = cell / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cell.mkdir(parents=True, exist_ok=True)
    result = fn()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(done)
    return result
