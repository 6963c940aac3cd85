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

``--streams``: instead, the named ingest streams of ``bench/ingest.py`` (healthy, divergent,
realistic; ``rhythmd.eval.streams``) through ``RunAnalyzer.feed`` alone, as the daemon feeds
them (no HTTP, no store): CPU microseconds per point (best of ``--repeat``) and a digest of
every diagnosis event, the blow-up bound after each batch and the final states, so a change
meant to be a pure speed-up can show that the analysis says the same thing. ``--batch`` sets
the points per batch (1,000 as in ``ingest.py``; about 25 is what ``load.py`` sends).
Usage: python bench/analysis.py [--max-steps 1000000] [--skip-growth]
       python bench/analysis.py --streams [healthy,divergent,realistic] [--points 500000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.metrics import with_aliases
from rhythmd.batch import parse_metric_batch
from rhythmd.core.analyzers import analysis_names
from rhythmd.eval.streams import STREAMS, ingest_stream, synthetic


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-steps", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=None,
                    help="points per batch (50; --streams: 1,000)")
    ap.add_argument("--skip-growth", action="store_true", help="only the per-point table")
    ap.add_argument("--streams", nargs="?", const=",".join(STREAMS), default=None,
                    help="the named ingest streams through the analyzer alone (all)")
    ap.add_argument("--points", type=int, default=500_000, help="--streams: points per stream")
    ap.add_argument("--repeat", type=int, default=3, help="--streams: best of this many")
    a = ap.parse_args(argv)
    if a.streams is not None:
        batch = a.batch or 1_000
        for name in a.streams.split(","):
            streams(name.strip(), a.points, batch, a.repeat)
        return 0
    if not a.skip_growth:
        growth(a.max_steps, a.batch or 50)
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


def streams(name: str, n_points: int, batch: int, repeat: int) -> None:
    """One named stream through ``RunAnalyzer.feed`` alone: µs per point and a result digest."""
    stream = ingest_stream(name, n_points, batch)
    bodies = [(i, parse_metric_batch(stream.runs[i].bodies[j])) for i, j in stream.order]
    best = math.inf
    digest = ""
    for _ in range(max(1, repeat)):
        analyzers = [RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": r.total_steps}))
                     for r in stream.runs]
        names = [analysis_names(an.cfg) for an in analyzers]
        out: list[Any] = []
        cpu = 0.0
        for i, b in bodies:
            an = analyzers[i]
            series = with_aliases({s.name: (s.steps, s.values) for s in b.series}, names[i])
            t0 = time.process_time()
            events = an.feed(series, b.branch, None)
            bound = an.blowup_bound()
            cpu += time.process_time() - t0
            out.append([i, [[e.type, e.step, e.diagnosis.to_dict()] for e in events], bound])
        out.append([an.state_dict() for an in analyzers])
        text = json.dumps(out, sort_keys=True, allow_nan=True, default=float)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        best = min(best, cpu)
    n_events = sum(len(x[1]) for x in out[:-1])
    print(f"{name:>10}: {stream.n_points:,} points in {len(bodies):,} batches of {batch:,}: "
          f"{1e6 * best / stream.n_points:.2f} us CPU per point (best of {repeat}), "
          f"{n_events} events, digest {digest}")


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
