"""One builder of the policy's :class:`RunContext`, used by the daemon, ``rhythmd analyze``
and the probe runner, so the same stream gets the same recommendations everywhere."""

from __future__ import annotations

import math
from typing import Any

from rhythmd.analysis import RunAnalyzer
from rhythmd.policy.types import RunContext

HISTORY_KEYS = ("id", "action", "status", "issued_at_step", "applied_step", "note",
                "diagnosis_id", "params", "lr_before", "lr_after", "author")


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def history_entry(rec: dict[str, Any]) -> dict[str, Any]:
    """A recommendation (as the API shows it) in the form the policy reads."""
    return {k: rec.get(k) for k in HISTORY_KEYS}


def run_context(analyzer: RunAnalyzer, step: int,
                history: list[dict[str, Any]]) -> RunContext:
    """What the policy knows at ``step``: the analyzer's LR phase, budget, branch, open
    diagnoses and monitored series, and the recommendation ``history`` (oldest first)."""
    sched = analyzer.sched
    lrs = [float(x) for x in [k[1] for k in sched.knots] + ([sched.last[1]] if sched.last
                                                              else [])
           if isinstance(x, (int, float)) and math.isfinite(x) and x > 0]
    peak = max(lrs, default=None)
    after = lrs[lrs.index(peak):] if peak is not None else []
    series = analyzer.stag.series
    return RunContext(
        step=int(step),
        lr=_finite(sched.last[1] if sched.last else None),
        first_lr=_finite(sched.first_lr),
        total_steps=analyzer.cfg.total_steps,
        in_warmup=bool(sched.in_warmup()),
        warmup_end_step=sched.warmup_end_step,
        branch_start_step=analyzer.branch_start,
        peak_lr=peak,
        min_lr_after_peak=min(after, default=None),
        open_diagnosis_ids={d.id for d in analyzer.diagnoses if d.status == "open"},
        monitored=(list(series.s), list(series.v)),
        history=[history_entry(h) for h in history],
    )
