"""Use case 1 of the paper: abdominal organs, binary per organ, a CT site + an MRI site, tested on unseen data.

Sources (``fedgin.experiments.sources``): ``ts-ct`` and ``ts-mri`` train the sites (TotalSegmentator CT / MRI in
the paper), ``amos-ct`` and ``amos-mri`` are the unseen test sets (AMOS22). Without ``--source`` each is a seeded
phantom; the test phantoms use other seeds than the training ones, so they are other patients.

- ``abdomen-crossmodality`` (Table III): for each organ, one binary model per grid cell: single-modality (CT-only,
  MRI-only), centralized (pooled) and federated training with each method; every model is tested on both unseen
  test sets. The per-organ runs are merged into one table whose columns are organ × test modality.
- ``abdomen-mri-scarce`` (Table II, Fig. 3): an MRI site with few MRI cases is joined through the federation by a
  CT site with 0, n1, n2, ... CT cases (0 = the MRI site trains alone); every count is repeated over seeds (each
  seed draws its own partition; the CT sets are nested within a seed); tested on the unseen MRI and CT sets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgin.experiments.report import fmt, markdown_table, mean_std
from fedgin.experiments.sources import Source, phantom_source, prepare_sites
from fedgin.partition import draw_partition, write_partition

__all__ = ["AbdomenConfig", "crossmodality", "mri_scarce"]

TRAIN_SOURCES = {"ts-ct": "ct", "ts-mri": "mri"}
TEST_SOURCES = {"amos-ct": "ct", "amos-mri": "mri"}
TEST_SEED_OFFSET = 1000  # phantom test sets: other patients than the training phantoms


@dataclass
class AbdomenConfig:
    """Sizes default to a 2-core CPU; the paper's values are in the comments."""

    organs: list[str] = field(default_factory=lambda: ["liver", "spleen"])  # paper: 5 organs
    methods: list[str] = field(default_factory=lambda: ["none", "gin"])
    settings: list[str] = field(default_factory=lambda: ["single-ct", "single-mri", "centralized", "federated"])
    rounds: int = 10  # paper: 100
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # paper: 32..512
    spacing: float = 4.0  # paper: 1.5
    size: int = 96  # paper: 256
    seed: int = 0
    train_cases: int | str = 8  # training cases per site ("rest" = all the source has left)
    val_cases: int = 2
    phantom_test_cases: int = 4  # per modality
    # MRI-scarce series
    mri_cases: int = 4  # paper: 20
    ct_counts: list[int] = field(default_factory=lambda: [0, 4, 8, 16])  # paper: 0, 20, 40, 100
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    mri_only_baseline: bool = True  # Table II's MRI-only row without augmentation ("none" at 0 CT cases)
    test_input: str = "raw"
    train: dict = field(default_factory=dict)  # further TrainConfig values of every run, e.g. {"sampler": "organ"}


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
        print(f"source {name}: phantom, {cases} {modality.upper()} cases")
        out[name] = phantom_source(work, name, "abdomen", modality, cases, seed)
    return out


def _pools(sources: dict[str, Source]) -> dict[str, dict[str, Any]]:
    return {name: {"modality": s.modality, "cases": s.case_ids()} for name, s in sources.items()}


def _test_plan(pools: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"test-{TEST_SOURCES[n]}": {"source": n, "test": len(pools[n]["cases"])} for n in TEST_SOURCES}


def crossmodality(out: Path, cfg: AbdomenConfig, given: dict[str, Source] | None = None) -> Path:
    """Run (or resume) the cross-modality comparison; writes ``table.md`` (Table III layout), ``dice.csv``,
    ``dice.png``, ``ratios.csv`` and ``partition.json`` into ``out``; returns ``out``."""
    from fedgin.compare import grid, load_results, merge_binary_results, run_grid, write_report

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    n_train = cfg.train_cases if isinstance(cfg.train_cases, int) else 0
    pool_size = {"ts-ct": n_train + cfg.val_cases, "ts-mri": n_train + cfg.val_cases}
    sources = _sources(out, given or {}, cfg, pool_size)
    pools = _pools(sources)
    plan = {"site-ct": {"source": "ts-ct", "training": cfg.train_cases, "validation": cfg.val_cases},
            "site-mri": {"source": "ts-mri", "training": cfg.train_cases, "validation": cfg.val_cases},
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
                          cfg.settings, cfg.rounds, cfg.channels, cfg.seed, cfg.test_input,
                          tests=[data["test-ct"], data["test-mri"]], report=False, train=cfg.train)
        per_organ[organ] = load_results(folder, cells)
        from fedgin.curves import curves_png

        curves_png({f"{s}__{m}": folder / "runs" / f"{s}__{m}" for s, m in cells}, out / f"curves_{organ}.png",
                   f"{organ}: training curves")
    merged = [merge_binary_results({organ: per_organ[organ][i] for organ in cfg.organs}) for i in range(len(cells))]
    for (setting, method), m in zip(cells, merged):
        m["setting"], m["method"] = setting, method
    write_report(out, cells, merged)
    _write_config(out, cfg, sources, time.perf_counter() - t0)
    return out


