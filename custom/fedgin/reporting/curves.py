"""Training curves of finished runs, read back from their TensorBoard event files, as one PNG.

A run folder (a ``cell`` of ``compare`` or of an experiment) holds either ``train/tb/`` (local and centralized
training: ``val/dice`` and ``train/loss`` per evaluation chunk) or ``workspace/<job>/server/simulate_job/tb_events/<site>/``
(a federation: per round, each site's validation Dice of the incoming global model and its training loss, averaged
here over the sites). Every run is drawn against the fraction of its budget done (rounds or epochs; all runs of a
grid have the same budget), so local, centralized and federated runs share one axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_scalars", "run_curves", "curves_png", "late_gain", "convergence_csv", "print_convergence"]

TAGS = {"dice": ("val/dice", "val_dice_global_model"), "loss": ("train/loss", "train_loss")}


def read_scalars(event_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} of every scalar in the event files of ``event_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        events = acc.Scalars(tag)
        out[tag] = (np.array([e.step for e in events], float), np.array([e.value for e in events], float))
    return out


def smooth(values: np.ndarray, points: int = 50) -> np.ndarray:
    """Moving average over ``len / points`` values for long (per-step) series; short ones are returned as they are."""
    w = len(values) // points
    if w < 2:
        return values
    padded = np.concatenate([np.full(w - 1, values[0]), values])
    return np.convolve(padded, np.ones(w) / w, mode="valid")


def run_curves(cell: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"dice"|"loss": (fraction of the budget in (0, 1], value)} of one run folder; empty when it has no events."""
    cell = Path(cell)
    sources = [cell / "train" / "tb"] if (cell / "train" / "tb").is_dir() else sorted(
        (cell / "workspace").glob("*/server/simulate_job/tb_events/*"))
    series: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"dice": [], "loss": []}
    for src in sources:
        scalars = read_scalars(src)
        for key, tags in TAGS.items():
            for tag in tags:
                if tag in scalars and len(scalars[tag][0]):
                    series[key].append(scalars[tag])
    out = {}
    for key, parts in series.items():
        if not parts:
            continue
        steps = np.unique(np.concatenate([s for s, _ in parts]))
        values = np.array([np.nanmean([v[s == x][0] for s, v in parts if (s == x).any()]) for x in steps])
        # federated steps are rounds 0..R-1 (the Dice of the global model that starts round r); training steps end
        # at the budget: both map onto (0, 1]
        frac = (steps + 1) / (steps.max() + 1) if cell.joinpath("workspace").is_dir() else steps / steps.max()
        out[key] = (frac, smooth(values))
    return out


def late_gain(values: np.ndarray) -> float:
    """Validation Dice gained over the last quarter of a run: the mean of its last quarter of points minus the
    mean of the quarter before (NaN with fewer than 2 points). About 0 once a curve has flattened."""
    k = len(values) // 4
    if k < 1:
        return float("nan")
    return float(np.mean(values[-k:]) - np.mean(values[-2 * k:-k]))


def convergence_csv(cells: dict[str, str | Path], output: str | Path) -> dict[str, float]:
    """Write ``output`` (CSV: run, points, final, best, late_gain of each run's validation Dice curve) for the
    runs ({label: run folder}) that have events; returns the median late gain per setting (the label's part
    before ``__``), the figure behind "the curves have flattened"."""
    import csv

    rows = []
    for label, path in cells.items():
        c = run_curves(path) if Path(path).is_dir() else {}
        if "dice" in c:
            y = c["dice"][1]
            rows.append([label, len(y), y[-1], y.max(), late_gain(y)])
    if not rows:
        return {}
    with open(output, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "points", "final", "best", "late_gain"])
        w.writerows([r[:2] + [f"{v:.4f}" for v in r[2:]] for r in rows])
    groups: dict[str, list[float]] = {}
    for r in rows:
        if not np.isnan(r[4]):
            groups.setdefault(r[0].split("__")[0], []).append(r[4])
    return {g: float(np.median(v)) for g, v in groups.items()}


def print_convergence(medians: dict[str, float], csv_name: str, prefix: str = "") -> None:
    """One line: the median late gain per setting that ``convergence_csv`` returned (nothing when empty)."""
    if medians:
        print(f"{prefix}validation Dice gained over the last quarter of the budget (median run; {csv_name}): "
              + ", ".join(f"{g} {v:+.3f}" for g, v in medians.items()))


def curves_png(cells: dict[str, str | Path], output: str | Path, title: str = "") -> Path | None:
    """Validation Dice and training loss of several runs ({label: run folder}); None when none has events."""
    curves = {label: run_curves(path) for label, path in cells.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    from fedgin.reporting.figures import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, c in curves.items():
        style = "-" if label.startswith("federated") else ("--" if label.startswith("centralized") else ":")
        for ax, key in zip(axes, ("dice", "loss")):
            if key in c:
                ax.plot(*c[key], style, marker="." if len(c[key][0]) < 30 else None, label=label)
    axes[0].set_ylabel("validation Dice (federated: global model at the sites)")
    axes[1].set_ylabel("training loss")
    for ax in axes:
        ax.set_xlabel("fraction of the training budget (rounds = epochs)")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return save_png(fig, output, dpi=110)
