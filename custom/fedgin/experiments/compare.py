"""``fedgin compare``: the paper's comparison grid (methods × training settings) on one CT and one MRI site.

Settings (identical data, model and budget: ``rounds`` passes over each site's training slices):

- ``single-ct`` / ``single-mri``: local training on one modality (``none`` and ``gin``);
- ``centralized``: pooled CT + MRI training with each method (not ``fedbn``/``fedda``, which need a federation);
- ``centralized-steps``: the step-matched control: pooled training for as many optimiser steps as the
  federation's largest site makes (``matched_steps``), so that federated / centralized is reported both at the
  same number of passes over the data and at the same number of steps;
- ``federated``: each method in the real ``nvflare simulator`` (``rounds`` rounds × 1 local epoch).

Every cell runs once per training seed (``seeds``) and is evaluated on the test cases of both sites (per-volume
3D Dice, HD95, NSD, each prediction mapped back onto its source volume's grid); it writes
``runs/<setting>__<method>__seed<k>/result.json``; a run whose result exists is not redone, so an interrupted grid
resumes. The report (``write_report``): ``dice.csv``, ``table.md`` (Table III layout, mean ± sd and 95 % CI over
seeds × cases, paired tests against GIN), ``stats.csv``, ``boundary.md``, ``ratios.csv``, ``dice.png`` and
``curves.png``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

from fedgin.engine.methods import METHODS, get_method

SETTINGS = ("single-ct", "single-mri", "centralized", "centralized-steps", "federated")
#: report order of the default grid: the baseline, GIN, network-level, frequency-domain, random-convolution, FedDA,
#: then GIN with the other federated optimisers (FedProx, FedOpt, SCAFFOLD; ``fedgin.engine.methods``)
METHOD_ORDER = ("none", "gin", "gin-ipa", "dsbn", "dsbn-naive", "fedbn", "fmaug", "raffesdg", "prorandconv", "rc",
                "fedda", "gin+fedprox", "gin+fedopt", "gin+scaffold")
#: variants that test an explanation, run on request (``--methods``), not part of the default grid
VARIANTS = ("dsbn-naive",)
#: the method every other one is tested against, in the same setting
REFERENCE = "gin"
#: job values that change where metrics are recorded, not the results (not part of a grid's parameters)
TRACKING_VALUES = ("tracking", "tracking_uri")


def default_methods() -> list[str]:
    """Every registered method but the ``VARIANTS``, in ``METHOD_ORDER`` first, then any other (newly added) one
    alphabetically."""

    ordered = list(METHOD_ORDER) + sorted(set(METHODS) - set(METHOD_ORDER))
    return [m for m in ordered if m not in VARIANTS]


def grid(methods: list[str], settings: list[str]) -> list[tuple[str, str]]:
    """(setting, method) pairs of the comparison, in report order."""
    runs = []
    for setting in settings:
        for method in methods:
            if setting.startswith("single") and method not in ("none", "gin"):
                continue
            if setting != "federated" and get_method(method).federation_only:
                continue
            runs.append((setting, method))
    return runs


def cell_name(setting: str, method: str, seed: int) -> str:
    """Folder of one run of the grid under ``<grid>/runs``."""
    return f"{setting}__{method}__seed{seed}"


def matched_steps(datalists: list[Path], rounds: int, train: dict[str, Any] | None = None) -> int:
    """Optimiser steps of the step-matched centralized run: as many as the federation's largest site makes in
    ``rounds`` rounds of one local epoch (``len(site's training slices) // batch_size`` steps each)."""
    from fedgin.engine import TrainConfig
    from fedgin.engine.data import SliceSet

    batch = TrainConfig.from_dict({k: v for k, v in (train or {}).items() if k == "batch_size"}).batch_size
    return rounds * max(max(1, len(SliceSet([d], "training")) // batch) for d in datalists)


def run_one(setting: str, method: str, datalists: dict[str, Path], out: Path, rounds: int, channels: list[int],
            seed: int, test_input: str = "raw", tests: list[Path] | None = None,
            train: dict[str, Any] | None = None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one cell of the grid; returns the evaluation (``fedgin.engine.evaluation.evaluate`` format).

    ``tests``: datalists whose ``test`` cases are scored (default: the test cases of site-ct and site-mri).
    ``train``: further ``TrainConfig`` values of every run (``fedgin.experiments.runs.train_run``).
    ``job``: further job values of the federated cells (``fedgin.flare.recipe.JOB_DEFAULTS``: ``tracking``,
    ``server_optimizer``, ...).
    ``centralized-steps``: centralized training for ``matched_steps`` optimiser steps instead of ``rounds`` epochs.
    """
    from fedgin.experiments.runs import evaluate_run, train_run

    train_on = {"single-ct": ["site-ct"], "single-mri": ["site-mri"]}.get(setting, ["site-ct", "site-mri"])
    kind = {"centralized-steps": "centralized"}.get(setting, "local" if setting.startswith("single") else setting)
    sites = {s: datalists[s] for s in train_on}
    steps = matched_steps(list(sites.values()), rounds, train) if setting == "centralized-steps" else None
    trained = train_run(kind, method, sites, out, rounds=rounds, channels=channels, seed=seed,
                        test_input=test_input, train=train, steps=steps,
                        job_values=job if setting == "federated" else None)
    result = evaluate_run(trained, tests or [datalists["site-ct"], datalists["site-mri"]], "test",
                          site_modality={"site-ct": "ct", "site-mri": "mri"})
    result["seconds"] = trained["seconds"]
    if steps is not None:
        result["steps"] = steps
    return result


def run_grid(datalists: dict[str, Path], output: Path, methods: list[str], settings: list[str], rounds: int,
             channels: list[int], seeds: Sequence[int] = (0,), test_input: str = "raw",
             tests: list[Path] | None = None, report: bool = True, train: dict[str, Any] | None = None,
             job: dict[str, Any] | None = None) -> Path:
    """Run every missing (cell, seed) of the grid, then (with ``report``) write the report; returns the grid folder.

    ``seeds``: training seeds; every cell runs once per seed on the same data and test cases.
    ``test_input``: ``"raw"`` or ``"reference"`` (each method's reference test-time filter, ``fedgin.engine.methods``).
    ``tests``: datalists whose test cases are scored (default: those of site-ct and site-mri).
    ``train``: further ``TrainConfig`` values of every cell (e.g. ``{"sampler": "organ"}``); part of the grid's
    parameters, so a grid resumes only with the same ones (the seeds may grow).
    ``job``: further job values of the federated cells; those that change results are grid parameters too, the
    tracking ones (``TRACKING_VALUES``) are not.
    """
    seeds = _check_seeds(seeds)
    output.mkdir(parents=True, exist_ok=True)
    every = {**datalists, **{f"test:{Path(t).parent.name}": t for t in tests or []}}
    data = {site: hashlib.sha1(Path(d).read_bytes()).hexdigest()[:12] for site, d in sorted(every.items())}
    params = {"rounds": rounds, "channels": list(channels), "test_input": test_input, "datalists_sha1": data}
    if train:
        params["train"] = train
    if job:
        from fedgin.flare.job import job_values

        job_values(job)  # an unknown or bad job value fails before any cell runs
        if set(job) - set(TRACKING_VALUES):
            params["job"] = {k: v for k, v in job.items() if k not in TRACKING_VALUES}
    _check_grid_params(output, params)
    cells = grid(methods, settings)
    todo = [(s, m, k) for k in seeds for s, m in cells]  # seed by seed: a stopped grid has whole seeds first
    for i, (setting, method, seed) in enumerate(todo, 1):
        cell = output / "runs" / cell_name(setting, method, seed)
        done = cell / "result.json"
        if done.is_file():
            print(f"[{i}/{len(todo)}] {setting} {method} seed {seed}: done before, kept")
            continue
        print(f"[{i}/{len(todo)}] {setting} {method} seed {seed} ...", flush=True)
        cell.mkdir(parents=True, exist_ok=True)
        result = run_one(setting, method, datalists, cell, rounds, channels, seed, test_input, tests, train, job)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"setting": setting, "method": method, "seed": seed, **result}, default=str))
        tmp.replace(done)  # a cell counts as done only once its result is complete
        print(f"      mean Dice {result['mean_dice']:.3f} in {result['seconds']:.0f} s")
    if not report:
        return output
    write_report(output, cells, seeds=seeds)
    grid_pictures(output, cells, seeds[0], datalists)
    return output


def grid_pictures(output: Path, cells: list[tuple[str, str]], seed: int,
                  datalists: dict[str, Path]) -> dict[str, Path]:
    """The demo's two pictures for the grid's federated ``REFERENCE`` cell (else its first federated cell) of
    ``seed``: ``dice_per_round_<method>.png`` (each site's validation Dice per round) and ``cases_<method>.png`` (the
    first CT and MRI test case: image, ground truth, prediction). Nothing when the grid has no federated cell."""
    from fedgin.experiments.demo import cell_pictures

    federated = [m for s, m in cells if s == "federated"]
    if not federated:
        return {}
    method = REFERENCE if REFERENCE in federated else federated[0]
    return cell_pictures(output, output / "runs" / cell_name("federated", method, seed), datalists, method,
                         title=f"fedgin compare, seed {seed}")


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(k) for k in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers, at least one, got {seeds}")
    return seeds


def load_results(output: Path, cells: list[tuple[str, str]], seeds: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    """The ``result.json`` of each (cell, seed), cells in ``cells`` order, seeds within a cell."""
    return [{"seed": k, **json.loads((output / "runs" / cell_name(s, m, k) / "result.json").read_text())}
            for s, m in cells for k in seeds]


def _check_grid_params(output: Path, params: dict[str, Any]) -> None:
    """Record the grid's parameters in ``grid.json``; refuse to resume a grid made with other ones."""
    f = output / "grid.json"
    if f.is_file():
        before = json.loads(f.read_text())
        diff = {k: (before.get(k), v) for k, v in params.items() if before.get(k) != v}
        if diff:
            raise ValueError(f"{output} holds a grid made with other parameters (before, now): {diff}; "
                             f"use another --output or the same parameters")
    f.write_text(json.dumps(params))


def _by_cell(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault((r["setting"], r["method"]), []).append(r)
    return out


def write_report(output: Path, cells: list[tuple[str, str]], results: list[dict[str, Any]] | None = None,
                 seeds: Sequence[int] = (0,), test: str = "wilcoxon") -> Path:
    """The grid's report from its results (one per cell and seed; default: their result.json files):

    - ``dice.csv``: per seed, case and class: Dice, HD95 (mm), NSD, predicted voxels, collapse flag;
    - ``table.md``: Table III layout, each cell mean ± sd (95 % CI) over seeds × cases, the best mean per column
      in bold, ``†`` where a method differs from ``REFERENCE`` in the same setting, ∅ on collapsed models;
    - ``stats.csv``: those statistics per cell, column and metric, with the paired test against the reference;
    - ``boundary.md``: HD95 / NSD; ``ratios.csv``: federated / centralized (and / step-matched centralized);
    - ``dice.png`` (bar plot), ``curves.png`` (training curves of the first seed's runs, when there);
    - ``convergence.csv``: per run, the validation Dice gained over the last quarter of the budget.
    """
    from fedgin.engine.metrics import EMPTY_MARK, EMPTY_NOTE
    from fedgin.reporting.grid_stats import METRICS, cell_stats, format_stats, stats_note, versus
    from fedgin.reporting.statistics import significance_mark

    results = results if results is not None else load_results(output, cells, seeds)
    for r in results:
        r.setdefault("seed", 0)
    seeds = sorted({r["seed"] for r in results})
    classes = results[0]["classes"]
    by_cell = _by_cell(results)
    cells = [c for c in cells if c in by_cell]

    def empty(r, m) -> list[str]:
        return (r["summary"]["per_modality"].get(m) or {}).get("empty", [])

    with open(output / "dice.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "method", "seed", "site", "case", "modality", "class", "dice", "hd95_mm", "nsd",
                    "pred_voxels", "collapsed_model", "geometry"])
        for r in results:
            for c in r["cases"]:
                for name in classes:
                    d = c["dice"].get(name)
                    hd, nsd = (c.get(k, {}).get(name) for k in ("hd95_mm", "nsd"))
                    pred = ((c.get("voxels") or {}).get(name) or {}).get("pred", "")
                    w.writerow([r["setting"], r["method"], r["seed"], c.get("site", ""), c["case"], c["modality"],
                                name, "" if d is None else d, "" if hd is None else hd, "" if nsd is None else nsd,
                                pred, int(name in empty(r, c["modality"])), c.get("geometry", "cache")])
    for r in results:
        for m in sorted(r["summary"]["per_modality"]):
            if empty(r, m):
                print(f"WARNING: {r['setting']} {r['method']} seed {r['seed']}: the model predicts no voxel of "
                      f"{', '.join(empty(r, m))} on any {m.upper()} test case (a collapsed model; marked "
                      f"{EMPTY_MARK} in the table)")
    cols = [(m, name) for m in ("ct", "mri") for name in classes + ["mean"]]
    stats = {(cell, m, n, metric): cell_stats(by_cell[cell], m, n, metric)
             for cell in cells for m, n in cols for metric in METRICS}
    tests = {}
    for (setting, method) in cells:
        ref = (setting, REFERENCE)
        if method != REFERENCE and ref in by_cell:
            for m, n in cols:
                for metric in METRICS:
                    tests[((setting, method), m, n, metric)] = versus(by_cell[ref], by_cell[(setting, method)], m, n,
                                                                      metric, test)
    _stats_csv(output / "stats.csv", cells, cols, stats, tests)
    # table.md: rows = cells, columns = (modality, class) + mean per modality
    values = [[stats[(cell, m, n, "dice")]["mean"] for m, n in cols] for cell in cells]
    marks = [[any(bool(empty(r, m)) if n == "mean" else n in empty(r, m) for r in by_cell[cell]) for m, n in cols]
             for cell in cells]
    best = [max((v[j] for v, k in zip(values, marks) if not math.isnan(v[j]) and not k[j]), default=math.nan)
            for j in range(len(cols))]
    header = "| setting | method | " + " | ".join(f"{m.upper()} {n}" for m, n in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for cell, v, k in zip(cells, values, marks):
        txt = []
        for j, (m, n) in enumerate(cols):
            s = stats[(cell, m, n, "dice")]
            t = format_stats(s)
            if s["n"] and v[j] == best[j] and not k[j]:
                t = f"**{t}**"
            t += significance_mark((tests.get((cell, m, n, "dice")) or {}).get("p", math.nan))
            txt.append(f"{t} {EMPTY_MARK}" if k[j] else t)
        lines.append(f"| {cell[0]} | {cell[1]} | " + " | ".join(txt) + " |")
    lines += ["", stats_note(seeds, f"{REFERENCE} in the same setting", test)]
    if any(any(k) for k in marks):
        lines += ["", EMPTY_NOTE + " (in at least one seed; see collapsed_model in dice.csv)."]
    geometry = {c.get("geometry", "cache") for r in results for c in r["cases"]}
    lines += ["", "3D Dice per test volume, " + ("on each source volume's own grid (the prediction mapped back, as "
                                                 "fedgin predict writes it)." if geometry == {"source"} else
                                                 f"geometry: {', '.join(sorted(geometry))}.")]
    (output / "table.md").write_text("\n".join(lines) + "\n")
    _boundary_table(output / "boundary.md", cells, stats, classes)
    _ratios(output / "ratios.csv", cells, stats)
    _plot(output / "dice.png", cells, values, cols, stats)
    from fedgin.reporting.curves import convergence_csv, curves_png, print_convergence

    runs = {f"{s}__{m}": output / "runs" / cell_name(s, m, seeds[0]) for s, m in cells}
    curves_png({k: v for k, v in runs.items() if v.is_dir()}, output / "curves.png",
               f"training curves (seed {seeds[0]}, from the runs' TensorBoard events)")
    medians = convergence_csv({cell_name(s, m, k): output / "runs" / cell_name(s, m, k) for s, m in cells
                               for k in seeds}, output / "convergence.csv")
    print_convergence(medians, "convergence.csv")
    print((output / "table.md").read_text())
    return output


def _stats_csv(path: Path, cells, cols, stats, tests) -> None:
    from fedgin.reporting.grid_stats import METRICS

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "method", "modality", "class", "metric", "mean", "sd", "ci_low", "ci_high", "n",
                    "seeds", "sd_over_seeds", f"{REFERENCE}_minus_method", "p", "pairs"])
        for cell in cells:
            for m, n in cols:
                for metric in METRICS:
                    s = stats[(cell, m, n, metric)]
                    t = tests.get((cell, m, n, metric)) or {}
                    w.writerow([*cell, m, n, metric, *(_num(s[k]) for k in ("mean", "sd", "ci_low", "ci_high")),
                                s["n"], s["seeds"], _num(s["sd_seeds"]), _num(t.get("diff")), _num(t.get("p")),
                                t.get("n", "")])


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def _ratios(path: Path, cells, stats) -> None:
    """federated / centralized mean Dice per method (over seeds × cases and both test modalities), and against the
    step-matched centralized run where the grid has it."""
    def mean(cell) -> float:
        vals = [stats[(cell, m, "mean", "dice")] for m in ("ct", "mri")]
        vals = [s for s in vals if s["n"]]
        return sum(s["mean"] * s["n"] for s in vals) / sum(s["n"] for s in vals) if vals else math.nan

    def ratio(a, b) -> str:
        return f"{a / b:.3f}" if b and not math.isnan(a) and not math.isnan(b) else "n/a"

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "federated", "centralized", "ratio", "centralized_steps", "ratio_steps_matched"])
        for s, m in cells:
            if s != "federated" or ("centralized", m) not in cells:
                continue
            fed, cen = mean(("federated", m)), mean(("centralized", m))
            matched = mean(("centralized-steps", m)) if ("centralized-steps", m) in cells else math.nan
            w.writerow([m, f"{fed:.4f}", f"{cen:.4f}", ratio(fed, cen), "" if math.isnan(matched) else
                        f"{matched:.4f}", ratio(fed, matched)])


def _boundary_table(path: Path, cells, stats, classes: list[str]) -> None:
    """HD95 (mm, lower is better) and NSD per cell, modality and class: means ± sd over seeds × the test cases
    that have the class (``fedgin.engine.surface``); written only when the results carry them."""
    cols = [(m, name) for m in ("ct", "mri") for name in classes]
    if not any(stats[(cell, m, n, "hd95_mm")]["n"] for cell in cells for m, n in cols):
        return
    header = "| setting | method | " + " | ".join(f"{m.upper()} {n} HD95 mm / NSD" for m, n in cols) + " |"
    from fedgin.reporting.grid_stats import boundary_note, boundary_text

    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for cell in cells:
        txt = [boundary_text(stats[(cell, m, n, "hd95_mm")], stats[(cell, m, n, "nsd")]) for m, n in cols]
        lines.append(f"| {cell[0]} | {cell[1]} | " + " | ".join(txt) + " |")

    lines += ["", boundary_note() + " CIs and paired tests against GIN: stats.csv."]
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


def _plot(path: Path, cells, values: list[list[float]], cols: list[tuple[str, str]], stats) -> None:
    from fedgin.reporting.figures import dice_axis, pyplot, save_png

    import numpy as np

    plt = pyplot()

    labels = [f"{s}\n{m}" for s, m in cells]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels)), 4))
    for off, mod, name in ((-0.2, "ct", "CT test"), (0.2, "mri", "MRI test")):
        st = [stats[(cell, mod, "mean", "dice")] for cell in cells]
        mean = [s["mean"] for s in st]
        err = [[s["mean"] - s["ci_low"] for s in st], [s["ci_high"] - s["mean"] for s in st]]
        ax.bar(x + off, mean, 0.4, yerr=err, capsize=2, label=name)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean 3D Dice (95 % CI)")
    dice_axis(ax, "fedgin compare: test Dice per training setting and method", legend_fontsize=10)
    save_png(fig, path)