def mri_scarce(out: Path, cfg: AbdomenConfig, given: dict[str, Source] | None = None) -> Path:
    """Run (or resume) the MRI-scarce series; writes ``table.md`` (Table II layout: MRI and CT test Dice, mean ± std
    over seeds, per number of CT cases), ``curve.png`` (Fig. 3 style), ``runs.csv`` and one partition file per
    seed and CT count into ``out``; returns ``out``."""
    from fedgin.runs import cached_run, evaluate_run, train_run

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pool_size = {"ts-ct": max(cfg.ct_counts) + cfg.val_cases, "ts-mri": cfg.mri_cases + cfg.val_cases}
    sources = _sources(out, given or {}, cfg, pool_size)
    pools = _pools(sources)
    rows: list[dict[str, Any]] = []
    def methods_at(n_ct: int) -> list[str]:
        """The methods run at ``n_ct`` CT cases: the MRI-only point also without augmentation (Table II)."""
        extra = ["none"] if n_ct == 0 and cfg.mri_only_baseline and "none" not in cfg.methods else []
        return list(cfg.methods) + extra

    total = len(cfg.seeds) * len(cfg.organs) * sum(len(methods_at(n)) for n in cfg.ct_counts)
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
                for method in methods_at(n_ct):
                    i += 1
                    name = f"seed{seed}__ct{n_ct}__{method}__{organ}"
                    print(f"[{i}/{total}] {cfg.mri_cases} MRI + {n_ct} CT cases, {method}, {organ}, seed {seed}",
                          flush=True)

                    def run(cell=out / "runs" / name, data=data, method=method, n_ct=n_ct, seed=seed):
                        sites = {s: data[s] for s in (["site-ct", "site-mri"] if n_ct else ["site-mri"])}
                        trained = train_run("federated" if n_ct else "local", method, sites, cell,
                                            rounds=cfg.rounds, channels=cfg.channels, seed=seed,
                                            test_input=cfg.test_input, train=cfg.train)
                        res = evaluate_run(trained, [data["test-mri"], data["test-ct"]], "test",
                                           site_modality={"site-ct": "ct", "site-mri": "mri"})
                        return {"summary": res["summary"], "cases": res["cases"], "seconds": trained["seconds"]}

                    res = cached_run(out / "runs" / name, run)
                    per_mod = res["summary"]["per_modality"]
                    rows.append({"seed": seed, "ct_cases": n_ct, "method": method, "organ": organ,
                                 "mri_dice": per_mod.get("mri", {}).get("mean_dice"),
                                 "ct_dice": per_mod.get("ct", {}).get("mean_dice"), "seconds": res["seconds"],
                                 "mri_collapsed": int(bool(per_mod.get("mri", {}).get("empty"))),
                                 "ct_collapsed": int(bool(per_mod.get("ct", {}).get("empty")))})
                    print(f"      MRI test Dice {fmt(rows[-1]['mri_dice'])}, CT {fmt(rows[-1]['ct_dice'])} "
                          f"in {res['seconds']:.0f} s")
    _scarce_report(out, cfg, rows)
    _write_config(out, cfg, sources, time.perf_counter() - t0)
    return out


def _scarce_report(out: Path, cfg: AbdomenConfig, rows: list[dict[str, Any]]) -> None:
    import csv

    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    header = ["method", "CT cases"] + [f"{o} {m}" for o in cfg.organs for m in ("MRI", "CT")]
    table_rows, values, marks, curves = [], [], [], {}
    methods = list(dict.fromkeys([*cfg.methods, *(r["method"] for r in rows)]))  # the MRI-only baseline last
    for method in methods:
        for n in cfg.ct_counts:
            if not any((r["method"], r["ct_cases"]) == (method, n) for r in rows):
                continue
            line, vals, mark = [method, str(n)], [], []
            for organ in cfg.organs:
                for key in ("mri_dice", "ct_dice"):
                    sel = [r for r in rows if (r["method"], r["ct_cases"], r["organ"]) == (method, n, organ)]
                    m, s = mean_std([r[key] for r in sel])
                    line.append(f"{fmt(m)} ± {fmt(s)}")
                    vals.append(m)
                    mark.append(any(r.get(key.replace("dice", "collapsed")) for r in sel))  # a seed collapsed
                    if key == "mri_dice":
                        curves.setdefault((method, organ), []).append((n, m, s))
            table_rows.append(line)
            values.append(vals)
            marks.append(mark)
    text = markdown_table(header, table_rows, values, first_value_column=2, path=out / "table.md", marks=marks)
    print(f"MRI-scarce series (test Dice, mean ± std over seeds {cfg.seeds}):\n{text}")
    _curve(out / "curve.png", curves, cfg)


def _curve(path: Path, curves: dict, cfg: AbdomenConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, organ), pts in curves.items():
        xs, ms, ss = zip(*pts)
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=f"{method} · {organ}")
    ax.set_xlabel(f"CT cases joining {cfg.mri_cases} MRI cases through the federation")
    ax.set_ylabel("MRI test Dice (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_xticks(cfg.ct_counts)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("MRI-scarce federation (Fig. 3 style)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_config(out: Path, cfg: AbdomenConfig, sources: dict[str, Source], seconds: float) -> None:
    from dataclasses import asdict

    info = {"config": asdict(cfg), "sources": {n: s.description or str(s.path) for n, s in sources.items()},
            "wall_seconds_this_call": round(seconds, 1)}
    (out / "experiment.json").write_text(json.dumps(info, indent=1))
