"""Small robust statistics used by the detectors (pure numpy/scipy, bounded inputs)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
from scipy import fft as sp_fft

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


def _pymedian(v: list[float]) -> float:
    """``numpy.median`` of a short list of non-nan floats, bit for bit (middle element, or
    the mean ``(a + b) / 2`` of the two middle ones)."""
    s = sorted(v)
    h = len(s) // 2
    return s[h] if len(s) % 2 else (s[h - 1] + s[h]) / 2


def array_median(a: np.ndarray) -> float:
    """``float(np.median(a))`` of a 1-D float array, bit for bit: NaN if any element is NaN
    (or the array is empty), else the middle element or ``(a + b) / 2`` of the middle two. Sorts
    rather than partitions: several times cheaper than ``np.median`` on the short windows the
    detectors use."""
    n = a.size
    if n == 0 or n > 4096:
        return float(np.median(a)) if n else math.nan
    s = np.sort(a)
    if math.isnan(s[-1]):
        return math.nan
    h = n // 2
    return float(s[h]) if n % 2 else float((s[h - 1] + s[h]) / 2)


def _small_finite(v: list[float] | np.ndarray) -> bool:
    """A list of at most 128 numbers and no NaN (a NaN makes the sum NaN)."""
    if not isinstance(v, list) or len(v) > 128:
        return False
    t = sum(v)
    return t == t or not any(x != x for x in v)  # (or both infinities, and no NaN)


def mean(a: np.ndarray) -> float:
    """``float(np.mean(a))`` of a 1-D float array (the same sum over the same count), without
    its per-call overhead."""
    return float(np.add.reduce(a)) / a.size if a.size else math.nan


def _short_list(a: np.ndarray) -> list[float] | None:
    """A 1-D float array of at most 128 elements and no NaN as a list, else None: the
    pure-Python statistics are exact and several times cheaper there."""
    if a.ndim != 1 or a.size > 128 or a.dtype != np.float64:
        return None
    v: list[float] = a.tolist()
    return v if _small_finite(v) else None


def median(v: list[float] | np.ndarray) -> float:
    """Median of a non-empty sequence (nan if empty)."""
    if len(v) == 0:
        return math.nan
    if _small_finite(v):
        return float(_pymedian(v))  # type: ignore[arg-type]
    return array_median(np.asarray(v, dtype=float).ravel())


def abs_median(v: list[float] | np.ndarray) -> float:
    """``abs(median(v))``: the same float whether a short array takes the pure-Python median
    or not (they can differ only in the sign of a zero)."""
    if isinstance(v, np.ndarray) and (short := _short_list(v)) is not None:
        return abs(float(_pymedian(short))) if short else math.nan
    return abs(median(v))


def median_mad(v: list[float]) -> tuple[float, float]:
    """(median, robust_sigma) of a non-empty list of finite floats, as ``median`` and
    ``robust_sigma`` compute them (same floats)."""
    m = float(_pymedian(v))
    return m, MAD_TO_SIGMA * float(_pymedian([abs(x - m) for x in v]))


def robust_sigma(v: list[float] | np.ndarray) -> float:
    """1.4826 * MAD; 0.0 for fewer than two points."""
    if _small_finite(v):
        if len(v) < 2:
            return 0.0
        return median_mad(v)[1]  # type: ignore[arg-type]
    a = np.asarray(v, dtype=float)
    if a.size < 2:
        return 0.0
    short = _short_list(a)  # the MAD does not depend on the sign of a zero median
    if short is not None:
        return median_mad(short)[1]
    a = a.ravel()
    return float(MAD_TO_SIGMA * array_median(np.abs(a - array_median(a))))


def diff_sigma(v: list[float] | np.ndarray) -> float:
    """Noise sigma from first differences (robust to a slow trend): MAD(diff) * 1.4826 / sqrt 2."""
    a = np.asarray(v, dtype=float)
    if a.size < 3:
        return 0.0
    return robust_sigma(a[1:] - a[:-1] if a.ndim == 1 else np.diff(a)) / math.sqrt(2.0)


def mann_kendall(y: np.ndarray) -> tuple[float, float, float]:
    """Mann–Kendall trend test. Returns (tau, p_decreasing, p_increasing), one-sided, normal approx.

    Ties are handled by the standard tie correction of the variance.
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 3:
        return 0.0, 1.0, 1.0
    v = y.tolist() if n <= _PY_MAX and y.ndim == 1 else []
    if v and math.isfinite(sum(v)):  # finite: the sign of a difference is the comparison's
        s = float(sum([(b > a) - (b < a) for i, a in enumerate(v) for b in v[i + 1:]]))
        counts = [] if len(set(v)) == n else list(Counter(v).values())
        ties = float(sum(c * (c - 1) * (2 * c + 5) for c in counts))
    else:
        i, j = _pairs(n)
        s = float(np.sign(y[j] - y[i]).sum())  # sums of +-1: exact in any order
        ys = np.sort(y)
        if ys[-1] == ys[-1] and bool(np.all(ys[1:] != ys[:-1])):  # no NaN, no ties
            ties = 0.0
        else:
            _, cnt = np.unique(y, return_counts=True)
            ties = float(np.sum(cnt * (cnt - 1) * (2 * cnt + 5)))
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    tau = s / (n * (n - 1) / 2.0)
    if var <= 0:
        return tau, 1.0, 1.0
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s != 0 else 0.0
    p_dec = 0.5 * math.erfc(-z / math.sqrt(2.0))  # P(Z <= z): small when clearly decreasing
    p_inc = 0.5 * math.erfc(z / math.sqrt(2.0))  # P(Z >= z): small when clearly increasing
    return tau, min(1.0, p_dec), min(1.0, p_inc)


