"""Unit tests of the robust statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from rhythmd.analysis import stats


def test_mann_kendall_directions() -> None:
    tau, p_dec, p_inc = stats.mann_kendall(np.arange(10.0)[::-1])
    assert tau == -1.0 and p_dec < 0.01 and p_inc > 0.99
    tau, p_dec, p_inc = stats.mann_kendall(np.arange(10.0))
    assert tau == 1.0 and p_inc < 0.01
    assert stats.mann_kendall(np.ones(8)) == (0.0, 1.0, 1.0)
    assert stats.mann_kendall(np.array([1.0])) == (0.0, 1.0, 1.0)


def test_theil_sen_slope_and_interval() -> None:
    x = np.arange(20.0)
    y = 2.0 * x + np.r_[np.zeros(19), 100.0]  # one outlier does not move the slope
    s, lo, hi = stats.theil_sen(x, y)
    assert s == 2.0 and lo <= 2.0 <= hi
    assert stats.theil_sen(np.ones(3), np.arange(3.0))[0] == 0.0  # all dx = 0
    assert stats.theil_sen(np.array([1.0]), np.array([1.0]))[0] == 0.0


def test_scaled_asinh_is_sign_safe_and_bounded() -> None:
    assert stats.scaled_asinh(0.0, 1.0) == 0.0
    assert stats.scaled_asinh(-5.0, 1.0) < 0
    assert math.isfinite(stats.scaled_asinh(1e308, 1e-300))
    assert math.isfinite(stats.scaled_asinh(-1e308, 1e-300))


def test_curvature_sigma_ignores_linear_trend() -> None:
    y = np.linspace(0, 10, 30)
    assert stats.curvature_sigma(y) < 1e-12
    zig = 0.1 * (-1.0) ** np.arange(30)
    assert stats.curvature_sigma(y + zig) > 0.1
    assert stats.curvature_sigma(np.array([1.0, 2.0])) == 0.0


def test_alternation_stats_zigzag_vs_monotone() -> None:
    zig = 1 + 0.1 * (-1.0) ** np.arange(12)
    a = stats.alternation_stats(zig)
    assert a["sign_change_rate"] == 1.0 and a["diff_lag1_autocorr"] < -0.5
    m = stats.alternation_stats(np.linspace(2, 1, 12))
    assert m["sign_change_rate"] == 0.0
    assert stats.alternation_stats(np.ones(3))["sign_change_rate"] == 0.0


@pytest.mark.parametrize("n", [2, 5, 6, 7, 16, 24, 33, 64])
def test_hf_power_share_is_scipy_periodogram_share(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(200):
        r = rng.normal(size=n) * 10 ** rng.uniform(-8, 3)
        f, p = signal.periodogram(r, detrend=False)
        tot = float(np.sum(p[1:]))
        want = float(np.sum(p[f >= 0.25]) / tot) if tot > 0 else 0.0
        assert stats.hf_power_share(r) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert stats.hf_power_share(np.zeros(n)) == 0.0


@pytest.mark.parametrize("n", [2, 3, 8, 9, 30])
def test_theil_sen_slope_is_median_of_pairwise_slopes(n: int) -> None:
    rng = np.random.default_rng(n)
    x = np.sort(rng.integers(0, 5, n)).astype(float)  # repeated x: zero-width pairs skipped
    y = rng.normal(size=n)
    i, j = np.triu_indices(n, 1)
    ok = x[j] != x[i]
    want = float(np.median((y[j] - y[i])[ok] / (x[j] - x[i])[ok])) if ok.any() else 0.0
    assert stats.theil_sen(x, y)[0] == want
    y[1] = math.nan
    assert math.isnan(stats.theil_sen(np.arange(n, dtype=float), y)[0])


def test_robust_sigma_small_inputs() -> None:
    assert stats.robust_sigma([]) == 0.0
    assert stats.robust_sigma([1.0]) == 0.0
    assert stats.diff_sigma([1.0, 2.0]) == 0.0
    assert math.isnan(stats.median([]))


@pytest.mark.parametrize("seed", range(5))
def test_theil_sen_and_mann_kendall_agree_with_scipy(seed: int) -> None:
    """The hand-written versions (28x and 10x faster than scipy's on the detectors' 8-32 point
    windows, measured 2026-12-06: 13 vs 376 us, 24 vs 246 us) give scipy's statistics."""
    from scipy import stats as sps

    rng = np.random.default_rng(seed)
    n = 8 + 6 * seed
    x = np.cumsum(rng.uniform(1, 20, n))
    y = 0.01 * x + rng.normal(0, 1, n)
    slope, lo, hi = stats.theil_sen(x, y, 0.90)
    ref = sps.theilslopes(y, x, 0.90)
    assert slope == pytest.approx(ref.slope, rel=1e-12)
    # Sen's interval: the same order statistics up to one rank of rounding
    pairs = np.sort([(y[j] - y[i]) / (x[j] - x[i]) for i in range(n) for j in range(i + 1, n)])
    for ours, theirs in ((lo, ref.low_slope), (hi, ref.high_slope)):
        k = int(np.searchsorted(pairs, theirs))
        assert pairs[max(k - 1, 0)] - 1e-12 <= ours <= pairs[min(k + 1, pairs.size - 1)] + 1e-12
    tau, p_dec, p_inc = stats.mann_kendall(y)
    assert tau == pytest.approx(sps.kendalltau(np.arange(n), y).statistic, rel=1e-12)
    assert 0.0 <= p_dec <= 1.0 and 0.0 <= p_inc <= 1.0
