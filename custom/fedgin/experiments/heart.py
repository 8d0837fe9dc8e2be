"""Use case 2 of the paper: whole heart, 7 classes, three training sites (CT, CT, MRI) and a held-out MRI site.

The held-out site never trains. Its cases are split in halves by the partition: the *validation* half is used by
the server to score every round's global model and keep the best one (``fedgin.flare.model_selection``), the
*test* half only for the final report (Table V layout). Table IV lists the sites and their data.

Baselines on the same partition and budget: local training at each training site, centralized training on the
pooled training sites (with each method). Local and centralized runs report their final model (they have no
federation and no server); federated runs report both the model selected on the held-out half and the final one.
Sources: without ``--source SITE=whs:MODALITY:PATH`` each site is a seeded whole-heart phantom with its own
acquisition protocol, so the sites differ as scanners and hospitals do.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedgin.engine.methods import get_method
from fedgin.reporting.tables import fmt, markdown_table
from fedgin.experiments.sources import Source, phantom_source, prepare_sites
from fedgin.data.partition import draw_partition, write_partition

__all__ = ["HeartConfig", "HEART_CLASSES", "TRAIN_SITES", "HELDOUT_SITE", "heart"]

HEART_CLASSES = ["myo", "la", "lv", "ra", "rv", "ao", "pa"]
TRAIN_SITES = {"site-ct1": "ct", "site-ct2": "ct", "site-mri1": "mri"}
HELDOUT_SITE = "site-mri2"
#: the method every other one is tested against (same setting, same seeds and held-out test cases)
REFERENCE = "gin"


@dataclass
class HeartConfig:
    """Sizes default to a 2-core CPU."""

    classes: list[str] = field(default_factory=lambda: list(HEART_CLASSES))
    methods: list[str] = field(default_factory=lambda: ["none", "gin"])
    rounds: int = 20  # paper: 100
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    spacing: float = 3.2  # paper: 1.5
    size: int = 64  # paper: 256
    seed: int = 0  # phantoms and partition
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds: every run once per seed
    train_cases: int = 6  # per training site
    val_cases: int = 2  # per training site
    heldout_val: int = 3
    heldout_test: int = 3
    # scanners and protocols of the phantom sites (fedgin.phantom.heart_render.PROTOCOLS); the held-out site is a
    # black-blood TSE: its blood-myocardium contrast is the inverse of every training site's (bright blood)
    protocols: dict[str, str | None] = field(default_factory=lambda: {
        "site-ct1": "cta", "site-ct2": "cta-lowdose", "site-mri1": "bssfp-1.5T", "site-mri2": "tse-bb-3T"})
    local: bool = True
    centralized: bool = True
    test_input: str = "raw"
    train: dict = field(default_factory=dict)  # further TrainConfig values of every run, e.g. {"sampler": "organ"}
    job: dict = field(default_factory=dict)  # further job values of every federated run, e.g. {"tracking": "mlflow"}


def heart(out: Path, cfg: HeartConfig, given: dict[str, Source] | None = None) -> Path:
    """Run (or resume) the whole-heart experiment; writes ``table.md`` (Table V layout: held-out test Dice per
    class, mean ± sd and 95 % CI over seeds × cases, † against the GIN run), ``boundary.md`` (HD95 / NSD),
    ``sites.md`` (Table IV: the sites and their data), ``dice.csv``, ``partition.json`` and
    ``heldout_validation.png`` (the server's per-round held-out Dice) into ``out``; returns ``out``."""
    from fedgin.experiments.runs import cached_run, evaluate_run, train_run

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sources = dict(given or {})
    modalities = {**TRAIN_SITES, HELDOUT_SITE: "mri"}
    for site, modality in modalities.items():
        if site in sources:
            continue
        n = cfg.heldout_val + cfg.heldout_test if site == HELDOUT_SITE else cfg.train_cases + cfg.val_cases
        seed = cfg.seed + 100 * list(modalities).index(site)  # other patients at every site
        print(f"source {site}: phantom heart {modality.upper()}, {n} cases, protocol "
              f"{cfg.protocols.get(site) or 'default'}")
        sources[site] = phantom_source(out, site, "heart", modality, n, seed, cfg.protocols.get(site))
    pools = {name: {"modality": s.modality, "cases": s.case_ids()} for name, s in sources.items()}
    plan = {site: {"source": site, "training": cfg.train_cases, "validation": cfg.val_cases} for site in TRAIN_SITES}
    plan[HELDOUT_SITE] = {"source": HELDOUT_SITE, "validation": cfg.heldout_val, "test": cfg.heldout_test}
    partition = draw_partition(pools, plan, cfg.seed, description="heart: three training sites (CT, CT, MRI); the "
                               "held-out MRI site's validation half selects the model, its test half tests it")
    write_partition(out / "partition.json", partition)
    data = prepare_sites(out / "data", partition, sources, cfg.classes, cfg.spacing, cfg.size)
    held = data[HELDOUT_SITE]
    train_sites = {s: data[s] for s in TRAIN_SITES}
    modality_of = dict(TRAIN_SITES)

    runs: list[tuple[str, str, str, dict[str, Path]]] = []  # (group, label, method, sites)
    if cfg.local:
        runs += [("local", f"local {s}", "none", {s: p}) for s, p in train_sites.items()]
    if cfg.centralized:
        runs += [("centralized", f"centralized {m}", m, train_sites) for m in cfg.methods
                 if not get_method(m).needs_federation]
    runs += [("federated", f"federated {m}", m, train_sites) for m in cfg.methods]
    results: list[dict[str, Any]] = []
    todo = [(k, *r) for k in cfg.seeds for r in runs]
    for i, (seed, group, label, method, sites) in enumerate(todo, 1):
        name = f"{label.replace(' ', '__')}__seed{seed}"
        print(f"[{i}/{len(todo)}] {label}, seed {seed}", flush=True)

        def run(cell=out / "runs" / name, group=group, method=method, sites=sites, seed=seed):
            kind = "local" if group == "local" else group
            trained = train_run(kind, method, sites, cell, rounds=cfg.rounds, channels=cfg.channels, seed=seed,
                                test_input=cfg.test_input, heldout=held if group == "federated" else None,
                                train=cfg.train, job_values=cfg.job)
            res = evaluate_run(trained, [held], "test", site_modality=modality_of)
            entry = {"group": group, "method": method, "model": "final" if group != "federated" else "best on "
                     "held-out validation", "summary": res["summary"], "cases": res["cases"],
                     "classes": res["classes"], "seconds": trained["seconds"]}
            if group == "federated" and not isinstance(trained["model"], dict):
                final = evaluate_run({"model": trained["global_model"]}, [held], "test")
                entry["final"] = {"summary": final["summary"], "cases": final["cases"]}
                entry["heldout_validation"] = trained.get("heldout_validation")
            return entry

        res = cached_run(out / "runs" / name, run)
        res.update(label=label, seed=seed, folder=name)
        results.append(res)
        print(f"      held-out test Dice {fmt(res['summary']['mean_dice'])} in {res['seconds']:.0f} s")
    _report(out, cfg, results, partition, data)
    from fedgin.reporting.curves import convergence_csv, curves_png, print_convergence

    curves_png({r["label"]: out / "runs" / r["folder"] for r in results if r["seed"] == cfg.seeds[0]},
               out / "curves.png", f"training curves, seed {cfg.seeds[0]} (federated: validation Dice of the global "
               "model at the training sites)")
    print_convergence(convergence_csv({r["folder"]: out / "runs" / r["folder"] for r in results},
                                      out / "convergence.csv"), "convergence.csv")
    federated = [r for r in results if r["group"] == "federated" and r["seed"] == cfg.seeds[0]]
    if federated:  # the demo's two pictures for the federated GIN run (else the first federated run)
        from fedgin.experiments.demo import cell_pictures

        r = next((r for r in federated if r["method"] == "gin"), federated[0])
        ct_site = next(s for s, m in TRAIN_SITES.items() if m == "ct")
        cell_pictures(out, out / "runs" / r["folder"], {ct_site: data[ct_site], HELDOUT_SITE: held}, r["method"],
                      title=f"heart, seed {cfg.seeds[0]}")
    (out / "experiment.json").write_text(json.dumps({
        "config": asdict(cfg), "sources": {n: s.description or str(s.path) for n, s in sources.items()},
        "wall_seconds_this_call": round(time.perf_counter() - t0, 1)}, indent=1))
    return out


def _report(out: Path, cfg: HeartConfig, results: list[dict[str, Any]], partition: dict[str, Any],
            data: dict[str, Path]) -> None:
    import csv

    from fedgin.data.datalist import load_datalist

    # Table IV: the sites
    rows = []
    for site, entry in partition["sites"].items():
        d = load_datalist(data[site])
        slices = sum(c["num_slices"] for c in d["training"])
        role = "held-out (server validation + test)" if site == HELDOUT_SITE else "training"
        rows.append([site, role, entry["modality"].upper(), str(len(entry["training"])), str(len(entry["validation"])),
                     str(len(entry["test"])), str(slices)])
    sites_md = markdown_table(["site", "role", "modality", "training cases", "validation cases", "test cases",
                               "training slices"], rows, path=out / "sites.md")
    # Table V: held-out test Dice per class, mean ± sd (95 % CI) over seeds × test cases
    from fedgin.reporting.grid_stats import (boundary_note, cell_stats, format_boundary, format_stats, stats_note,
                                             versus)
    from fedgin.reporting.statistics import significance_mark

    variants: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (group, row label) -> one result per seed
    for r in results:
        best = r["group"] == "federated" and "final" in r
        variants.setdefault((r["group"], r["label"] + (" (best on held-out val)" if best else "")), []).append(r)
        if "final" in r:
            variants.setdefault((r["group"], r["label"] + " (final)"), []).append(
                {**r, "summary": r["final"]["summary"], "cases": r["final"]["cases"]})
    cols = cfg.classes + ["mean"]
    lines, values, marks = [], [], []
    for (group, label), rs in variants.items():
        ref_label = label.replace(rs[0]["method"], REFERENCE, 1)
        ref = variants.get((group, ref_label)) if ref_label != label else None
        cells, vals = [], []
        for c in cols:
            st = cell_stats(rs, "mri", c)
            p = versus(ref, rs, "mri", c)["p"] if ref else float("nan")
            cells.append(format_stats(st) + significance_mark(p))
            vals.append(st["mean"])
        lines.append([group, label] + cells)
        values.append(vals)
        empty = set().union(*(r["summary"].get("empty", []) for r in rs))
        marks.append([c in empty for c in cfg.classes] + [bool(empty)])
    table = markdown_table(["setting", "run"] + cols, lines, values, first_value_column=2, marks=marks)
    boundary = markdown_table(["setting", "run"] + cols,
                              [[g, label] + [format_boundary(rs, "mri", c) for c in cols]
                               for (g, label), rs in variants.items()])
    (out / "boundary.md").write_text(boundary + "\n" + boundary_note() + "\n")
    table += f"\n{stats_note(cfg.seeds, f'the {REFERENCE} run of the same setting and model choice')}\n"
    (out / "table.md").write_text(table)
    print(f"Sites (Table IV):\n{sites_md}\nHeld-out site, test half: 3D Dice (Table V layout):\n{table}")
    with open(out / "dice.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "seed", "case", "class", "dice", "hd95_mm", "nsd"])
        for r in results:
            for c in r["cases"]:
                for name in cfg.classes:
                    vals = [(c.get(k) or {}).get(name) for k in ("dice", "hd95_mm", "nsd")]
                    w.writerow([r["label"], r["seed"], c["case"], name, *("" if v is None else v for v in vals)])
    _heldout_plot(out / "heldout_validation.png", [r for r in results if r["seed"] == cfg.seeds[0]])


def _heldout_plot(path: Path, results: list[dict[str, Any]]) -> None:
    curves = [(r["label"], r["heldout_validation"]) for r in results if r.get("heldout_validation")]
    if not curves:
        return
    from fedgin.reporting.figures import dice_axis, pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rounds in curves:
        xs = [e["round"] + 1 for e in rounds]
        ax.plot(xs, [e["mean_dice"] for e in rounds], marker=".", label=label)
        best = [e for e in rounds if e["best"]][-1]
        ax.scatter([best["round"] + 1], [best["mean_dice"]], marker="*", s=120, zorder=3)
    ax.set_xlabel("round")
    ax.set_ylabel("held-out validation Dice (server)")
    dice_axis(ax, "Model selection on the held-out site (★ = selected)")
    save_png(fig, path)