_PAIRS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_PY_MAX = 12  # up to this many points (66 pairs) pure Python beats numpy's per-call cost


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(n, 1)``, cached for the window sizes in use."""
    found = _PAIRS.get(n)
    if found is None:
        found = np.triu_indices(n, 1)
        if len(_PAIRS) < 256:
            _PAIRS[n] = found
    return found


def theil_sen(x: np.ndarray, y: np.ndarray, conf: float = 0.90) -> tuple[float, float, float]:
    """Theil–Sen slope with Sen's two-sided confidence interval. Returns (slope, lo, hi).

    Units: y per unit of x. O(n^2) pairs; callers pass bounded windows.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    if n < 2:
        return 0.0, -math.inf, math.inf
    slopes = _sorted_slopes(x, y)
    m = len(slopes)
    if m == 0:
        return 0.0, -math.inf, math.inf
    # np.median of the sorted slopes (NaN sorts last and makes the median NaN), bit for bit
    h = m // 2
    if math.isnan(slopes[-1]):
        slope = math.nan
    else:
        slope = float(slopes[h]) if m % 2 else float((slopes[h - 1] + slopes[h]) / 2)
    z = math.sqrt(2.0) * _erfinv(conf)
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lo_i = math.floor((m - c) / 2.0)
    hi_i = math.ceil((m + c) / 2.0)
    lo = float(slopes[lo_i]) if 0 <= lo_i < m else -math.inf
    hi = float(slopes[hi_i]) if 0 <= hi_i < m else math.inf
    return slope, lo, hi


def _sorted_slopes(x: np.ndarray, y: np.ndarray) -> list[float] | np.ndarray:
    """The slopes of all pairs of points with distinct x, ascending (as ``np.sort`` orders
    them: NaN last). In pure Python for a short window where that gives the same sequence (no
    NaN, and no negative zero whose place among the zeros numpy's sort may choose)."""
    n = x.size
    if n <= _PY_MAX and x.ndim == 1 and y.shape == x.shape:
        xs, ys = x.tolist(), y.tolist()
        slopes = [(ys[j] - b) / d for i, (a, b) in enumerate(zip(xs, ys, strict=True))
                  for j in range(i + 1, n) if (d := xs[j] - a) != 0]
        t = sum(slopes)  # NaN when a slope is NaN (or both infinities occur)
        if t == t and not (0.0 in slopes
                           and any(math.copysign(1.0, v) < 0 for v in slopes if v == 0)):
            slopes.sort()
            return slopes
    i, j = _pairs(n)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.all():
        return np.sort((y[j] - y[i])[ok] / dx[ok])
    return np.sort((y[j] - y[i]) / dx)


_ERFINV: dict[float, float] = {}


def _erfinv(p: float) -> float:
    """Inverse error function (enough precision for confidence levels), cached."""
    found = _ERFINV.get(p)
    if found is None:
        from scipy.special import erfinv

        found = _ERFINV[p] = float(erfinv(p))
    return found


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
    d = y[1:] - y[:-1] if y.ndim == 1 else np.diff(y)
    out["sign_change_rate"] = _sign_change_rate(d)
    dc = d - mean(d)
    den = float(np.dot(dc, dc))
    if den > 0:
        out["diff_lag1_autocorr"] = float(np.dot(dc[1:], dc[:-1]) / den)
    out["hf_power_share"] = hf_power_share(detrend_residuals(y))
    return out


