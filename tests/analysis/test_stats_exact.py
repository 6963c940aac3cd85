"""The fast paths of the window statistics give the straightforward numpy formulation's
floats bit for bit (sign of zero included) on random windows: ties, signed zeros, infinities,
NaN, huge and subnormal values, tiny sizes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from rhythmd.analysis import stats
from rhythmd.analysis.detectors.series import EvalSeries


def _same(a: object, b: object) -> bool:
    """Equal floats bit for bit (NaN equals NaN), elementwise through tuples and arrays."""
    if isinstance(a, np.ndarray | list | tuple):
        a_, b_ = list(np.asarray(a, float).ravel()), list(np.asarray(b, float).ravel())
        return len(a_) == len(b_) and all(_same(x, y) for x, y in zip(a_, b_, strict=True))
    fa, fb = float(a), float(b)  # type: ignore[arg-type]
    return (math.isnan(fa) and math.isnan(fb)) or (fa == fb and math.copysign(1, fa)
                                                      == math.copysign(1, fb))


def _windows(seed: int, count: int, sizes: range) -> Iterator[np.ndarray]:
    """Random windows of many shapes: noise on trends, few distinct values (ties), signed
    zeros, a non-finite value, huge and subnormal scales."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        n = int(rng.choice(list(sizes)))
        kind = k % 8
        if kind == 0:
            y = np.cumsum(rng.normal(size=n)) * 10 ** rng.uniform(-6, 6)
        elif kind == 1:
            y = rng.integers(-2, 3, n).astype(float)  # ties, +0.0
        elif kind == 2:
            y = rng.choice([0.0, -0.0, 1.0, -1.0], n)  # signed zeros
        elif kind == 3:
            y = rng.normal(size=n) * 1e300  # overflowing differences
        elif kind == 4:
            y = rng.normal(size=n) * 1e-310  # subnormal
        elif kind == 5:
            y = np.full(n, rng.normal())  # constant
        elif kind == 6:
            y = 1.0 + 0.1 * (-1.0) ** np.arange(n) + rng.normal(0, 0.01, n)  # zig-zag
        else:
            y = rng.normal(size=n)
            if n:
                y[rng.integers(n)] = rng.choice([math.nan, math.inf, -math.inf])
        yield y


def _old_median(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else math.nan


def _old_robust_sigma(a: np.ndarray) -> float:
    if a.size < 2:
        return 0.0
    return float(stats.MAD_TO_SIGMA * _old_median(np.abs(a - _old_median(a))))


def _numpy_path(f: Callable[..., object]) -> Callable[..., object]:
    """``f`` with the pure-Python paths off: the numpy formulation (the previous code)."""

    def ref(*args: object) -> object:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(stats, "_PY_MAX", 0)
            mp.setattr(stats, "_r2c", None)
            return f(*args)

    return ref


CASES: list[tuple[str, Callable[[np.ndarray], object], Callable[[np.ndarray], object]]] = [
    ("abs_median", stats.abs_median, lambda a: abs(_old_median(a))),
    ("abs_median(list)", lambda a: stats.abs_median(a.tolist()), lambda a: abs(_old_median(a))),
    ("robust_sigma", stats.robust_sigma, _old_robust_sigma),
    ("robust_sigma(list)", lambda a: stats.robust_sigma(a.tolist()), _old_robust_sigma),
    ("diff_sigma", stats.diff_sigma,
     lambda a: _old_robust_sigma(np.diff(a)) / math.sqrt(2.0) if a.size >= 3 else 0.0),
    ("curvature_sigma", stats.curvature_sigma,
     lambda a: _old_robust_sigma(np.diff(a, 2)) / math.sqrt(6.0) if a.size >= 4 else 0.0),
    ("mean", stats.mean, lambda a: float(np.mean(a))),
    ("mean(3)", lambda a: stats.mean(a[:3]), lambda a: float(np.mean(a[:3]))),
    ("mann_kendall", stats.mann_kendall, _numpy_path(stats.mann_kendall)),
    ("alternation_stats", lambda a: tuple(stats.alternation_stats(a).values()),
     _numpy_path(lambda a: tuple(stats.alternation_stats(a).values()))),
    ("hf_power_share", stats.hf_power_share, _numpy_path(stats.hf_power_share)),
]


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize(("name", "new", "old"), CASES, ids=[c[0] for c in CASES])
def test_window_statistic_is_bit_identical(name: str, new: Callable[[np.ndarray], object],
                                           old: Callable[[np.ndarray], object]) -> None:
    for y in _windows(len(name), 3000, range(0, 40)):
        with np.errstate(all="ignore"):
            want, got = old(y), new(y)
        assert _same(got, want), (name, y.tolist(), got, want)


def test_theil_sen_is_bit_identical() -> None:
    rng = np.random.default_rng(7)
    for k, y in enumerate(_windows(8, 4000, range(0, 20))):
        n = y.size
        xs = [np.arange(n, dtype=float) * 50.0,  # evaluation steps
              np.sort(rng.integers(0, 4, n)).astype(float),  # repeated x (dx = 0 skipped)
              rng.normal(size=n),  # unordered: negative dx, negative zero slopes
              rng.choice([0.0, -0.0, 1.0], n)]
        x = xs[k % len(xs)]
        with np.errstate(all="ignore"):
            want, got = _numpy_path(stats.theil_sen)(x, y, 0.90), stats.theil_sen(x, y, 0.90)
        assert _same(got, want), (x.tolist(), y.tolist(), got, want)


def test_series_view_and_scale_are_bit_identical() -> None:
    def old_view(ser: EvalSeries, y: np.ndarray) -> np.ndarray:
        log_view = ser.positive and y.size and bool(np.all(y > 0))
        with np.errstate(all="ignore"):
            out = np.log(y) if log_view else y / ser.scale(y)
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=1e12, neginf=-1e12), -1e12, 1e12)

    for k, y in enumerate(_windows(9, 3000, range(1, 20))):
        ser = EvalSeries()
        ser.positive = k % 3 != 0
        ser.v = y.tolist()
        ser.first3, ser.best_v = 2.0, 1.0
        y = np.abs(y) if k % 2 else y  # mostly positive windows: the log view
        with np.errstate(all="ignore"):
            assert _same(ser.view(y), old_view(ser, y)), y.tolist()
            want = max(abs(_old_median(y)), 1e-300) if ser.positive else ser.scale(y)
            assert _same(ser.scale(y), want) and _same(ser.scale(y.tolist()), want)


def test_window_count_matches_a_plain_count() -> None:
    from rhythmd.analysis.detectors.stagnation import _count_at_least

    rng = np.random.default_rng(3)
    for k in range(3000):
        steps = sorted(rng.integers(0, 500, rng.integers(0, 40)).tolist())
        if k % 3 == 0 and steps:  # out of order (a restored or rewound series)
            i, j = rng.integers(len(steps), size=2)
            steps[i], steps[j] = steps[j], steps[i]
        start = float(rng.uniform(-10, 510)) if k % 2 else float(rng.integers(0, 500))
        assert _count_at_least(steps, start) == sum(1 for s in steps if s >= start)
