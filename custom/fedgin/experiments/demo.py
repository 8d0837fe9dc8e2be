"""``fedgin demo``: the main job end to end on the built-in phantom.

Phantom CT cases for ``site-ct`` and phantom MRI cases for ``site-mri`` → ``fedgin prepare`` for each site →
a job built from ``jobs/fedgin`` → ``nvflare simulator`` → 3D Dice per organ of the final global model on the
held-out (test) CT and MRI cases. Steps whose inputs have not changed are reused from the work folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

SITES = {"site-ct": "ct", "site-mri": "mri"}


def _stage(workdir: Path, name: str, params: dict, build) -> Path:
    """Run ``build(tmp_folder)`` unless ``workdir/name`` already holds the result for ``params``."""
    out = workdir / name
    stamp = out / ".fedgin_stage.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"  reusing {out}")
        return out
    if out.exists():
        shutil.rmtree(out)
    build(out)
    stamp.write_text(json.dumps(params))
    return out


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
        ph = _stage(work, f"phantom/{modality}", pparams, lambda out: generate_dataset(out, modality, cases, seed))
        dparams = {**pparams, "organs": organs, "spacing": spacing, "size": size, "cache_revision": CACHE_REVISION}
        data = _stage(work, f"data/{site}", dparams,
                      lambda out: prepare_site(layout="totalseg", input_dir=ph, output_dir=out, site=site,
                                               modality=modality, organs=organs, spacing=spacing, size=size,
                                               seed=seed))
        datalists[site] = data / "datalist.json"
    return datalists


def run_demo(a: argparse.Namespace) -> dict:
    from fedgin.flare.job import build_job
    from fedgin.flare.simulate import run_simulator
    from fedgin.common.options import name_list
    from fedgin.engine.evaluation import evaluate, format_dice_table

    t_start = time.perf_counter()
    work = Path(a.workdir).resolve()
    organs = name_list(a.organs, "--organs")
    channels = list(a.channels)
    datalists = phantom_sites(work, a.cases, organs, a.spacing, a.size, a.seed)

    print(f"[3/4] FedGIN job ({a.method}, {a.rounds} rounds) in nvflare simulator, sites {', '.join(SITES)}")
    values = {"method": a.method, "num_rounds": a.rounds, "classes": organs, "data_root": str(work / "data"),
              "channels": channels, "strides": [2] * (len(channels) - 1), "local_epochs": a.local_epochs,
              "seed": a.seed, "size_px": [a.size, a.size], "spacing_mm": [a.spacing, a.spacing],
              "amp": a.precision == "auto"}
    job = build_job(work / f"job_{a.method}", values, name=f"fedgin_{a.method}")
    sim = run_simulator(job, work / f"workspace_{a.method}", list(SITES), threads=a.threads)
    print(f"      simulator finished in {sim['seconds']:.0f} s")

    print("[4/4] 3D Dice of the final global model on the held-out test cases")
    res = evaluate(sim["global_model"], list(datalists.values()), "test", progress=False, geometry="source")
    table = format_dice_table(res, title=f"FedGIN demo ({a.method}): final global model, 3D Dice per organ on each scan's own grid")
    print()
    print(table)
    out = {
        "method": a.method,
        "rounds": a.rounds,
        "wall_seconds": time.perf_counter() - t_start,
        "simulator_seconds": sim["seconds"],
        "test": res,
        "cross_site": json.loads(Path(sim["cross_site"]).read_text()),
    }
    (work / f"results_{a.method}.json").write_text(json.dumps(out, indent=2, default=str))
    print()
    print(f"global model:     {sim['global_model']}")
    if Path(sim["best_model"]).is_file():
        print(f"best model:       {sim['best_model']} (best validation Dice across rounds)")
    print(f"cross-site Dice:  {sim['cross_site']}")
    print(f"TensorBoard:      tensorboard --logdir {sim['tb_events']}")
    print(f"results (JSON):   {work / f'results_{a.method}.json'}")
    print(f"total wall time:  {out['wall_seconds'] / 60:.1f} min")
    return out
