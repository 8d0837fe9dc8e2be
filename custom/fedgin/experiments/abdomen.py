"""Use case 1 of the paper: abdominal organs, binary per organ, a CT site + an MRI site, tested on unseen data.

Sources (``fedgin.experiments.sources``): ``ts-ct`` and ``ts-mri`` train the sites (TotalSegmentator CT / MRI in
the paper), ``amos-ct`` and ``amos-mri`` are the unseen test sets (AMOS22). Without ``--source`` each is a seeded
phantom; the test phantoms use other seeds than the training ones, so they are other patients, and come from an
unseen centre (``AbdomenConfig.protocols``): late-arterial low-dose CT (the training CT is unenhanced or portal
venous at standard dose) and gadolinium-enhanced fat-saturated T1w GRE at 3 T (the training MRI is native T1w GRE
or T2w TSE/HASTE).

- ``abdomen-crossmodality`` (Table III): for each organ and training seed, one binary model per grid cell:
  single-modality (CT-only, MRI-only), centralized (pooled; also step-matched) and federated training with each
  method; every model is tested on both unseen test sets. The per-organ runs are merged into one table whose columns
  are organ × test modality, with mean ± sd and 95 % CIs over seeds × cases and paired tests against GIN
  (``fedgin.experiments.compare.write_report``). The seeds vary the training only: one partition (``seed``) serves them all.
  ``mri_train_cases`` makes the sites imbalanced, as the paper's (Table I: the CT site holds about 90 %).
- ``abdomen-mri-scarce`` (Table II, Fig. 3): an MRI site with few MRI cases is joined through the federation by a
  CT site with 0, n1, n2, ... CT cases (0 = the MRI site trains alone, also without augmentation); at every count
  the same cases are also pooled (Fig. 3's centralized series); every count is repeated over seeds (each seed
  draws its own partition; the CT sets are nested within a seed); tested on the unseen MRI and CT sets, with
  mean ± sd, 95 % CIs and paired tests against the MRI-only GIN model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgin.reporting.tables import fmt, markdown_table
from fedgin.experiments.sources import Source, phantom_source, prepare_sites
from fedgin.data.partition import draw_partition, write_partition

__all__ = ["AbdomenConfig", "crossmodality", "mri_scarce"]

TRAIN_SOURCES = {"ts-ct": "ct", "ts-mri": "mri"}
TEST_SOURCES = {"amos-ct": "ct", "amos-mri": "mri"}
TEST_SEED_OFFSET = 1000  # phantom test sets: other patients than the training phantoms


@dataclass
class AbdomenConfig:
    """Sizes default to a 2-core CPU; the paper's values are in the comments."""

    organs: list[str] = field(default_factory=lambda: ["liver", "spleen"])  # paper: 5 organs
    methods: list[str] = field(default_factory=lambda: ["none", "gin"])
    settings: list[str] = field(default_factory=lambda: ["single-ct", "single-mri", "centralized", "centralized-steps",
                                                         "federated"])
    rounds: int = 20  # paper: 100; 20 is where the phantom's validation curves have flattened
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # paper: 32..512
    spacing: float = 6.0  # paper: 1.5
    size: int = 64  # paper: 256
    seed: int = 0
    train_cases: int | str = 12  # training cases per site ("rest" = all the source has left)
    mri_train_cases: int | None = 3  # the MRI site's (None: as train_cases); paper Table I: CT ~90 %, here 80 %
    val_cases: int = 2
    phantom_test_cases: int = 4  # per modality
    # MRI-scarce series
    mri_cases: int = 4  # paper: 20
    ct_counts: list[int] = field(default_factory=lambda: [0, 4, 16])  # paper: 0, 20, 40, 100
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds (mri-scarce: also partitions)
    mri_only_baseline: bool = True  # Table II's MRI-only row without augmentation ("none" at 0 CT cases)
    centralized_series: bool = True  # Fig. 3's centralized series: the same MRI + CT cases pooled, at every count
    test_input: str = "raw"
    train: dict = field(default_factory=dict)  # further TrainConfig values of every run, e.g. {"sampler": "organ"}
    job: dict = field(default_factory=dict)  # further job values of every federated run, e.g. {"tracking": "mlflow"}
    # acquisition protocol of each phantom source; the test sets come from a centre no training site has (as AMOS
    # is for the paper): an arterial-phase low-dose CT and a gadolinium-enhanced T1w MRI at 3 T
    protocols: dict = field(default_factory=lambda: {"ts-ct": None, "ts-mri": None, "amos-ct": "arterial-lowdose",
                                                     "amos-mri": "t1-gd-3T"})


