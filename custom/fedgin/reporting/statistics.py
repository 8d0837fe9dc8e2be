"""Statistics for result tables: mean ± sd with a 95 % confidence interval, and paired tests between methods.

The unit of observation is one (seed, test case) pair: a cell's values are its per-case Dice (or HD95, NSD)
pooled over seeds. Two methods are compared on the *same* cases and seeds, pairwise.

- ``mean_ci``: percentile bootstrap over the observations (10,000 resamples, seeded: the same input gives the same
  interval).
- ``paired_test``: Wilcoxon signed-rank (SciPy, two-sided, exact for small samples without ties) on the paired
  differences, or a paired bootstrap of their mean (two-sided p from the share of resampled means on the other
  side of 0).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["mean_ci", "paired_test", "significance_mark", "ALPHA"]

#: significance level of the marks in the tables
ALPHA = 0.05


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def mean_ci(values: Sequence[float | None], level: float = 0.95, resamples: int = 10_000,
            seed: int = 0) -> dict[str, float]:
    """``{"mean", "sd", "ci_low", "ci_high", "n"}`` of the finite ``values`` (None/NaN left out); NaN when empty.

    ``sd`` is the sample standard deviation (ddof 1; 0 for one value); the interval is the percentile bootstrap of
    the mean at ``level``.
    """
    x = _finite(values)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size == 0:
        return {"mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "ci_low": float(lo), "ci_high": float(hi), "n": int(x.size)}


def paired_test(a: Sequence[float | None], b: Sequence[float | None], method: str = "wilcoxon",
                resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Two-sided paired test of ``a`` against ``b`` (same order: the same seed and case at each position).

    Pairs where either value is None/NaN are dropped. Returns ``{"diff": mean(a - b), "p": float, "n": pairs}``;
    p = 1 when every difference is 0, NaN without pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    if method not in ("wilcoxon", "bootstrap"):
        raise ValueError(f"method must be 'wilcoxon' or 'bootstrap', got {method!r}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not pairs:
        return {"diff": math.nan, "p": math.nan, "n": 0}
    d = np.array([x - y for x, y in pairs], dtype=np.float64)
    if not np.any(d != 0):
        return {"diff": 0.0, "p": 1.0, "n": len(pairs)}
    if method == "wilcoxon":
        from scipy.stats import wilcoxon

        p = float(wilcoxon(d, alternative="two-sided").pvalue)
    else:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, d.size, (resamples, d.size))].mean(1)
        p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    return {"diff": float(d.mean()), "p": p, "n": len(pairs)}


def significance_mark(p: float, alpha: float = ALPHA) -> str:
    """``"†"`` when ``p < alpha`` (a difference outside the noise at that level), else ``""`` (not ``*``, which
    markdown reads as emphasis next to a bold value)."""
    return "†" if p is not None and math.isfinite(p) and p < alpha else ""