def _sign_change_rate(d: np.ndarray) -> float:
    """Share of sign changes between consecutive non-zero differences (a NaN differs from
    everything); 0.0 with fewer than two."""
    v = d.tolist() if d.size <= _PY_MAX and d.ndim == 1 else []
    if v and (t := sum(v)) == t:  # no NaN: a non-zero difference is positive or negative
        up = [x > 0 for x in v if x != 0]
        changes = sum([a != b for a, b in itertools.pairwise(up)])
        return changes / (len(up) - 1) if len(up) >= 2 else 0.0
    s = np.sign(d)
    nz = s[s != 0]
    return np.count_nonzero(nz[1:] != nz[:-1]) / (nz.size - 1) if nz.size >= 2 else 0.0


_HF_BINS: dict[int, np.ndarray] = {}
try:  # the transform scipy.fft.rfft runs (same function, same floats), without its dispatch
    from scipy.fft._pocketfft.pypocketfft import r2c as _r2c
except ImportError:  # pragma: no cover - another scipy layout: scipy.fft.rfft
    _r2c = None


def hf_power_share(r: np.ndarray) -> float:
    """Share of the power at frequencies >= 0.25 cycles/sample in the one-sided periodogram of
    ``r`` (boxcar window, no detrending), the zero frequency excluded: what
    ``scipy.signal.periodogram(r, detrend=False)`` gives, computed with ``scipy.fft.rfft``
    directly (the same figure to about 1e-15, without periodogram's per-call setup, which
    costs ten times the transform on an eval window)."""
    n = r.size
    if n < 2:
        return 0.0
    x = _r2c(r, (0,), True, 0, None, 1) if _r2c and r.ndim == 1 and r.dtype == np.float64 \
        else sp_fft.rfft(r)
    p = x.real * x.real + x.imag * x.imag
    p *= 1.0 / n  # density scaling (fs = 1, boxcar window)
    if n % 2:
        p[1:] *= 2.0  # one-sided: every bin but DC stands for two
    else:
        p[1:-1] *= 2.0  # ... and but the Nyquist bin
    hf = _HF_BINS.get(n)
    if hf is None:
        hf = np.arange(p.size) / n >= 0.25
        if len(_HF_BINS) < 256:
            _HF_BINS[n] = hf
    tot = float(np.add.reduce(p[1:]))
    return float(np.add.reduce(p[hf])) / tot if tot > 0 else 0.0


def rate_steadiness(steps: list[int], values: list[float], since_step: int | None,
                    window: int, remaining: int) -> tuple[float, float]:
    """(recent / earlier improvement rate, projected log gain over ``remaining`` steps) of an
    eval series (lower is better, steps ascending).

    Over the evals at or after ``since_step`` (the current LR regime: since the LR last rose;
    all evals when None or past the last one), on a log scale when every value is positive
    (else relative to the median level): the Theil–Sen slope of the last ``window`` evals (at
    most half of them) over the average slope of the evals before (from the median of the
    first three to that of the last three). A well-set LR bends the curve (ratio well below 1);
    a too-small one keeps it falling at a steady rate (about 1). The projection extends the
    recent slope over ``remaining`` steps. NaN when fewer than ``window`` evals, or when the
    earlier evals did not improve.
    """
    s, v = steps, values
    if since_step is not None and s and since_step <= s[-1]:
        i0 = next(i for i, x in enumerate(s) if x >= since_step)
        s, v = s[i0:], v[i0:]
    n = len(v)
    if n < window:
        return math.nan, math.nan
    a = np.asarray(v, dtype=float)
    y = np.log(a) if bool((a > 0).all()) else a / max(abs(median(v)), 1e-12)
    x = np.asarray(s, dtype=float)
    h = n - min(window, n // 2)
    # earlier rate: the average from the regime's start to the recent window (medians of three
    # evals at both ends), so that a fast first drop counts in full
    y0, y1 = median(y[:3].tolist()), median(y[h - 3 : h].tolist())
    x0, x1 = mean(x[:3]), mean(x[h - 3 : h])
    early = (y1 - y0) / (x1 - x0) if x1 > x0 else math.nan
    if not early < 0:
        return math.nan, math.nan
    recent = theil_sen(x[h:], y[h:], 0.90)[0]
    return recent / early, max(-recent, 0.0) * remaining


def curvature_sigma(y: np.ndarray) -> float:
    """Trend-insensitive jitter scale: robust sigma of second differences / sqrt(6).

    Equals the point noise sigma for white noise on any locally linear trend; a zig-zag of
    amplitude a gives about 2.4 a. Units of y (use a log/relative view for relative jitter).
    """
    y = np.asarray(y, dtype=float)
    if y.size < 4:
        return 0.0
    if y.ndim != 1:
        return robust_sigma(np.diff(y, 2)) / math.sqrt(6.0)
    d = y[1:] - y[:-1]
    return robust_sigma(d[1:] - d[:-1]) / math.sqrt(6.0)  # np.diff(y, 2)