def _sources(work: Path, given: dict[str, Source], cfg: AbdomenConfig, train_pool: dict[str, int]) -> dict[str, Source]:
    out = dict(given)
    for name, modality in {**TRAIN_SOURCES, **TEST_SOURCES}.items():
        if name in out:
            if out[name].modality != modality:
                raise ValueError(f"source {name} must be {modality}, got {out[name].modality}")
            continue
        test = name in TEST_SOURCES
        cases = cfg.phantom_test_cases if test else train_pool[name]
        seed = cfg.seed + (TEST_SEED_OFFSET if test else 0)
        protocol = cfg.protocols.get(name)
        print(f"source {name}: phantom, {cases} {modality.upper()} cases, protocol {protocol or 'training centres'}")
        out[name] = phantom_source(work, name, "abdomen", modality, cases, seed, protocol)
    return out


def _pools(sources: dict[str, Source]) -> dict[str, dict[str, Any]]:
    return {name: {"modality": s.modality, "cases": s.case_ids()} for name, s in sources.items()}


def _test_plan(pools: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"test-{TEST_SOURCES[n]}": {"source": n, "test": len(pools[n]["cases"])} for n in TEST_SOURCES}


def crossmodality(out: Path, cfg: AbdomenConfig, given: dict[str, Source] | None = None) -> Path:
    """Run (or resume) the cross-modality comparison; writes ``table.md`` (Table III layout), ``dice.csv``,
    ``dice.png``, ``ratios.csv`` and ``partition.json`` into ``out``; returns ``out``."""
    from fedgin.experiments.compare import cell_name, grid, load_results, merge_binary_results, run_grid, write_report

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    n_train = cfg.train_cases if isinstance(cfg.train_cases, int) else 0
    mri_train = cfg.train_cases if cfg.mri_train_cases is None else cfg.mri_train_cases
    n_mri = mri_train if isinstance(mri_train, int) else 0
    pool_size = {"ts-ct": n_train + cfg.val_cases, "ts-mri": n_mri + cfg.val_cases}
    sources = _sources(out, given or {}, cfg, pool_size)
    pools = _pools(sources)
    plan = {"site-ct": {"source": "ts-ct", "training": cfg.train_cases, "validation": cfg.val_cases},
            "site-mri": {"source": "ts-mri", "training": mri_train, "validation": cfg.val_cases},
            **_test_plan(pools)}
    partition = draw_partition(pools, plan, cfg.seed, description="abdomen-crossmodality: one CT and one MRI "
                               "training site; unseen CT and MRI test sets")
    write_partition(out / "partition.json", partition)
    cells = grid(cfg.methods, cfg.settings)
    per_organ: dict[str, list[dict[str, Any]]] = {}
    for k, organ in enumerate(cfg.organs, 1):
        print(f"[organ {k}/{len(cfg.organs)}] {organ}: binary task")
        data = prepare_sites(out / "data" / organ, partition, sources, [organ], cfg.spacing, cfg.size)
        folder = run_grid({s: data[s] for s in ("site-ct", "site-mri")}, out / "grid" / organ, cfg.methods,
                          cfg.settings, cfg.rounds, cfg.channels, cfg.seeds, cfg.test_input,
                          tests=[data["test-ct"], data["test-mri"]], report=False, train=cfg.train,
                          job=cfg.job)
        per_organ[organ] = load_results(folder, cells, cfg.seeds)
        from fedgin.reporting.curves import convergence_csv, curves_png, print_convergence

        curves_png({f"{s}__{m}": folder / "runs" / cell_name(s, m, cfg.seeds[0]) for s, m in cells},
                   out / f"curves_{organ}.png", f"{organ}: training curves (seed {cfg.seeds[0]})")
        medians = convergence_csv({cell_name(s, m, k): folder / "runs" / cell_name(s, m, k)
                                   for s, m in cells for k in cfg.seeds}, out / f"convergence_{organ}.csv")
        print_convergence(medians, f"convergence_{organ}.csv", prefix=f"{organ}: ")
        from fedgin.experiments.compare import grid_pictures

        grid_pictures(folder, cells, cfg.seeds[0], {"test-ct": data["test-ct"], "test-mri": data["test-mri"]})
    # load_results: cells × seeds in order, the same for every organ
    keys = [(s, m, k) for s, m in cells for k in cfg.seeds]
    merged = [merge_binary_results({organ: per_organ[organ][i] for organ in cfg.organs}) for i in range(len(keys))]
    for (setting, method, seed), m in zip(keys, merged):
        m["setting"], m["method"], m["seed"] = setting, method, seed
    write_report(out, cells, merged)
    _write_config(out, cfg, sources, time.perf_counter() - t0)
    return out


