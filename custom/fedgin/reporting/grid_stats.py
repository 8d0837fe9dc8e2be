"""Statistics of a result grid over seeds: per cell mean ± sd and 95 % CI, and each method against a reference.

A *cell* is one (setting, method) of a grid; it holds one evaluation result per training seed
(``fedgin.engine.evaluation.evaluate`` format plus ``"seed"``). Its observations for a column (test modality, class or
``"mean"``) are the per-case values of every seed, keyed by ``(seed, site, case)``: Dice, HD95 (mm) or NSD; the
``"mean"`` of a case is its mean over the classes its ground truth has. Classes absent from a case's ground truth
are no observation (as in ``fedgin.engine.metrics.summarise``).

- ``cell_stats``: ``fedgin.reporting.statistics.mean_ci`` over the observations (seeds × cases, percentile bootstrap), plus
  ``sd_seeds``: the sd over seeds of the per-seed means (the training noise alone).
- ``versus``: ``fedgin.reporting.statistics.paired_test`` between two cells on the observations they share (the same
  seeds and cases).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from fedgin.reporting.statistics import ALPHA, mean_ci, paired_test

__all__ = ["METRICS", "observations", "cell_stats", "versus", "format_stats", "format_boundary", "stats_note",
           "boundary_note"]

#: metric name -> (key of a case record, higher is better)
METRICS = {"dice": ("dice", True), "hd95_mm": ("hd95_mm", False), "nsd": ("nsd", True)}


def _case_value(case: dict[str, Any], name: str, key: str, classes: Sequence[str]) -> float | None:
    values = case.get(key) or {}
    if name != "mean":
        v = values.get(name)
        return None if v is None or not math.isfinite(v) else float(v)
    vals = [values.get(c) for c in classes]
    vals = [float(v) for v in vals if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def observations(results: Sequence[dict[str, Any]], modality: str, name: str,
                 metric: str = "dice") -> dict[tuple[Any, str, str], float]:
    """``{(seed, site, case): value}`` of one cell's results (one per seed) on the ``modality`` test cases;
    ``name``: a class or ``"mean"``."""
    key = METRICS[metric][0]
    out = {}
    for r in results:
        for c in r["cases"]:
            if c["modality"] != modality:
                continue
            v = _case_value(c, name, key, r["classes"])
            if v is not None:
                out[(r.get("seed", 0), c.get("site", ""), c["case"])] = v
    return out


def cell_stats(results: Sequence[dict[str, Any]], modality: str, name: str, metric: str = "dice") -> dict[str, Any]:
    """``{"mean", "sd", "ci_low", "ci_high", "n", "seeds", "sd_seeds"}`` of one cell and column (NaN when it has
    no observation)."""
    obs = observations(results, modality, name, metric)
    stats = mean_ci(list(obs.values()))
    per_seed: dict[Any, list[float]] = {}
    for (seed, _, _), v in obs.items():
        per_seed.setdefault(seed, []).append(v)
    means = [sum(v) / len(v) for v in per_seed.values()]
    if len(means) > 1:
        mu = sum(means) / len(means)
        sd_seeds = math.sqrt(sum((m - mu) ** 2 for m in means) / (len(means) - 1))
    else:
        sd_seeds = 0.0 if means else math.nan
    return {**stats, "seeds": len(per_seed), "sd_seeds": sd_seeds}


def versus(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], modality: str, name: str,
           metric: str = "dice", test: str = "wilcoxon") -> dict[str, float]:
    """Paired test of cell ``a`` against cell ``b`` on their shared (seed, site, case) observations:
    ``{"diff": mean(a - b), "p", "n"}``."""
    oa, ob = observations(a, modality, name, metric), observations(b, modality, name, metric)
    keys = sorted(set(oa) & set(ob), key=str)
    return paired_test([oa[k] for k in keys], [ob[k] for k in keys], method=test)


def format_stats(s: dict[str, Any], digits: int = 3) -> str:
    """``"0.764 ± 0.031 (0.721–0.802)"``: mean ± sd (95 % CI); ``"n/a"`` without observations."""
    if not s["n"]:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['mean'])} ± {f.format(s['sd'])} ({f.format(s['ci_low'])}–{f.format(s['ci_high'])})"


def format_boundary(results: Sequence[dict[str, Any]], modality: str, name: str) -> str:
    """``"12.3 ± 1.0 / 0.712 ± 0.030"``: HD95 (mm) / NSD, mean ± sd over seeds × cases; ``"n/a"`` without them."""
    return boundary_text(*(cell_stats(results, modality, name, m) for m in ("hd95_mm", "nsd")))


def boundary_text(hd: dict[str, Any], nsd: dict[str, Any]) -> str:
    """One boundary cell from the ``cell_stats`` of HD95 and NSD; ``"n/a"`` when no case has them."""
    if not hd["n"]:
        return "n/a"
    return f"{hd['mean']:.1f} ± {hd['sd']:.1f} / {nsd['mean']:.3f} ± {nsd['sd']:.3f}"


def boundary_note() -> str:
    """The footnote of a boundary table."""
    from fedgin.engine.surface import NSD_TOLERANCE_MM

    return (f"HD95 in mm (lower is better; a class present but never predicted scores the volume's diagonal) / NSD "
            f"(surface Dice) at a {NSD_TOLERANCE_MM:g} mm tolerance; mean ± sd over seeds × test cases, in each "
            f"test volume's own geometry.")


def stats_note(seeds: Sequence[int], reference: str, test: str = "wilcoxon") -> str:
    """The footnote explaining a statistics table's cells and marks."""
    how = "Wilcoxon signed-rank" if test == "wilcoxon" else "paired bootstrap"
    return (f"Each cell: mean ± sd (95 % bootstrap CI of the mean) over {len(seeds)} training seed(s) "
            f"({', '.join(map(str, seeds))}) × the test cases. † : differs from {reference} "
            f"(two-sided paired {how} test over the same seeds and cases, p < {ALPHA}); no mark: the difference "
            f"is inside the noise at that level.")
