"""Offline helpers: replay a corpus-format CSV through the online analyzer.

Reading a file is the caller's I/O; the analysis itself stays in ``RunAnalyzer``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .analyzer import RunAnalyzer
from .types import AnalysisConfig, Diagnosis, DiagnosisEvent, ScheduleSegment


def parse_float(cell: str | None) -> float | None:
    """CSV cell -> float; empty -> None; 'nan'/'inf'/'-inf' -> non-finite floats."""
    if cell is None:
        return None
    cell = cell.strip()
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return math.nan


def read_csv_columns(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a CSV whose first column is the x axis (step or epoch) into per-metric
    (steps int64, values float64) pairs, skipping empty cells."""
    cols: dict[str, tuple[list[int], list[float]]] = {}
    with open(path, newline="") as fh:
        rd = csv.reader(fh)
        header = next(rd, None)
        if not header:
            return {}
        names = [h.strip() for h in header]
        for row in rd:
            if not row:
                continue
            x = parse_float(row[0])
            if x is None or not math.isfinite(x):
                continue
            for name, cell in zip(names[1:], row[1:], strict=False):
                v = parse_float(cell)
                if v is None:
                    continue
                st, va = cols.setdefault(name, ([], []))
                st.append(round(x))
                va.append(v)
    return {k: (np.asarray(s, np.int64), np.asarray(v, np.float64)) for k, (s, v) in cols.items()}


def replay(
    columns: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: AnalysisConfig,
    batch_steps: int = 50,
    on_events: Callable[[RunAnalyzer, list[DiagnosisEvent]], None] | None = None,
) -> RunAnalyzer:
    """Feed columns to a fresh analyzer in consecutive step windows of ``batch_steps``,
    as a streaming client would; ``on_events(analyzer, events)`` receives each batch's events."""
    an = RunAnalyzer(cfg)
    allsteps = [s for s, _ in columns.values() if s.size]
    if not allsteps:
        return an
    lo = int(min(s.min() for s in allsteps))
    hi = int(max(s.max() for s in allsteps))
    edges = range(lo, hi + 1, max(1, batch_steps))
    idx = {
        k: np.searchsorted(s, [e for e in edges] + [hi + 1], side="left")
        for k, (s, _) in columns.items()
    }
    for b in range(len(edges)):
        batch: dict[str, Any] = {}
        for k, (s, v) in columns.items():
            i0, i1 = idx[k][b], idx[k][b + 1]
            if i1 > i0:
                batch[k] = (s[i0:i1], v[i0:i1])
        if batch:
            ev = an.feed(batch)
            if on_events is not None and ev:
                on_events(an, ev)
    return an


def analyze_csv(
    path: str | Path,
    run_config: dict[str, Any] | None = None,
) -> tuple[list[Diagnosis], list[ScheduleSegment]]:
    """Analyze a corpus CSV (``step, train_loss, lr, val_loss, val_acc``). Without a
    ``run_config`` the last step is taken as the planned run length."""
    cols = read_csv_columns(path)
    rc = dict(run_config or {})
    if not any(k in rc for k in ("total_steps", "max_steps", "planned_steps", "steps")):
        last = [int(s.max()) for s, _ in cols.values() if s.size]
        if last:
            rc["total_steps"] = max(last)
    an = replay(cols, AnalysisConfig.from_run_config(rc))
    return an.diagnoses, an.schedule()
