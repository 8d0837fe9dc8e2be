"""The picture of a federated-statistics run (``fedgin stats``): what each site's data looks like, side by side.

Reads the JSON NVFlare's ``StatisticsController`` writes (``{feature: {statistic: {site | "Global": {dataset:
value}}}}``: features ``raw`` and ``normalised`` of dataset ``intensity``, one per organ of dataset ``organs``;
histograms as ``[low, high, count]`` buckets) and draws three panels: the intensity histogram inside the
body of every site's source scans (HU and MRI units on one axis: the shift GIN has to bridge), the same after
fedgin's per-volume normalisation (what the network sees), and the organ volume fractions per site.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_stats", "stats_png", "stats_table"]

GLOBAL = "Global"


def read_stats(path: str | Path) -> dict[str, Any]:
    """The statistics JSON; ``ValueError`` naming the file when it is unreadable or holds no intensity feature."""
    try:
        stats = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the federated statistics: {e}") from e
    if "normalised" not in stats:
        raise ValueError(f"{path}: no 'normalised' intensity feature: not written by fedgin stats")
    return stats


INTENSITY = ("raw", "normalised")


def _sites(stats: dict[str, Any]) -> list[str]:
    return sorted(s for s in stats["normalised"]["count"] if s != GLOBAL)


def _organs(stats: dict[str, Any]) -> list[str]:
    return [f for f in stats if f not in INTENSITY]


def _value(stats, feature: str, statistic: str, site: str, dataset: str):
    return stats.get(feature, {}).get(statistic, {}).get(site, {}).get(dataset)


def stats_table(stats: dict[str, Any]) -> str:
    """A markdown table: per site and intensity (raw, normalised), body voxels and mean ± sd; then each organ's
    share of the body (``removed`` where NVFlare's cleansers held a value back)."""
    lines = ["| site | intensity | voxels in the body | mean ± sd |", "|---|---|---|---|"]
    for site in _sites(stats) + [GLOBAL]:
        for feature in INTENSITY:
            n = _value(stats, feature, "count", site, "intensity")
            if n is None:
                continue
            m, sd = (_value(stats, feature, k, site, "intensity") for k in ("mean", "stddev"))
            lines.append(f"| {site} | {feature} | {int(n):,} | {m:.3g} ± {sd if sd is not None else float('nan'):.3g} |")
    organs = _organs(stats)
    if organs:
        lines += ["", "| site | " + " | ".join(f"{o} % of body" for o in organs) + " |",
                  "|---|" + "---|" * len(organs)]
        for site in _sites(stats) + [GLOBAL]:
            vals = [_value(stats, o, "mean", site, "organs") for o in organs]
            lines.append(f"| {site} | " + " | ".join("removed" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
    return "\n".join(lines)


def stats_png(stats: dict[str, Any], path: str | Path, title: str = "federated statistics") -> Path:
    """Draw the three panels to ``path`` (PNG); returns it."""
    from fedgin.reporting.figures import pyplot, save_png

    plt = pyplot()
    sites = _sites(stats)
    features = [f for f in INTENSITY if any(_value(stats, f, "histogram", s, "intensity") for s in sites)]
    organs = _organs(stats)
    fig, axes = plt.subplots(1, len(features) + 1, figsize=(5 * (len(features) + 1), 3.8))
    axes = np.atleast_1d(axes)
    units = {"raw": "source intensity (CT: HU; MRI: scanner units)", "normalised": "normalised intensity (z)"}
    for ax, feature in zip(axes, features):
        for site in sites:
            buckets = _value(stats, feature, "histogram", site, "intensity")
            if not buckets:
                continue
            b = np.asarray(buckets, dtype=np.float64)
            centres, widths, counts = (b[:, 0] + b[:, 1]) / 2, b[:, 1] - b[:, 0], b[:, 2]
            ax.plot(centres, counts / max(counts.sum(), 1) / np.maximum(widths, 1e-12), label=site)
        ax.set_yscale("log")
        ax.set_xlabel(units[feature])
        ax.set_ylabel("density (body voxels)")
        ax.set_title(f"{feature} intensity inside the body")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[-1]
    x = np.arange(len(organs))
    width = 0.8 / max(len(sites), 1)
    for i, site in enumerate(sites):
        vals = [_value(stats, o, "mean", site, "organs") for o in organs]
        vals = [np.nan if v is None else v for v in vals]
        ax.bar(x + (i - (len(sites) - 1) / 2) * width, 100 * np.asarray(vals, dtype=float), width, label=site)
    ax.set_xticks(x, organs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of the body's voxels")
    ax.set_title("organ volume fractions")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_png(fig, path, rect=(0, 0, 1, 0.95))
