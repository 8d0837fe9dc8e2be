"""``fedgin compare``: the paper's comparison grid (methods × training settings) on one CT and one MRI site.

Settings (identical data, model and budget: ``rounds`` passes over each site's training slices):

- ``single-ct`` / ``single-mri``: local training on one modality (``none`` and ``gin``);
- ``centralized``: pooled CT + MRI training with each method (not ``fedbn``/``fedda``, which need a federation);
- ``federated``: each method in the real ``nvflare simulator`` (``rounds`` rounds × 1 local epoch).

Every run is evaluated on the test cases of both sites (per-volume 3D Dice) and writes ``runs/<setting>__<method>/
result.json``; a run whose result exists is not redone, so an interrupted grid resumes. The report: ``dice.csv``
(per case and class), ``table.md`` (Table III layout, best per column in bold), ``dice.png`` (bar plot) and
``ratios.csv`` (federated / centralized mean Dice per method).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

SETTINGS = ("single-ct", "single-mri", "centralized", "federated")
FEDERATION_ONLY = {"fedbn", "fedda"}
#: report order of the default grid: the baseline, GIN, network-level, frequency-domain, random-convolution, FedDA
METHOD_ORDER = ("none", "gin", "gin-ipa", "dsbn", "fedbn", "fmaug", "raffesdg", "prorandconv", "rc", "fedda")


def default_methods() -> list[str]:
    """Every registered method, in ``METHOD_ORDER`` first, then any other (newly added) one alphabetically."""
    from fedgin.methods import METHODS

    return [m for m in METHOD_ORDER if m in METHODS] + sorted(set(METHODS) - set(METHOD_ORDER))


def grid(methods: list[str], settings: list[str]) -> list[tuple[str, str]]:
    """(setting, method) pairs of the comparison, in report order."""
    runs = []
    for setting in settings:
        for method in methods:
            if setting.startswith("single") and method not in ("none", "gin"):
                continue
            if setting != "federated" and method in FEDERATION_ONLY:
                continue
            runs.append((setting, method))
    return runs


def run_one(setting: str, method: str, datalists: dict[str, Path], out: Path, rounds: int, channels: list[int],
            seed: int, test_input: str = "raw", tests: list[Path] | None = None,
            train: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one cell of the grid; returns the evaluation (``fedgin.workflows.evaluate`` format).

    ``tests``: datalists whose ``test`` cases are scored (default: the test cases of site-ct and site-mri).
    ``train``: further ``TrainConfig`` values of every run (``fedgin.runs.train_run``).
    """
    from fedgin.runs import evaluate_run, train_run

    train_on = {"single-ct": ["site-ct"], "single-mri": ["site-mri"]}.get(setting, ["site-ct", "site-mri"])
    kind = "local" if setting.startswith("single") else setting
    trained = train_run(kind, method, {s: datalists[s] for s in train_on}, out, rounds=rounds, channels=channels,
                        seed=seed, test_input=test_input, train=train)
    result = evaluate_run(trained, tests or [datalists["site-ct"], datalists["site-mri"]], "test",
                          site_modality={"site-ct": "ct", "site-mri": "mri"})
    result["seconds"] = trained["seconds"]
    return result


