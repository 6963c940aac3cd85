"""Small robust statistics used by the detectors (pure numpy/scipy, bounded inputs)."""

from __future__ import annotations

import math

import numpy as np

from rhythmd.analysis.stats import hf_power_share, rate_steadiness  # noqa: F401 (shared)

MAD_TO_SIGMA = 1.4826
_BIG = 1e300


def finite(x: float) -> bool:
    """True if ``x`` is a finite float."""
    return math.isfinite(x)


def scaled_asinh(x: float, scale: float) -> float:
    """Log-like, sign-safe transform ``asinh(x / scale)``: ~log for large x, linear near 0."""
    z = x / scale if scale > 0 else x
    if z > _BIG:
        z = _BIG
    elif z < -_BIG:
        z = -_BIG
    return math.asinh(z)


def median(v: list[float] | np.ndarray) -> float:
    """Median of a non-empty sequence (nan if empty)."""
    if len(v) == 0:
        return math.nan
    return float(np.median(np.asarray(v, dtype=float)))


def robust_sigma(v: list[float] | np.ndarray) -> float:
    """1.4826 * MAD; 0.0 for fewer than two points."""
    a = np.asarray(v, dtype=float)
    if a.size < 2:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(a - np.median(a))))


def diff_sigma(v: list[float] | np.ndarray) -> float:
    """Noise sigma from first differences (robust to a slow trend): MAD(diff) * 1.4826 / sqrt 2."""
    a = np.asarray(v, dtype=float)
    if a.size < 3:
        return 0.0
    return robust_sigma(np.diff(a)) / math.sqrt(2.0)


def mann_kendall(y: np.ndarray) -> tuple[float, float, float]:
    """Mann–Kendall trend test. Returns (tau, p_decreasing, p_increasing), one-sided, normal approx.

    Ties are handled by the standard tie correction of the variance.
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 3:
        return 0.0, 1.0, 1.0
    d = np.sign(y[None, :] - y[:, None])
    s = float(np.triu(d, 1).sum())
    _, counts = np.unique(y, return_counts=True)
    ties = float(np.sum(counts * (counts - 1) * (2 * counts + 5)))
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    tau = s / (n * (n - 1) / 2.0)
    if var <= 0:
        return tau, 1.0, 1.0
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s != 0 else 0.0
    p_dec = 0.5 * math.erfc(-z / math.sqrt(2.0))  # P(Z <= z): small when clearly decreasing
    p_inc = 0.5 * math.erfc(z / math.sqrt(2.0))  # P(Z >= z): small when clearly increasing
    return tau, min(1.0, p_dec), min(1.0, p_inc)


def theil_sen(x: np.ndarray, y: np.ndarray, conf: float = 0.90) -> tuple[float, float, float]:
    """Theil–Sen slope with Sen's two-sided confidence interval. Returns (slope, lo, hi).

    Units: y per unit of x. O(n^2) pairs; callers pass bounded windows.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    if n < 2:
        return 0.0, -math.inf, math.inf
    i, j = np.triu_indices(n, 1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not np.any(ok):
        return 0.0, -math.inf, math.inf
    slopes = np.sort((y[j] - y[i])[ok] / dx[ok])
    m = slopes.size
    slope = float(np.median(slopes))
    z = math.sqrt(2.0) * _erfinv(conf)
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lo_i = math.floor((m - c) / 2.0)
    hi_i = math.ceil((m + c) / 2.0)
    lo = float(slopes[lo_i]) if 0 <= lo_i < m else -math.inf
    hi = float(slopes[hi_i]) if 0 <= hi_i < m else math.inf
    return slope, lo, hi


def _erfinv(p: float) -> float:
    """Inverse error function (enough precision for confidence levels)."""
    from scipy.special import erfinv

    return float(erfinv(p))


def normal_confidence(z: float) -> float:
    """One-sided normal probability P(Z < z), used as a confidence from a z-score."""
    if not math.isfinite(z):
        return 1.0 if z > 0 else 0.0
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


_HAT: dict[int, np.ndarray] = {}


def _resid_matrix(n: int) -> np.ndarray:
    """I - H for a quadratic least-squares fit over n equally spaced points (cached)."""
    m = _HAT.get(n)
    if m is None:
        x = np.linspace(-1.0, 1.0, n)
        a = np.vstack([np.ones(n), x, x * x]).T
        m = np.eye(n) - a @ np.linalg.pinv(a)
        if len(_HAT) < 256:
            _HAT[n] = m
    return m


def detrend_residuals(y: np.ndarray) -> np.ndarray:
    """Residuals of y around a Savitzky–Golay smoother whose window spans the whole window
    with polyorder 2, i.e. a quadratic least-squares trend (computed with a cached matrix)."""
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 4:
        return y - np.mean(y) if n else y
    return _resid_matrix(n) @ y


def alternation_stats(y: np.ndarray) -> dict[str, float]:
    """Bounce statistics of an eval window: sign-change rate and lag-1 autocorrelation of
    the first differences, and the high-frequency share of the periodogram of the detrended
    residuals (frequencies >= 0.25 cycles/eval)."""
    y = np.asarray(y, dtype=float)
    out = {"sign_change_rate": 0.0, "diff_lag1_autocorr": 0.0, "hf_power_share": 0.0}
    if y.size < 5:
        return out
    d = np.diff(y)
    s = np.sign(d)
    nz = s[s != 0]
    if nz.size >= 2:
        out["sign_change_rate"] = float(np.mean(nz[1:] != nz[:-1]))
    dc = d - d.mean()
    den = float(np.dot(dc, dc))
    if den > 0:
        out["diff_lag1_autocorr"] = float(np.dot(dc[1:], dc[:-1]) / den)
    # the periodogram share as the package computes it (tests/analysis/test_stats.py checks it
    # against scipy.signal.periodogram)
    out["hf_power_share"] = hf_power_share(detrend_residuals(y))
    return out


def curvature_sigma(y: np.ndarray) -> float:
    """Trend-insensitive jitter scale: robust sigma of second differences / sqrt(6).

    Equals the point noise sigma for white noise on any locally linear trend; a zig-zag of
    amplitude a gives about 2.4 a. Units of y (use a log/relative view for relative jitter).
    """
    y = np.asarray(y, dtype=float)
    if y.size < 4:
        return 0.0
    return robust_sigma(np.diff(y, 2)) / math.sqrt(6.0)
