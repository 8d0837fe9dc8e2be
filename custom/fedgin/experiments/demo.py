"""``fedgin demo``: the main job end to end on the built-in phantom.

Phantom CT cases for ``site-ct`` and phantom MRI cases for ``site-mri`` → ``fedgin prepare`` for each site →
the FedGIN recipe (``fedgin.flare.recipe``) → NVFlare's ``SimEnv`` → 3D Dice per organ of the final global model on the
held-out (test) CT and MRI cases. Steps whose inputs have not changed are reused from the work folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from fedgin.experiments.sources import stage

__all__ = ["SITES", "DEMO_ORGANS", "phantom_sites", "run_demo"]

SITES = {"site-ct": "ct", "site-mri": "mri"}
DEMO_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")


def phantom_sites(work: Path, cases: int, organs: list[str], spacing: float, size: int, seed: int,
                  step: str = "[{i}/4] ") -> dict[str, Path]:
    """Phantom CT and MRI cases and the slice caches of ``site-ct`` / ``site-mri`` under ``work`` (reused when
    unchanged); returns {site: datalist path}."""
    from fedgin.data import prepare_site
    from fedgin.data.prepare import CACHE_REVISION
    from fedgin.phantom import generate_dataset

    work.mkdir(parents=True, exist_ok=True)
    datalists = {}
    for i, (site, modality) in enumerate(SITES.items()):
        print(f"{step.format(i=i + 1)}{site}: phantom {modality.upper()} cases and slice cache")
        pparams = {"modality": modality, "cases": cases, "seed": seed}
        ph = stage(work / "phantom" / modality, pparams, lambda out: generate_dataset(out, modality, cases, seed),
                   echo=True)
        dparams = {**pparams, "organs": organs, "spacing": spacing, "size": size, "cache_revision": CACHE_REVISION}
        data = stage(work / "data" / site, dparams,
                     lambda out: prepare_site(layout="totalseg", input_dir=ph, output_dir=out, site=site,
                                              modality=modality, organs=organs, spacing=spacing, size=size,
                                              seed=seed), echo=True)
        datalists[site] = data / "datalist.json"
    return datalists


def run_demo(workdir: str | Path, *, method: str = "gin", rounds: int = 25, cases: int = 16,
             organs: Sequence[str] = DEMO_ORGANS, spacing: float = 4.0, size: int = 96,
             channels: Sequence[int] = (16, 32, 64, 128), local_epochs: int = 1, seed: int = 0, amp: bool = True,
             threads: int = 2, tracking: str = "tensorboard", tracking_uri: str = "") -> dict:
    """The main job on the phantom (``fedgin demo``): ``cases`` phantom cases per site prepared at ``spacing`` mm and
    ``size`` px, ``rounds`` FLARE rounds of ``local_epochs`` in the simulator (``threads`` clients at once), then the
    Dice table of the final global model on the test cases. Writes everything under ``workdir``; returns the results
    written to ``results_<method>.json``."""
    from fedgin.engine.evaluation import evaluate, format_dice_table
    from fedgin.flare.job import make_recipe
    from fedgin.flare.simulate import mlflow_store, run_simulator

    t_start = time.perf_counter()
    work = Path(workdir).resolve()
    organs, channels = list(organs), list(channels)
    datalists = phantom_sites(work, cases, organs, spacing, size, seed)

    print(f"[3/4] FedGIN job ({method}, {rounds} rounds) in NVFlare's simulator (SimEnv), sites {', '.join(SITES)}")
    values = {"method": method, "num_rounds": rounds, "classes": organs, "data_root": str(work / "data"),
              "channels": channels, "strides": [2] * (len(channels) - 1), "local_epochs": local_epochs,
              "seed": seed, "size_px": [size, size], "spacing_mm": [spacing, spacing], "amp": amp,
              "tracking": tracking, "tracking_uri": tracking_uri}
    recipe = make_recipe(values, name=f"fedgin_{method}")
    sim = run_simulator(recipe, work / f"workspace_{method}", list(SITES), threads=threads)
    print(f"      simulator finished in {sim['seconds']:.0f} s")

    print("[4/4] 3D Dice of the final global model on the held-out test cases")
    res = evaluate(sim["global_model"], list(datalists.values()), "test", progress=False, geometry="source")
    title = f"FedGIN demo ({method}): final global model, 3D Dice per organ on each scan's own grid"
    table = format_dice_table(res, title=title)
    print()
    print(table)
    pictures = demo_pictures(work, sim, datalists, method)
    out = {
        "method": method,
        "rounds": rounds,
        "wall_seconds": time.perf_counter() - t_start,
        "simulator_seconds": sim["seconds"],
        "test": res,
        "cross_site": json.loads(Path(sim["cross_site"]).read_text()),
        "pictures": {k: str(v) for k, v in pictures.items()},
    }
    (work / f"results_{method}.json").write_text(json.dumps(out, indent=2, default=str))
    print()
    print(f"global model:     {sim['global_model']}")
    if Path(sim["best_model"]).is_file():
        print(f"best model:       {sim['best_model']} (best validation Dice across rounds)")
    print(f"cross-site Dice:  {sim['cross_site']}")
    if tracking in ("tensorboard", "both"):
        print(f"TensorBoard:      tensorboard --logdir {sim['tb_events']}")
    if tracking in ("mlflow", "both"):
        print(f"MLflow:           mlflow ui --backend-store-uri {tracking_uri or mlflow_store(sim['workspace'])}")
    print(f"Dice per round:   {pictures.get('dice_per_round')}")
    print(f"CT and MRI cases: {pictures.get('cases')} (ground truth | prediction; label maps beside it)")
    print(f"results (JSON):   {work / f'results_{method}.json'}")
    print(f"total wall time:  {out['wall_seconds'] / 60:.1f} min")
    return out


def demo_pictures(work: Path, sim: dict, datalists: dict[str, Path], method: str,
                  title: str = "FedGIN demo") -> dict[str, Path]:
    """``dice_per_round_<method>.png`` (each site's validation Dice of the global model per round, from TensorBoard
    or MLflow) and ``cases_<method>.png`` (per datalist its first test case, else its first validation case: image,
    ground truth, prediction of the final global model on the scan's own grid; the label maps are written to
    ``predictions_<method>/``). A picture whose inputs the run lacks (no streamed Dice; caches without source scans)
    is left out, and says so; returns the pictures drawn."""
    import nibabel as nib

    from fedgin.data.datalist import load_datalist
    from fedgin.inference.predict import Predictor
    from fedgin.reporting.run_figures import cases_png, site_dice_png, site_dice_series

    pictures = {}
    series = site_dice_series(sim["workspace"])
    if series:
        pictures["dice_per_round"] = site_dice_png(
            series, work / f"dice_per_round_{method}.png",
            title=f"{title} ({method}): validation Dice of the global model at each site")
    else:
        print(f"no per-round Dice picture: no site streamed it in {sim['workspace']}")
    predictor = Predictor(sim["global_model"], device="cpu")
    rows = []
    for site, path in datalists.items():
        d = load_datalist(path)
        split = "test" if d["test"] else "validation"
        case = (d.get(split) or [None])[0]
        if case is None or not case.get("source_image") or not case.get("source_label"):
            continue
        image, _ = predictor.segment(case["source_image"], modality=d["modality"])
        out = work / f"predictions_{method}" / f"{case['case_id']}_seg.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(image, out)
        rows.append((f"{site} ({d['modality'].upper()}) {split} {case['case_id']}", case["source_image"],
                     Path(path).parent / case["source_label"], out))
    if rows:
        pictures["cases"] = cases_png(rows, predictor.classes, work / f"cases_{method}.png")
    else:
        print(f"no case picture: no test or validation case with its source scan in {sorted(datalists)}")
    return pictures


def cell_pictures(output: Path, cell: Path, datalists: dict[str, Path], method: str, title: str) -> dict[str, Path]:
    """``demo_pictures`` for a finished federated run folder ``cell`` (``<cell>/workspace/<job>/``) into
    ``output``; nothing when the run has no simulator workspace."""
    from fedgin.flare.simulate import find_artifacts

    runs = cell / "workspace"
    jobs = sorted(p for p in runs.glob("*") if p.is_dir()) if runs.is_dir() else []
    if not jobs:
        return {}
    pictures = demo_pictures(output, find_artifacts(jobs[0]), datalists, method.replace("+", "_"), title=title)
    print(f"pictures: {', '.join(str(v) for v in pictures.values()) or 'none'}")
    return pictures
