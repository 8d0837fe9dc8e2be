"""Confidence intervals and paired tests of result tables (``fedgin.reporting.statistics``) on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgin.reporting.statistics import ALPHA, mean_ci, paired_test, significance_mark


def test_wilcoxon_six_positive_differences_has_the_exact_p_of_two_in_sixty_four():
    """n = 6 differences, all positive, no ties: W- = 0, and of the 2^6 equally likely sign patterns under H0 only
    "all +" and "all -" are as extreme, so the exact two-sided p = 2 / 64."""
    a = [0.8, 0.7, 0.9, 0.6, 0.75, 0.85]
    b = [x - d for x, d in zip(a, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06])]
    res = paired_test(a, b)
    assert res["p"] == pytest.approx(2 / 64) and res["n"] == 6 and res["diff"] == pytest.approx(0.035)
    assert significance_mark(res["p"]) == "†"
    assert paired_test(a, a) == {"diff": 0.0, "p": 1.0, "n": 6}  # identical methods: no difference at all
    # pairs with a missing value are dropped, not shifted
    assert paired_test([0.5, None, 0.7], [0.4, 0.3, math.nan])["n"] == 1


def test_paired_bootstrap_finds_a_clear_shift_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.8, 40)
    shifted = base + 0.05 + rng.normal(0, 0.01, 40)
    assert paired_test(shifted, base, "bootstrap")["p"] < 0.01
    noise = base + rng.normal(0, 0.05, 40)
    res = paired_test(noise, base, "bootstrap")  # noise of sd 0.05 around no shift: a mean diff of ~0.008
    assert res["p"] > ALPHA and significance_mark(res["p"]) == "", res
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0], [1.0, 2.0])


def test_mean_ci_brackets_the_mean_and_narrows_with_more_cases():
    assert mean_ci([0.5, 0.5, 0.5]) == {"mean": 0.5, "sd": 0.0, "ci_low": 0.5, "ci_high": 0.5, "n": 3}
    small = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert small["sd"] == pytest.approx(np.std([0.2, 0.4, 0.6, 0.8], ddof=1))
    assert small["mean"] == pytest.approx(0.5) and small["ci_low"] < 0.5 < small["ci_high"]
    big = mean_ci([0.2, 0.4, 0.6, 0.8] * 25)
    assert big["ci_high"] - big["ci_low"] < (small["ci_high"] - small["ci_low"]) / 3
    assert mean_ci([0.2, 0.4, 0.6, 0.8]) == small  # seeded: the same interval every time
    assert mean_ci([None, math.nan])["n"] == 0 and math.isnan(mean_ci([])["mean"])
