"""Equivalence of the analyzer's bulk path with its own per-point path.

``RunAnalyzer(cfg, bulk=False)`` sends every point through the detectors' per-point code, the
specification; the default bulk path fast-forwards over quiet stretches.
``compare(cols, run_config, batch)`` replays the same columns through both paths in
consecutive step windows of ``batch`` steps and returns a list of differences (empty when the
events, schedule segments and final state are identical; floats within 1e-9 relative).

Local check over whole corpora (not part of the pytest run)::

    python -m tests.analysis.equivalence /work/shared/corpus/dev/runs [--sample 200] [DIR ...]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.offline import read_csv_columns

BATCHES = (1, 7, 50, 1000)
Cols = dict[str, tuple[np.ndarray, np.ndarray]]


def _diff(a: Any, b: Any, path: str, out: list[str], rel: float = 1e-9) -> None:
    if len(out) > 20:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            out.append(f"{path}: keys {sorted(a)} != {sorted(b)}")
            return
        for k in a:
            _diff(a[k], b[k], f"{path}.{k}", out, rel)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: len {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out, rel)
    elif isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            out.append(f"{path}: {a!r} != {b!r}")
        elif math.isnan(a) or math.isnan(b):
            if not (math.isnan(a) and math.isnan(b)):
                out.append(f"{path}: {a!r} != {b!r}")
        elif a != b and abs(a - b) > rel * max(abs(a), abs(b)):
            out.append(f"{path}: {a!r} != {b!r}")
    elif type(a) is not type(b) or a != b:
        out.append(f"{path}: {a!r} != {b!r}")


def _windows(cols: Cols, batch: int) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    allsteps = [s for s, _ in cols.values() if s.size]
    if not allsteps:
        return []
    lo = int(min(s.min() for s in allsteps))
    hi = int(max(s.max() for s in allsteps))
    edges = [*range(lo, hi + 1, batch), hi + 1]
    idx = {k: np.searchsorted(s, edges, side="left") for k, (s, _) in cols.items()}
    out = []
    for b in range(len(edges) - 1):
        part = {}
        for k, (s, v) in cols.items():
            i0, i1 = idx[k][b], idx[k][b + 1]
            if i1 > i0:
                part[k] = (s[i0:i1], v[i0:i1])
        if part:
            out.append(part)
    return out


def compare(
    cols: Cols,
    run_config: dict[str, Any] | None,
    batch: int,
    feeds: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Differences between the per-point and the bulk path (empty: identical).

    ``feeds`` overrides the windowing: a list of ``{"batch": ..., "branch": ..., ...}``."""
    new = RunAnalyzer(AnalysisConfig.from_run_config(run_config))
    ref = RunAnalyzer(AnalysisConfig.from_run_config(run_config), bulk=False)
    calls = feeds if feeds is not None else [{"batch": b} for b in _windows(cols, batch)]
    out: list[str] = []
    for i, call in enumerate(calls):
        ev_ref = [e.to_dict() for e in ref.feed(**call)]
        ev_new = [e.to_dict() for e in new.feed(**call)]
        _diff(ev_ref, ev_new, f"feed[{i}].events", out)
        if out:
            return out
    _diff(ref.state_dict(), new.state_dict(), "state", out, rel=0.0)
    return out


def variants(cols: Cols) -> list[tuple[str, Cols]]:
    """The curve as recorded, and its train loss + lr alone (pseudo-eval path)."""
    out = [("full", cols)]
    tl = {k: v for k, v in cols.items() if k in ("train_loss", "lr")}
    if "train_loss" in tl and len(tl) < len(cols):
        out.append(("train+lr", tl))
    return out


def check_file(path: Path, batches: tuple[int, ...] = BATCHES) -> tuple[int, list[str]]:
    cols = read_csv_columns(path)
    last = [int(s.max()) for s, _ in cols.values() if s.size]
    rc = {"total_steps": max(last)} if last else {}
    n, bad = 0, []
    for name, cc in variants(cols):
        for b in batches:
            n += 1
            d = compare(cc, rc, b)
            if d:
                bad.append(f"{path.name} [{name}, batch {b}]: {d[:3]}")
    return n, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--sample", type=int, default=0, help="random sample of files per dir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    total, files, bad = 0, 0, []
    t0 = time.perf_counter()
    for d in a.dirs:
        paths = sorted(Path(d).rglob("*.csv"))
        if a.sample and len(paths) > a.sample:
            paths = sorted(random.Random(a.seed).sample(paths, a.sample))
        for p in paths:
            try:
                n, b = check_file(p)
            except (KeyError, ValueError, IndexError, StopIteration) as e:  # not a curve file
                print(f"skip {p}: {type(e).__name__}", file=sys.stderr)
                continue
            files += 1
            total += n
            bad += b
            for line in b:
                print("DIFF", line)
    dt = time.perf_counter() - t0
    print(
        f"{files} curves, {total} replays (variants x batches {BATCHES}), "
        f"{len(bad)} with differences ({dt:.0f}s)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