def mri_scarce(out: Path, cfg: AbdomenConfig, given: dict[str, Source] | None = None) -> Path:
    """Run (or resume) the MRI-scarce series; writes ``table.md`` (Table II layout: MRI and CT test Dice, mean ± std
    over seeds, per number of CT cases), ``curve.png`` (Fig. 3 style), ``runs.csv`` and one partition file per
    seed and CT count into ``out``; returns ``out``."""
    from fedgin.experiments.runs import cached_run, evaluate_run, train_run

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pool_size = {"ts-ct": max(cfg.ct_counts) + cfg.val_cases, "ts-mri": cfg.mri_cases + cfg.val_cases}
    sources = _sources(out, given or {}, cfg, pool_size)
    pools = _pools(sources)
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def runs_at(n_ct: int) -> list[tuple[str, str]]:
        """(setting, method) at ``n_ct`` CT cases: federated (MRI-only training at 0 CT cases, with the MRI-only
        baseline also without augmentation, Table II), and the same cases pooled (Fig. 3's centralized series)."""
        if n_ct == 0:
            extra = ["none"] if cfg.mri_only_baseline and "none" not in cfg.methods else []
            return [("mri-only", m) for m in [*cfg.methods, *extra]]
        return [("federated", m) for m in cfg.methods] + (
            [("centralized", m) for m in cfg.methods if m not in ("fedbn", "fedda")] if cfg.centralized_series else [])

    total = len(cfg.seeds) * len(cfg.organs) * sum(len(runs_at(n)) for n in cfg.ct_counts)
    i = 0
    for seed in cfg.seeds:
        for n_ct in cfg.ct_counts:
            plan = {"site-mri": {"source": "ts-mri", "training": cfg.mri_cases, "validation": cfg.val_cases},
                    "site-ct": {"source": "ts-ct", "training": n_ct, "validation": cfg.val_cases if n_ct else 0},
                    **_test_plan(pools)}
            part = draw_partition(pools, plan, seed, description=f"abdomen-mri-scarce: {cfg.mri_cases} MRI + "
                                  f"{n_ct} CT training cases, seed {seed}")
            write_partition(out / "partitions" / f"seed{seed}_ct{n_ct}.json", part)
            for organ in cfg.organs:
                data = prepare_sites(out / "data" / f"seed{seed}_ct{n_ct}" / organ, part, sources, [organ],
                                     cfg.spacing, cfg.size, sites=None if n_ct else ["site-mri", "test-ct", "test-mri"])
                for setting, method in runs_at(n_ct):
                    i += 1
                    name = f"seed{seed}__ct{n_ct}__{method}__{organ}"
                    if setting == "centralized":
                        name = f"seed{seed}__ct{n_ct}__centralized__{method}__{organ}"
                    print(f"[{i}/{total}] {cfg.mri_cases} MRI + {n_ct} CT cases, {setting} {method}, {organ}, "
                          f"seed {seed}", flush=True)

                    def run(cell=out / "runs" / name, data=data, method=method, n_ct=n_ct, seed=seed,
                            setting=setting):
                        sites = {s: data[s] for s in (["site-ct", "site-mri"] if n_ct else ["site-mri"])}
                        kind = {"mri-only": "local"}.get(setting, setting)
                        trained = train_run(kind, method, sites, cell, rounds=cfg.rounds, channels=cfg.channels,
                                            seed=seed, test_input=cfg.test_input, train=cfg.train, job_values=cfg.job)
                        res = evaluate_run(trained, [data["test-mri"], data["test-ct"]], "test",
                                           site_modality={"site-ct": "ct", "site-mri": "mri"})
                        return {"summary": res["summary"], "cases": res["cases"], "classes": res["classes"],
                                "seconds": trained["seconds"]}

                    res = cached_run(out / "runs" / name, run)
                    per_mod = res["summary"]["per_modality"]
                    rows.append({"seed": seed, "ct_cases": n_ct, "setting": setting, "method": method,
                                 "organ": organ, "mri_dice": per_mod.get("mri", {}).get("mean_dice"),
                                 "ct_dice": per_mod.get("ct", {}).get("mean_dice"), "seconds": res["seconds"],
                                 "mri_collapsed": int(bool(per_mod.get("mri", {}).get("empty"))),
                                 "ct_collapsed": int(bool(per_mod.get("ct", {}).get("empty")))})
                    results.append({**res, "seed": seed, "ct_cases": n_ct, "setting": setting, "method": method,
                                    "organ": organ})
                    print(f"      MRI test Dice {fmt(rows[-1]['mri_dice'])}, CT {fmt(rows[-1]['ct_dice'])} "
                          f"in {res['seconds']:.0f} s")
    _scarce_report(out, cfg, rows, results)
    _write_config(out, cfg, sources, time.perf_counter() - t0)
    return out


