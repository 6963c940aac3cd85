"""``DivergenceDetector.fast_forward`` leaves exactly the state of per-point ``update``:
random loss streams (noise levels, spikes, blow-ups that stay up, recover or go non-finite,
flat stretches, losses <= 0) cut into random chunks, short (pure-Python path) and long
(numpy path), compared signal for signal and attribute for attribute; and its statistics
helpers against ``stats``."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from rhythmd.analysis import AnalysisConfig, stats
from rhythmd.analysis.detectors import DivergenceDetector
from rhythmd.analysis.detectors.divergence_bulk import _sorted_mad


def _stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(600, 2500))
    s = np.arange(n)
    noise = float(rng.choice([0.0, 0.002, 0.02, 0.05, 0.2]))
    x = (0.3 + 2.0 * np.exp(-s / rng.uniform(50, 800))) * np.exp(rng.normal(0, noise, n))
    for _ in range(int(rng.integers(0, 4))):  # blow-ups: stay up, recover, or plateau
        a = int(rng.integers(50, n - 10))
        b = min(n, a + int(rng.integers(5, 400)))
        grow = 1.0 + rng.uniform(0.01, 0.3)
        factor = grow ** np.minimum(np.arange(1, b - a + 1), rng.integers(10, 400))
        if rng.random() < 0.5:
            x[a:b] *= factor
        else:
            x[a:] *= np.r_[factor, np.full(n - b, factor[-1])]
    spikes = rng.random(n) < 0.003
    x[spikes] *= rng.uniform(2, 30, int(spikes.sum()))
    if rng.random() < 0.4:
        bad = rng.random(n) < 0.004
        x[bad] = rng.choice([math.nan, math.inf, -math.inf], int(bad.sum()))
    if rng.random() < 0.15:  # a loss that crosses zero (signed scale)
        x -= rng.uniform(0.1, 1.0)
    if rng.random() < 0.15:  # a flat stretch (zero spread)
        a = int(rng.integers(0, n // 2))
        x[a:a + 200] = x[a]
    return x


def _state(d: DivergenceDetector) -> str:
    return json.dumps(d.state_dict(), sort_keys=True, allow_nan=True)


def _run(x: np.ndarray, chunks: list[int], bulk: bool) -> tuple[str, str]:
    det = DivergenceDetector(AnalysisConfig(), "train_loss")
    st = np.arange(1, x.size + 1, dtype=np.int64)
    out: list[Any] = []
    pos = 0
    for c in chunks:
        ss, xs = st[pos:pos + c], x[pos:pos + c]
        pos += c
        i = 0
        while i < ss.size:
            k = i + det.fast_forward(ss[i:], xs[i:]) if bulk else i
            if k < ss.size:
                sigs = det.update(int(ss[k]), float(xs[k]), {})
                if sigs:
                    out.append((int(ss[k]), sigs))
            i = k + 1
    return json.dumps(out, allow_nan=True), _state(det)


@pytest.mark.parametrize("seed", range(40))
def test_fast_forward_is_per_point_update(seed: int) -> None:
    x = _stream(seed)
    rng = np.random.default_rng(1000 + seed)
    sizes = [int(v) for v in rng.choice([1, 3, 12, 25, 60, 130, 500, 1000], 400)]
    chunks, total = [], 0
    for c in sizes:
        if total >= x.size:
            break
        chunks.append(min(c, x.size - total))
        total += chunks[-1]
    ref = _run(x, chunks, bulk=False)
    new = _run(x, chunks, bulk=True)
    assert new[0] == ref[0]
    assert new[1] == ref[1]


def test_sorted_mad_is_median_mad() -> None:
    rng = np.random.default_rng(7)
    for t in range(3000):
        n = int(rng.choice([2, 3, 8, 9, 63, 64, 65]))
        if t % 3 == 0:  # ties
            v = rng.choice([0.0, 1.0, 2.0, 0.5, -1.0], n)
        elif t % 3 == 1:  # wide range
            v = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
        else:  # a few ulps apart
            v = rng.random() + rng.integers(-3, 4, n) * 1e-16
        w = sorted(v.tolist())
        m, mad = stats.median_mad(w)
        assert _sorted_mad(w, m) == mad
