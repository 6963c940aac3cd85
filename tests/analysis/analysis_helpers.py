"""Shared helpers for the analysis tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent, RunAnalyzer

CURVES = Path(__file__).resolve().parents[1] / "data" / "curves"


def stream(
    series: dict[str, tuple[Any, Any]],
    batch: int = 50,
    cfg: dict[str, Any] | None = None,
    an: RunAnalyzer | None = None,
) -> tuple[RunAnalyzer, list[DiagnosisEvent]]:
    """Feed {metric: (steps, values)} in step windows of ``batch`` steps."""
    an = an or RunAnalyzer(AnalysisConfig.from_run_config(cfg))
    cols = {k: (np.asarray(s, np.int64), np.asarray(v, np.float64)) for k, (s, v) in series.items()}
    lo = min(int(s.min()) for s, _ in cols.values() if s.size)
    hi = max(int(s.max()) for s, _ in cols.values() if s.size)
    events: list[DiagnosisEvent] = []
    for e0 in range(lo, hi + 1, batch):
        b = {
            k: (s[(s >= e0) & (s < e0 + batch)], v[(s >= e0) & (s < e0 + batch)])
            for k, (s, v) in cols.items()
        }
        events += an.feed({k: x for k, x in b.items() if x[0].size})
    return an, events


def first(an: RunAnalyzer, kind: str) -> int | None:
    """detected_at_step of the first diagnosis of ``kind``."""
    for d in an.diagnoses:
        if d.kind == kind:
            return d.detected_at_step
    return None
