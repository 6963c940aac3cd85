"""``ScheduleTracker.update_many`` (numpy and short-run paths) leaves exactly the state of
per-point ``update``: random LR streams (warmup or not, cosine, steps, restarts, noise, bad
values, repeated and skipped steps) in random chunks, compared attribute for attribute."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rhythmd.analysis.schedule import ScheduleTracker


def _lrs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 3000))
    s = np.cumsum(rng.choice([1, 1, 1, 2, 10], n)) if rng.random() < 0.3 else np.arange(n)
    warm = int(rng.integers(0, n // 4)) if rng.random() < 0.7 else 0
    t = np.arange(n, dtype=float)
    lr = 0.5 * (1 + np.cos(math.pi * t / n)) if rng.random() < 0.5 else np.ones(n)
    if rng.random() < 0.4:
        lr = lr * 0.1 ** (t // rng.integers(50, 500))
    if rng.random() < 0.2:
        lr = lr * (1 + 0.5 * np.sin(t / rng.uniform(5, 50)))
    if warm:
        lr[:warm] *= (t[:warm] + 1) / warm
    lr = 1e-3 * np.maximum(lr, 1e-4)
    if rng.random() < 0.3:
        lr *= 1 + rng.uniform(0, 0.03) * rng.standard_normal(n)
    bad = rng.random(n) < 0.01
    lr[bad] = rng.choice([math.nan, -1.0, 0.0, 1e200, math.inf], int(bad.sum()))
    return s.astype(np.int64), lr


def _state(t: ScheduleTracker) -> str:
    return json.dumps(t.state_dict(), sort_keys=True, allow_nan=True)


@pytest.mark.parametrize("seed", range(30))
def test_update_many_is_per_point_update(seed: int) -> None:
    s, lr = _lrs(seed)
    ref = ScheduleTracker()
    for a, b in zip(s.tolist(), lr.tolist(), strict=True):
        ref.update(a, b)
    new = ScheduleTracker()
    rng = np.random.default_rng(100 + seed)
    i = 0
    while i < s.size:
        n = int(rng.choice([1, 2, 5, 12, 23, 24, 25, 50, 100, 1000]))
        new.update_many(s[i:i + n], lr[i:i + n])
        i += n
    assert _state(new) == _state(ref)
