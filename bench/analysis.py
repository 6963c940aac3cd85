"""Per-batch analysis cost as a run grows.

Streams one synthetic run (train loss + lr per step, val loss every 100 steps, warmup+cosine
lr, noise and one-step spikes) through ``RunAnalyzer.feed`` in batches of 50 steps, and
prints the mean time per batch over the 100 batches (5,000 steps) just before the run reaches
1e3, 1e4, 1e5 and 1e6 steps, then the ratio last/first (target <= 2). Also checks that the
state stays bounded. Then the per-point cost on per-step streams: microseconds per point
(train_loss + lr, two points per step, no val stream) for batches of 12, 50 and 1,000 steps,
with and without a declared budget (without one, the train loss is judged as pseudo-evals every
50 steps), for the vectorised analyzer and its per-point path (``bulk=False``, the
specification the equivalence tests hold it to) on the same stream.
Usage: python bench/analysis.py [--max-steps 1000000] [--skip-growth]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.eval.streams import synthetic


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-steps", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--skip-growth", action="store_true", help="only the per-point table")
    a = ap.parse_args(argv)
    if not a.skip_growth:
        growth(a.max_steps, a.batch)
    per_point()
    return 0


def _time_stream(make: Any, rc: dict[str, Any], batch: int, steps: int, reps: int = 3) -> float:
    """Best of ``reps``: microseconds per point (train_loss + lr) after a 2,000-step warm-up."""
    warm = 2000
    s, loss, lr = synthetic(warm + steps, seed=1)
    best = math.inf
    for _ in range(reps):
        an = make(rc)
        t = 0.0
        for i0 in range(0, warm + steps, batch):
            i1 = min(i0 + batch, warm + steps)
            b = {"train_loss": (s[i0:i1], loss[i0:i1]), "lr": (s[i0:i1], lr[i0:i1])}
            t0 = time.perf_counter()
            an.feed(b)
            if i0 >= warm:
                t += time.perf_counter() - t0
        best = min(best, t)
    return 1e6 * best / (2 * steps)


def per_point() -> None:
    impls: list[tuple[str, Any, int]] = [
        ("vectorised", lambda rc: RunAnalyzer(AnalysisConfig.from_run_config(rc)), 30_000)
    ]
    impls.append(("per-point", lambda rc: RunAnalyzer(AnalysisConfig.from_run_config(rc),
                                                     bulk=False), 6_000))
    print()
    print("us per point (train_loss + lr per step, no val stream; best of 3)")
    print(f"{'impl':>12} {'budget':>10} {'batch 12':>10} {'batch 50':>10} {'batch 1000':>11}")
    for name, make, steps in impls:
        for label, rc in (("1e6 steps", {"total_steps": 1_000_000}), ("none", {})):
            cells = [_time_stream(make, rc, b, steps) for b in (12, 50, 1000)]
            print(f"{name:>12} {label:>10} {cells[0]:>10.2f} {cells[1]:>10.2f} {cells[2]:>11.2f}")


def growth(n: int, b: int) -> None:
    s, loss, lr = synthetic(n)
    an = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": n}))
    marks = [m for m in (1_000, 10_000, 100_000, 1_000_000) if m <= n]
    window = 100  # batches timed before each mark
    times: list[float] = []
    results: list[tuple[int, float, int]] = []
    for i0 in range(0, n, b):
        i1 = min(i0 + b, n)
        batch = {"train_loss": (s[i0:i1], loss[i0:i1]), "lr": (s[i0:i1], lr[i0:i1])}
        vs = s[i0:i1][s[i0:i1] % 100 == 0]
        if vs.size:
            batch["val_loss"] = (vs, loss[vs - 1] * 0.9)
        t0 = time.perf_counter()
        an.feed(batch)
        times.append(time.perf_counter() - t0)
        if i1 in marks:
            recent = times[-window:]
            size = len(json.dumps(an.state_dict(), allow_nan=True))
            results.append((i1, float(np.mean(recent)), size))
            times = []
    print(f"{'run length (steps)':>20} {'ms per batch of ' + str(b):>22} {'state bytes':>12}")
    for m, t, size in results:
        print(f"{m:>20,} {1000 * t:>22.3f} {size:>12,}")
    if len(results) >= 2:
        print(f"ratio last/first: {results[-1][1] / results[0][1]:.2f} (target <= 2)")
    print(f"diagnoses: {[d.id for d in an.diagnoses][:12]}")


if __name__ == "__main__":
    sys.exit(main())
