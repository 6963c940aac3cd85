"""What the runs list shows of each run beyond its row: the worst diagnosis, what rhythmd
changed (rescued by a rollback, a change reverted, stopped; the number of changes applied) and
the best validation value.

A page of runs costs a fixed number of queries, whatever its length: one per table, grouped
over the page's run ids (no query per run).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select

from rhythmd.store.points import F8, I8
from rhythmd.store.schema import chunks, diagnoses, recommendations, series
from rhythmd.web.data import roles_for
from rhythmd.webhooks import SEVERITY_RANK


@dataclass
class Overview:
    """One run's line in the runs list."""

    worst: dict[str, Any] | None = None  # the worst diagnosis (severity, then open, then latest)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)  # in detection order
    applied: dict[str, int] = field(default_factory=dict)  # applied changes by action
    best_val: tuple[str, float, int | None] | None = None  # (metric, value, step)

    @property
    def changes(self) -> int:
        """Changes rhythmd (or a person) applied to the training: every action but ``stop``."""
        return sum(n for action, n in self.applied.items() if action != "stop")

    def badges(self, run: dict[str, Any]) -> list[str]:
        """``rescued`` (a rollback applied), ``reverted`` (a change undone), ``stopped``."""
        out = []
        if self.applied.get("rollback"):
            out.append("rescued")
        if self.applied.get("revert"):
            out.append("reverted")
        if self.applied.get("stop") or run.get("status") == "stopped":
            out.append("stopped")
        return out


def severity_rank(diagnosis: dict[str, Any]) -> tuple[int, int, int]:
    """Sort key of a diagnosis, worst last: severity, open over closed, later detection."""
    return (SEVERITY_RANK.get(str(diagnosis.get("severity")), -1),
            int(diagnosis.get("status") == "open"), int(diagnosis.get("detected_at_step") or 0))


def overviews(service: Any, runs: list[dict[str, Any]]) -> dict[str, Overview]:
    """``{run_id: Overview}`` for a page of runs (four grouped queries)."""
    ids = [str(r["run_id"]) for r in runs]
    out = {rid: Overview() for rid in ids}
    if not ids:
        return out
    with service.store.read() as conn:
        for rid, data in conn.execute(select(diagnoses.c.run_id, diagnoses.c.data)
                                      .where(diagnoses.c.run_id.in_(ids))
                                      .order_by(diagnoses.c.detected_at_step,
                                                diagnoses.c.created_at)):
            d = json.loads(data)
            o = out[rid]
            o.diagnoses.append(d)
            if o.worst is None or severity_rank(d) > severity_rank(o.worst):
                o.worst = d
        for rid, action, n in conn.execute(
                select(recommendations.c.run_id, recommendations.c.action, func.count())
                .where(recommendations.c.run_id.in_(ids), recommendations.c.status == "applied")
                .group_by(recommendations.c.run_id, recommendations.c.action)):
            out[rid].applied[str(action)] = int(n)
        names: dict[str, dict[str, int]] = {rid: {} for rid in ids}
        for rid, name, sid in conn.execute(select(series.c.run_id, series.c.name,
                                                  series.c.series_id)
                                           .where(series.c.run_id.in_(ids))):
            names[rid][name] = int(sid)
        wanted: dict[int, tuple[str, str, str]] = {}  # series_id -> (run_id, metric, mode)
        for run in runs:
            rid = str(run["run_id"])
            roles = roles_for(run, list(names[rid]))
            for name, mode in ((roles.val, roles.val_mode), (roles.aux, roles.aux_mode)):
                if name:
                    wanted[names[rid][name]] = (rid, name, mode)
                    break
        if wanted:
            _best(conn, wanted, out)
    return out


def _best(conn: Any, wanted: dict[int, tuple[str, str, str]], out: dict[str, Overview]) -> None:
    """The best finite value of each wanted series and the step it was reached at: the chunks
    holding the extreme (from their stored min/max), read in one query."""
    inner = chunks.alias("inner")
    best_min = (select(func.min(inner.c.vmin)).where(inner.c.series_id == chunks.c.series_id)
                .scalar_subquery())
    best_max = (select(func.max(inner.c.vmax)).where(inner.c.series_id == chunks.c.series_id)
                .scalar_subquery())
    lows = [sid for sid, (_, _, mode) in wanted.items() if mode != "max"]
    highs = [sid for sid, (_, _, mode) in wanted.items() if mode == "max"]
    cond = (chunks.c.series_id.in_(lows) & (chunks.c.vmin == best_min)) | (
        chunks.c.series_id.in_(highs) & (chunks.c.vmax == best_max))
    rows = conn.execute(select(chunks.c.series_id, chunks.c.steps, chunks.c["values"])
                        .where(cond).order_by(chunks.c.seq_start))
    for sid, steps_raw, values_raw in rows:
        rid, name, mode = wanted[int(sid)]
        values = np.frombuffer(values_raw, dtype=F8)
        finite = np.isfinite(values)
        if not finite.any():
            continue
        masked = np.where(finite, values, -np.inf if mode == "max" else np.inf)
        i = int(np.argmax(masked) if mode == "max" else np.argmin(masked))
        value, step = float(values[i]), int(np.frombuffer(steps_raw, dtype=I8)[i])
        have = out[rid].best_val
        better = have is None or (value > have[1] if mode == "max" else value < have[1])
        if math.isfinite(value) and better:
            out[rid].best_val = (name, value, step)
