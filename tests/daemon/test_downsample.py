import numpy as np

from rhythmd.store.downsample import downsample_indices


def test_keeps_extremes_and_every_nonfinite_point():
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(size=steps.size)
    values[31_337] = 50.0  # a one-step spike
    values[77_777] = -50.0
    values[[10, 20_000, 99_998]] = [np.nan, np.inf, -np.inf]
    idx = downsample_indices(steps, values, 500)
    assert idx.size <= 500 + 3
    assert np.all(np.diff(idx) > 0)
    kept = set(idx.tolist())
    assert {31_337, 77_777, 10, 20_000, 99_998, 0, 99_999} <= kept


def test_small_series_untouched():
    steps = np.arange(10)
    assert downsample_indices(steps, steps.astype(float), 10).tolist() == list(range(10))


def test_all_nonfinite():
    steps = np.arange(1000)
    values = np.full(1000, np.nan)
    assert downsample_indices(steps, values, 10).size == 1000
