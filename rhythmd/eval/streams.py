"""Synthetic metric streams shared by the benchmarks and the tests (their one home: the tests
need not import ``bench`` nor the benchmarks the tests).

- :func:`synthetic`: one run's train loss and LR as arrays (``bench/analysis.py``, the
  equivalence tests).
- :func:`ingest_stream`: a named stream as ingest bodies, batch by batch, for the throughput
  benchmark and the in-process profile: ``healthy`` (train loss only, one run per client),
  ``divergent`` (the same with a NaN loss every 1,000 steps, so with analysis on every batch
  opens and closes a divergence) and ``realistic`` (what a training hook sends: train loss and
  LR every step, a validation loss every 50 steps, ten runs round robin, one in ten diverging).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STREAMS = ("healthy", "divergent", "realistic")
NAN_EVERY = 1000
"""``divergent``: one NaN train loss in this many steps."""
VAL_EVERY = 50
"""``realistic``: a validation point every this many steps."""
REALISTIC_RUNS = 10
"""``realistic``: runs streamed round robin; run 0 blows up at 40 % of its steps."""


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1..n, train loss (power-law decay, 5 % noise, rare one-step spikes), lr."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, n + 1, dtype=np.int64)
    loss = 0.5 + 2.0 * (1 + s / 500.0) ** -0.5
    loss = loss * np.exp(rng.normal(0, 0.05, n))
    spikes = rng.random(n) < 2e-4
    loss[spikes] *= 3.0
    warm = max(1, n // 100)
    lr = np.where(s <= warm, s / warm, 0.5 * (1 + np.cos(math.pi * (s - warm) / (n - warm))))
    return s, loss, 1e-3 * np.maximum(lr, 0.01)


@dataclass
class RunStream:
    """One run of a stream: its planned length, its bodies in order, what must be stored."""

    total_steps: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    points: dict[str, int] = field(default_factory=dict)  # series -> points sent
    nonfinite: dict[str, int] = field(default_factory=dict)  # series -> non-finite points


@dataclass
class Stream:
    """A named stream: its runs, and the order the batches go out in (run index, body index)."""

    name: str
    runs: list[RunStream]
    order: list[tuple[int, int]]

    @property
    def n_points(self) -> int:
        return sum(sum(r.points.values()) for r in self.runs)


def _json_values(v: np.ndarray) -> list[float]:
    return [float(x) for x in v]


def _add(run: RunStream, name: str, steps: np.ndarray, values: np.ndarray,
         series: list[dict[str, Any]]) -> None:
    if not steps.size:
        return
    series.append({"name": name, "steps": steps.tolist(), "values": _json_values(values)})
    run.points[name] = run.points.get(name, 0) + int(steps.size)
    run.nonfinite[name] = run.nonfinite.get(name, 0) + int(np.count_nonzero(~np.isfinite(values)))


def _train_only(n_points: int, batch: int, runs: int, nan_every: int) -> list[RunStream]:
    """``runs`` runs of ``train_loss`` only, ``n_points`` in all, batches of ``batch``."""
    per = [n_points // runs + (i < n_points % runs) for i in range(runs)]
    out = []
    for n in per:
        r = RunStream(total_steps=n)
        s = np.arange(n, dtype=np.int64)
        v = 2.0 / (1 + 0.01 * s)
        if nan_every:
            v[s % nan_every == nan_every - 1] = math.nan
        for i0 in range(0, n, batch):
            series: list[dict[str, Any]] = []
            _add(r, "train_loss", s[i0:i0 + batch], v[i0:i0 + batch], series)
            r.bodies.append({"series": series})
        out.append(r)
    return out


def _realistic_run(n_points: int, batch: int, diverge: bool, seed: int) -> RunStream:
    """Train loss and LR every step, val loss every ``VAL_EVERY`` steps, warmup + cosine LR;
    a diverging run's loss grows 25 % a step from 40 % of its steps until it is infinite."""
    per_step = 2 + 1 / VAL_EVERY
    n = max(1, int(n_points / per_step))
    r = RunStream(total_steps=n)
    rng = np.random.default_rng(seed)
    s = np.arange(n, dtype=np.int64)
    base = 0.3 + 2.0 * np.exp(-s / max(1.0, n / 5))
    loss = base * np.exp(rng.normal(0, 0.03, n))
    if diverge:
        blow = int(0.4 * n)
        with np.errstate(over="ignore"):
            loss[blow:] *= 1.25 ** np.minimum(np.arange(1, n - blow + 1), 400)
    warm = max(1, n // 50)
    lr = 1e-3 * np.where(s < warm, (s + 1) / warm,
                         0.5 * (1 + np.cos(math.pi * (s - warm) / max(1, n - warm))))
    lr = np.maximum(lr, 1e-6)
    val = base * 1.05
    steps_per_batch = max(1, int(batch / per_step))
    for i0 in range(0, n, steps_per_batch):
        i1 = min(n, i0 + steps_per_batch)
        series: list[dict[str, Any]] = []
        _add(r, "train_loss", s[i0:i1], loss[i0:i1], series)
        _add(r, "lr", s[i0:i1], lr[i0:i1], series)
        vs = s[i0:i1][s[i0:i1] % VAL_EVERY == VAL_EVERY - 1]
        _add(r, "val_loss", vs, val[vs], series)
        r.bodies.append({"series": series})
    return r


def ingest_stream(name: str, n_points: int, batch: int, clients: int = 1) -> Stream:
    """The named stream, about ``n_points`` points in batches of about ``batch`` points.

    ``healthy`` and ``divergent``: one run per client, each its share of the points.
    ``realistic``: :data:`REALISTIC_RUNS` runs (at least one per client), batches round robin.
    Every body gets a unique ``batch_id``.
    """
    if name == "healthy":
        runs = _train_only(n_points, batch, clients, 0)
    elif name == "divergent":
        runs = _train_only(n_points, batch, clients, NAN_EVERY)
    elif name == "realistic":
        k = max(REALISTIC_RUNS, clients)
        runs = [_realistic_run(n_points // k, batch, i % 10 == 0, seed=i) for i in range(k)]
    else:
        raise ValueError(f"unknown stream {name!r}; one of {', '.join(STREAMS)}")
    for i, r in enumerate(runs):
        for j, body in enumerate(r.bodies):
            body["batch_id"] = f"r{i}-b{j}"
    depth = max(len(r.bodies) for r in runs)
    order = [(i, j) for j in range(depth) for i, r in enumerate(runs) if j < len(r.bodies)]
    return Stream(name, runs, order)