def run_grid(datalists: dict[str, Path], output: Path, methods: list[str], settings: list[str], rounds: int,
             channels: list[int], seed: int = 0, test_input: str = "raw", tests: list[Path] | None = None,
             report: bool = True, train: dict[str, Any] | None = None) -> Path:
    """Run every missing cell of the grid, then (with ``report``) write the report; returns the grid folder.

    ``test_input``: ``"raw"`` or ``"reference"`` (each method's reference test-time filter, ``fedgin.methods``).
    ``tests``: datalists whose test cases are scored (default: those of site-ct and site-mri).
    ``train``: further ``TrainConfig`` values of every cell (e.g. ``{"sampler": "organ"}``); part of the grid's
    parameters, so a grid resumes only with the same ones.
    """
    output.mkdir(parents=True, exist_ok=True)
    every = {**datalists, **{f"test:{Path(t).parent.name}": t for t in tests or []}}
    data = {site: hashlib.sha1(Path(d).read_bytes()).hexdigest()[:12] for site, d in sorted(every.items())}
    params = {"rounds": rounds, "channels": list(channels), "seed": seed, "test_input": test_input,
              "datalists_sha1": data}
    if train:
        params["train"] = train
    _check_grid_params(output, params)
    cells = grid(methods, settings)
    for i, (setting, method) in enumerate(cells, 1):
        cell = output / "runs" / f"{setting}__{method}"
        done = cell / "result.json"
        if done.is_file():
            print(f"[{i}/{len(cells)}] {setting} {method}: done before, kept")
            continue
        print(f"[{i}/{len(cells)}] {setting} {method} ...", flush=True)
        cell.mkdir(parents=True, exist_ok=True)
        result = run_one(setting, method, datalists, cell, rounds, channels, seed, test_input, tests, train)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"setting": setting, "method": method, **result}, default=str))
        tmp.replace(done)  # a cell counts as done only once its result is complete
        print(f"      mean Dice {result['mean_dice']:.3f} in {result['seconds']:.0f} s")
    return write_report(output, cells) if report else output


