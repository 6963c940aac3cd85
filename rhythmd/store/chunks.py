"""The chunk codec: how a batch's series is packed into a chunk row and read back.

One chunk is one (run, metric, batch) row: steps as little-endian int64 bytes, values and wall
times as little-endian float64 bytes (non-finite values kept exactly), with the counts and
step and value bounds that let a read select chunks without unpacking them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rhythmd.batch import SeriesData

I8 = np.dtype("<i8")
"""Packed steps: little-endian int64."""
F8 = np.dtype("<f8")
"""Packed values and wall times: little-endian float64 (non-finite kept exactly)."""
_SMALL = 64  # series up to this long get their bounds from Python lists, longer from numpy


def encode(s: SeriesData, *, series_id: int, run_id: str, seq_start: int, batch_seq: int,
           branch: int) -> dict[str, Any]:
    """The chunk row of one series of a batch (its points numbered from ``seq_start``)."""
    values = s.values
    n = int(values.size)
    vmin: float | None
    vmax: float | None
    if n <= _SMALL:  # a per-flush batch: Python's min/max cost a fifth of numpy's calls
        steps = s.steps.tolist()
        min_step, max_step = min(steps), max(steps)
        finite = [v for v in values.tolist() if math.isfinite(v)]
        n_finite = len(finite)
        vmin, vmax = (min(finite), max(finite)) if finite else (None, None)
    else:
        min_step, max_step = int(s.steps.min()), int(s.steps.max())
        finite_mask = np.isfinite(values)
        n_finite = int(np.count_nonzero(finite_mask))
        if n_finite == n:
            vmin, vmax = float(values.min()), float(values.max())
        elif n_finite:
            fin = values[finite_mask]
            vmin, vmax = float(fin.min()), float(fin.max())
        else:
            vmin = vmax = None
    return {
        "series_id": series_id,
        "run_id": run_id,
        "seq_start": seq_start,
        "batch_seq": batch_seq,
        "branch": branch,
        "n": n,
        "min_step": min_step,
        "max_step": max_step,
        "n_nonfinite": n - n_finite,
        "vmin": vmin,
        "vmax": vmax,
        "steps": s.steps.astype(I8, copy=False).tobytes(),
        "values": values.astype(F8, copy=False).tobytes(),
        "wall_times": (s.wall_times.astype(F8, copy=False).tobytes()
                       if s.wall_times is not None else None),
    }


def steps_of(data: bytes) -> np.ndarray:
    """A chunk's steps (a read-only view of ``data``)."""
    return np.frombuffer(data, dtype=I8)


def floats_of(data: bytes) -> np.ndarray:
    """A chunk's values or wall times (a read-only view of ``data``)."""
    return np.frombuffer(data, dtype=F8)