def merge_binary_results(per_class: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One result over several classes from binary runs, one per class (the paper trains one model per organ):
    ``{class: result}`` → a result whose cases carry every class's Dice (matched by site and case id)."""
    from fedgin.engine.metrics import summarise

    classes = list(per_class)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for name, res in per_class.items():
        for c in res["cases"]:
            key = (c.get("site", ""), c["case"])
            entry = merged.setdefault(key, {**c, "dice": {}, "voxels": {}, **{m: {} for m in ("hd95_mm", "nsd")
                                                                                  if m in c}})
            entry["dice"][name] = c["dice"].get(name)
            entry["voxels"][name] = c.get("voxels", {}).get(name)
            for metric in ("hd95_mm", "nsd"):
                if metric in c:
                    entry[metric][name] = c[metric].get(name)
    cases = list(merged.values())
    for c in cases:
        for name in classes:
            c["dice"].setdefault(name, None)
    summary = summarise(cases, classes)
    first = next(iter(per_class.values()))
    return {"setting": first.get("setting"), "method": first.get("method"), "seed": first.get("seed", 0),
            "classes": classes, "cases": cases,
            "summary": summary, "mean_dice": summary["mean_dice"],
            "seconds": sum(r.get("seconds", 0.0) for r in per_class.values())}