def _scarce_report(out: Path, cfg: AbdomenConfig, rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """runs.csv (one line per run), table.md (Table II layout: rows = setting, method, CT cases; columns = organ ×
    test modality, mean ± sd (95 % CI) over seeds × test cases, † where a row differs from the MRI-only model of
    the reference method), boundary.md (HD95 / NSD, same layout) and curve.png (Fig. 3)."""
    import csv

    from fedgin.reporting.grid_stats import (boundary_note, cell_stats, format_boundary, format_stats, stats_note,
                                             versus)
    from fedgin.reporting.statistics import significance_mark

    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["setting"], r["method"], r["ct_cases"]), []).append(r)
    reference = "gin" if ("mri-only", "gin", 0) in groups else next(
        (m for s, m, n in groups if s == "mri-only"), None)

    def of(key, organ):
        return [r for r in groups.get(key, []) if r["organ"] == organ]

    header = ["setting", "method", "CT cases"] + [f"{o} {m}" for o in cfg.organs for m in ("MRI", "CT")]
    table_rows, values, marks, curves = [], [], [], {}
    order = {"mri-only": 0, "federated": 1, "centralized": 2}
    method_order = list(dict.fromkeys([*cfg.methods, "none"]))
    ordered = sorted(groups, key=lambda k: (order[k[0]], method_order.index(k[1]), k[2]))
    for key in ordered:
        setting, method, n = key
        line, vals, mark = [setting, method, str(n)], [], []
        for organ in cfg.organs:
            ref = of(("mri-only", reference, 0), organ) if key != ("mri-only", reference, 0) else None
            for modality in ("mri", "ct"):
                sel = of(key, organ)
                st = cell_stats(sel, modality, organ)
                p = versus(ref, sel, modality, organ)["p"] if ref else float("nan")
                line.append(format_stats(st) + significance_mark(p))
                vals.append(st["mean"])
                mark.append(any(r["summary"]["per_modality"].get(modality, {}).get("empty") for r in sel))
                if modality == "mri":
                    series = "MRI only" if setting == "mri-only" else setting
                    curves.setdefault((series, method, organ), []).append((n, st))
        table_rows.append(line)
        values.append(vals)
        marks.append(mark)
    text = markdown_table(header, table_rows, values, first_value_column=3, marks=marks)
    if reference:
        text += "\n" + stats_note(cfg.seeds, f"the MRI-only (0 CT cases) {reference} model") + "\n"
    (out / "table.md").write_text(text)
    boundary = markdown_table(header, [[*key[:2], str(key[2])] + [format_boundary(of(key, o), m, o)
                                                               for o in cfg.organs for m in ("mri", "ct")]
                                       for key in ordered])
    (out / "boundary.md").write_text(boundary + "\n" + boundary_note() + "\n")
    print(f"MRI-scarce series (test Dice over seeds {cfg.seeds} × test cases):\n{text}")
    _curve(out / "curve.png", curves, cfg)


def _curve(path: Path, curves: dict, cfg: AbdomenConfig) -> None:
    """Fig. 3: MRI test Dice against the CT cases added, federated and centralized series (from the MRI-only
    point at 0 CT cases), 95 % CI bars."""
    from fedgin.reporting.figures import dice_axis, pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (series, method, organ), pts in curves.items():
        if series == "MRI only":
            ax.errorbar([0], [pts[0][1]["mean"]], yerr=[[pts[0][1]["mean"] - pts[0][1]["ci_low"]],
                        [pts[0][1]["ci_high"] - pts[0][1]["mean"]]], marker="s", capsize=3, linestyle="none",
                        label=f"MRI only · {method} · {organ}")
            continue
        start = curves.get(("MRI only", method, organ), [])
        pts = sorted(start + pts, key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ms = [p[1]["mean"] for p in pts]
        err = [[p[1]["mean"] - p[1]["ci_low"] for p in pts], [p[1]["ci_high"] - p[1]["mean"] for p in pts]]
        ax.errorbar(xs, ms, yerr=err, marker="o", capsize=3, linestyle="-" if series == "federated" else "--",
                    label=f"{series} · {method} · {organ}")
    ax.set_xlabel(f"CT cases joining {cfg.mri_cases} MRI cases")
    ax.set_ylabel("MRI test Dice (mean, 95 % CI over seeds × cases)")
    ax.set_xticks(cfg.ct_counts)
    dice_axis(ax, "MRI-scarce: federated and centralized (Fig. 3 style)", legend_fontsize=7)
    save_png(fig, path)


def _write_config(out: Path, cfg: AbdomenConfig, sources: dict[str, Source], seconds: float) -> None:
    from dataclasses import asdict

    info = {"config": asdict(cfg), "sources": {n: s.description or str(s.path) for n, s in sources.items()},
            "wall_seconds_this_call": round(seconds, 1)}
    (out / "experiment.json").write_text(json.dumps(info, indent=1))