def load_results(output: Path, cells: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The ``result.json`` of each cell, in ``cells`` order."""
    return [json.loads((output / "runs" / f"{s}__{m}" / "result.json").read_text()) for s, m in cells]


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


def write_report(output: Path, cells: list[tuple[str, str]], results: list[dict[str, Any]] | None = None) -> Path:
    """dice.csv, table.md, ratios.csv, dice.png and curves.png (training curves of ``output/runs/*``, when there)
    from the cells' results (default: their result.json files)."""
    from fedgin.engine.metrics import EMPTY_MARK, EMPTY_NOTE

    results = results if results is not None else load_results(output, cells)
    classes = results[0]["classes"]

    def empty(r, m) -> list[str]:
        return (r["summary"]["per_modality"].get(m) or {}).get("empty", [])

    with open(output / "dice.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "method", "site", "case", "modality", "class", "dice", "hd95_mm", "nsd",
                    "pred_voxels", "collapsed_model"])
        for r in results:
            for c in r["cases"]:
                for name in classes:
                    d = c["dice"].get(name)
                    hd, nsd = (c.get(k, {}).get(name) for k in ("hd95_mm", "nsd"))
                    pred = ((c.get("voxels") or {}).get(name) or {}).get("pred", "")
                    w.writerow([r["setting"], r["method"], c.get("site", ""), c["case"], c["modality"], name,
                                "" if d is None else d, "" if hd is None else hd, "" if nsd is None else nsd,
                                pred, int(name in empty(r, c["modality"]))])
    for r in results:
        for m in sorted(r["summary"]["per_modality"]):
            if empty(r, m):
                print(f"WARNING: {r['setting']} {r['method']}: the model predicts no voxel of "
                      f"{', '.join(empty(r, m))} on any {m.upper()} test case (a collapsed model; marked "
                      f"{EMPTY_MARK} in the table)")
    # table: rows = runs, columns = (modality, class) + mean per modality
    cols = [(m, name) for m in ("ct", "mri") for name in classes + ["mean"]]

    def cell(r, m, name):
        block = r["summary"]["per_modality"].get(m)
        if block is None:
            return math.nan
        return block["mean_dice"] if name == "mean" else block["per_class"][name]["mean"]

    values = [[cell(r, m, n) for m, n in cols] for r in results]
    marks = [[bool(empty(r, m)) if n == "mean" else n in empty(r, m) for m, n in cols] for r in results]
    best = [max((v[j] for v, k in zip(values, marks) if not math.isnan(v[j]) and not k[j]), default=math.nan)
            for j in range(len(cols))]
    header = "| setting | method | " + " | ".join(f"{m.upper()} {n}" for m, n in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for r, v, k in zip(results, values, marks):
        cells_txt = [("n/a" if math.isnan(x) else f"{x:.3f} {EMPTY_MARK}" if k[j] else
                      f"**{x:.3f}**" if x == best[j] else f"{x:.3f}") for j, x in enumerate(v)]
        lines.append(f"| {r['setting']} | {r['method']} | " + " | ".join(cells_txt) + " |")
    if any(any(k) for k in marks):
        lines += ["", EMPTY_NOTE + "."]
    (output / "table.md").write_text("\n".join(lines) + "\n")
    _boundary_table(output / "boundary.md", results, classes)
    # ratios federated / centralized
    means = {(r["setting"], r["method"]): r["mean_dice"] for r in results}
    with open(output / "ratios.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "federated", "centralized", "ratio"])
        for (s, m), v in means.items():
            if s == "federated" and ("centralized", m) in means:
                c = means[("centralized", m)]
                w.writerow([m, f"{v:.4f}", f"{c:.4f}", f"{v / c:.3f}" if c else "n/a"])
    _plot(output / "dice.png", results, values, cols)
    from fedgin.curves import curves_png

    runs = {f"{s}__{m}": output / "runs" / f"{s}__{m}" for s, m in cells}
    curves_png({k: v for k, v in runs.items() if v.is_dir()}, output / "curves.png",
               "training curves (from the runs' TensorBoard events)")
    print((output / "table.md").read_text())
    return output


def _boundary_table(path: Path, results: list[dict[str, Any]], classes: list[str]) -> None:
    """HD95 (mm, lower is better) and NSD per run, modality and class: means over the test cases that have the
    class (``fedgin.engine.surface``); written only when the results carry them."""
    if not any("hd95_mm" in c for r in results for c in r["cases"]):
        return
    cols = [(m, name) for m in ("ct", "mri") for name in classes]
    header = "| setting | method | " + " | ".join(f"{m.upper()} {n} HD95 / NSD" for m, n in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for r in results:
        cells = []
        for m, name in cols:
            block = ((r["summary"]["per_modality"].get(m) or {}).get("per_class") or {}).get(name) or {}
            hd, nsd = block.get("hd95_mm", math.nan), block.get("nsd", math.nan)
            cells.append("n/a" if math.isnan(hd) else f"{hd:.1f} / {nsd:.3f}")
        lines.append(f"| {r['setting']} | {r['method']} | " + " | ".join(cells) + " |")
    tol = next(c["nsd_tolerance_mm"] for r in results for c in r["cases"] if "nsd_tolerance_mm" in c)
    lines += ["", f"HD95 in mm (a class present but never predicted scores the volume's diagonal); NSD at a "
                  f"{tol:g} mm tolerance; on the cached grid."]
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


def _plot(path: Path, results: list[dict], values: list[list[float]], cols: list[tuple[str, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['setting']}\n{r['method']}" for r in results]
    ct = [v[cols.index(("ct", "mean"))] for v in values]
    mri = [v[cols.index(("mri", "mean"))] for v in values]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels)), 4))
    ax.bar(x - 0.2, ct, 0.4, label="CT test")
    ax.bar(x + 0.2, mri, 0.4, label="MRI test")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean 3D Dice")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("fedgin compare: test Dice per training setting and method")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_binary_results(per_class: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One result over several classes from binary runs, one per class (the paper trains one model per organ):
    ``{class: result}`` → a result whose cases carry every class's Dice (matched by site and case id)."""
    from fedgin.engine.metrics import summarise

    classes = list(per_class)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for name, res in per_class.items():
        for c in res["cases"]:
            key = (c.get("site", ""), c["case"])
            entry = merged.setdefault(key, {**c, "dice": {}, "voxels": {}})
            entry["dice"][name] = c["dice"].get(name)
            entry["voxels"][name] = c.get("voxels", {}).get(name)
            for metric in ("hd95_mm", "nsd"):
                if metric in c:
                    entry.setdefault(metric, {})[name] = c[metric].get(name)
    cases = list(merged.values())
    for c in cases:
        for name in classes:
            c["dice"].setdefault(name, None)
    summary = summarise(cases, classes)
    first = next(iter(per_class.values()))
    return {"setting": first.get("setting"), "method": first.get("method"), "classes": classes, "cases": cases,
            "summary": summary, "mean_dice": summary["mean_dice"],
            "seconds": sum(r.get("seconds", 0.0) for r in per_class.values())}
