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
import time
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


def _train_values(method: str, channels: list[int], seed: int, test_input: str = "raw") -> dict[str, Any]:
    from fedgin.methods import eval_input_for, model_domains

    model = {"channels": channels, "strides": [2] * (len(channels) - 1), "domains": model_domains(method),
             "test_input": eval_input_for(method, test_input)}
    return {"method": method, "seed": seed, "model": model}


def run_one(setting: str, method: str, datalists: dict[str, Path], out: Path, rounds: int, channels: list[int],
            seed: int, test_input: str = "raw") -> dict[str, Any]:
    """Train and evaluate one cell of the grid; returns the evaluation (``fedgin.workflows.evaluate`` format)."""
    from fedgin.engine import TrainConfig
    from fedgin.engine.metrics import summarise
    from fedgin.flare.job import build_job, task_from_sites
    from fedgin.flare.simulate import run_simulator
    from fedgin.workflows import evaluate, train

    tests = [datalists["site-ct"], datalists["site-mri"]]
    t0 = time.perf_counter()
    if setting == "federated":
        model = _train_values(method, channels, seed, test_input)["model"]
        values = {"method": method, "num_rounds": rounds, "seed": seed, **model,
                  "data_root": str(datalists["site-ct"].parents[1])}
        values = task_from_sites(datalists["site-ct"].parents[1], values)
        job = build_job(out / "job", values, name=f"compare_{method}")
        sim = run_simulator(job, out / "workspace", ["site-ct", "site-mri"], echo=None)
        if method == "fedbn":  # FedBN has no usable global BN: each modality is tested with its site's local model
            res = [evaluate(out / "workspace" / s / "simulate_job" / f"app_{s}" / "local_model.pt", [datalists[s]],
                            "test", progress=False) for s in ("site-ct", "site-mri")]
            cases = res[0]["cases"] + res[1]["cases"]
            summary = summarise(cases, res[0]["classes"])
            result = {**res[0], "cases": cases, "summary": summary, "mean_dice": summary["mean_dice"],
                      "model": "local models"}
        else:
            result = evaluate(sim["global_model"], tests, "test", progress=False)
    else:
        train_on = {"single-ct": ["site-ct"], "single-mri": ["site-mri"],
                    "centralized": ["site-ct", "site-mri"]}[setting]
        cfg = TrainConfig.from_dict(_train_values(method, channels, seed, test_input))
        res = train([datalists[s] for s in train_on], out / "train", cfg, epochs=rounds, progress=False)
        result = evaluate(res["model"], tests, "test", progress=False)
    result["seconds"] = time.perf_counter() - t0
    return result


def run_grid(datalists: dict[str, Path], output: Path, methods: list[str], settings: list[str], rounds: int,
             channels: list[int], seed: int = 0, test_input: str = "raw") -> Path:
    """Run every missing cell of the grid, then write the report; returns the report folder.

    ``test_input``: ``"raw"`` or ``"reference"`` (each method's reference test-time filter, ``fedgin.methods``).
    """
    output.mkdir(parents=True, exist_ok=True)
    data = {site: hashlib.sha1(Path(d).read_bytes()).hexdigest()[:12] for site, d in sorted(datalists.items())}
    _check_grid_params(output, {"rounds": rounds, "channels": list(channels), "seed": seed, "test_input": test_input,
                                "datalists_sha1": data})
    cells = grid(methods, settings)
    for i, (setting, method) in enumerate(cells, 1):
        cell = output / "runs" / f"{setting}__{method}"
        done = cell / "result.json"
        if done.is_file():
            print(f"[{i}/{len(cells)}] {setting} {method}: done before, kept")
            continue
        print(f"[{i}/{len(cells)}] {setting} {method} ...", flush=True)
        cell.mkdir(parents=True, exist_ok=True)
        result = run_one(setting, method, datalists, cell, rounds, channels, seed, test_input)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"setting": setting, "method": method, **result}, default=str))
        tmp.replace(done)  # a cell counts as done only once its result is complete
        print(f"      mean Dice {result['mean_dice']:.3f} in {result['seconds']:.0f} s")
    return write_report(output, cells)


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


def write_report(output: Path, cells: list[tuple[str, str]]) -> Path:
    """dice.csv, table.md, ratios.csv and dice.png from the cells' result.json files."""
    results = [json.loads((output / "runs" / f"{s}__{m}" / "result.json").read_text()) for s, m in cells]
    classes = results[0]["classes"]
    with open(output / "dice.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "method", "case", "modality", "class", "dice"])
        for r in results:
            for c in r["cases"]:
                for name in classes:
                    d = c["dice"].get(name)
                    w.writerow([r["setting"], r["method"], c["case"], c["modality"], name, "" if d is None else d])
    # table: rows = runs, columns = (modality, class) + mean per modality
    cols = [(m, name) for m in ("ct", "mri") for name in classes + ["mean"]]

    def cell(r, m, name):
        block = r["summary"]["per_modality"].get(m)
        if block is None:
            return math.nan
        return block["mean_dice"] if name == "mean" else block["per_class"][name]["mean"]

    values = [[cell(r, m, n) for m, n in cols] for r in results]
    best = [max((v[j] for v in values if not math.isnan(v[j])), default=math.nan) for j in range(len(cols))]
    header = "| setting | method | " + " | ".join(f"{m.upper()} {n}" for m, n in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for r, v in zip(results, values):
        cells_txt = [("**%.3f**" if x == best[j] else "%.3f") % x if not math.isnan(x) else "n/a"
                     for j, x in enumerate(v)]
        lines.append(f"| {r['setting']} | {r['method']} | " + " | ".join(cells_txt) + " |")
    (output / "table.md").write_text("\n".join(lines) + "\n")
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
    print((output / "table.md").read_text())
    return output


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
