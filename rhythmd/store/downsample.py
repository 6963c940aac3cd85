"""Downsampling for plots: min and max per bucket, with every non-finite point kept."""

from __future__ import annotations

import numpy as np


def downsample_indices(steps: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices (sorted) of at most about ``max_points`` points that keep the shape of a series.

    The finite points are cut into ``max_points // 2`` buckets of equal step width; each keeps
    its minimum and maximum, so spikes and dips stay visible. Every non-finite point is kept
    (they are the strongest divergence signal and are never hidden), as are the first and last
    points. The result may exceed ``max_points`` only by the number of non-finite points.
    """
    n = steps.size
    if n <= max_points:
        return np.arange(n)
    finite = np.isfinite(values)
    keep = np.flatnonzero(~finite)
    fidx = np.flatnonzero(finite)
    budget = max(max_points - 2, 2)
    n_buckets = max(budget // 2, 1)
    if fidx.size > budget:
        fsteps = steps[fidx].astype(np.float64)
        lo, hi = fsteps.min(), fsteps.max()
        width = (hi - lo) / n_buckets if hi > lo else 1.0
        bucket = np.minimum(((fsteps - lo) / width).astype(np.int64), n_buckets - 1)
        fvals = values[fidx]
        # Sort by (bucket, value): the first and last of each bucket are its min and max.
        order = np.lexsort((fvals, bucket))
        b_sorted = bucket[order]
        starts = np.flatnonzero(np.r_[True, b_sorted[1:] != b_sorted[:-1]])
        ends = np.r_[starts[1:], b_sorted.size] - 1
        chosen = fidx[order[np.r_[starts, ends]]]
    else:
        chosen = fidx
    return np.unique(np.concatenate([keep, chosen, [0, n - 1]]).astype(np.int64))
