"""The chunk codec: a chunk row's bounds and counts are the same whichever path computes them."""

from __future__ import annotations

import numpy as np
import pytest

from rhythmd.batch import SeriesData
from rhythmd.store import chunks


def _row(s: SeriesData) -> dict:
    return chunks.encode(s, series_id=1, run_id="r", seq_start=7, batch_seq=7, branch=0)


def test_small_series_bounds_match_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for trial in range(2000):
        n = int(rng.integers(1, 2 * chunks._SMALL))
        v = rng.normal(size=n) * 10.0 ** int(rng.integers(-5, 5))
        for _ in range(int(rng.integers(0, 3))):
            v[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf])
        if trial % 50 == 0:
            v[:] = np.nan
        steps = np.sort(rng.integers(0, 2**53, size=n)).astype(np.int64)
        s = SeriesData("x", steps, v)
        small = _row(s)
        with monkeypatch.context() as m:
            m.setattr(chunks, "_SMALL", -1)
            big = _row(s)
        assert small == big
        assert {k: type(x) for k, x in small.items()} == {k: type(x) for k, x in big.items()}
        assert small["n_nonfinite"] == int(np.count_nonzero(~np.isfinite(v)))
        assert np.array_equal(chunks.floats_of(small["values"]), v, equal_nan=True)
