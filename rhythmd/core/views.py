"""The read side: runs, series, diagnoses, recommendations, events, summary and timeline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rhythmd.batch import check_metric_name
from rhythmd.core.analyzers import AnalyzerCache
from rhythmd.core.runs import run_dict, run_row
from rhythmd.core.timeline import format_g as _g
from rhythmd.core.timeline import timeline_item as _timeline_item
from rhythmd.errors import NotFoundError
from rhythmd.store import Store
from rhythmd.store import analysis as analysis_q
from rhythmd.store import branches as branches_q
from rhythmd.store import points as points_q
from rhythmd.store import recommendations as recs_q
from rhythmd.store import runs as runs_q
from rhythmd.store import series as series_q
from rhythmd.store import summary as summary_q
from rhythmd.store.downsample import downsample_indices

log = logging.getLogger("rhythmd.service")

BranchSelector = int | Literal["latest", "all"]


@dataclass(slots=True)
class SeriesView:
    name: str
    branch: BranchSelector
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray | None
    branches: np.ndarray | None
    total_points: int
    downsampled: bool


class Views:
    """Read-only use cases (each in one read transaction, in a worker thread)."""

    def __init__(self, store: Store, lost_rule: runs_q.LostRule, analyzers: AnalyzerCache
                 ) -> None:
        self.store = store
        self.lost_rule = lost_rule
        self.analyzers = analyzers

    def _dict(self, row: Any) -> dict[str, Any]:
        return run_dict(row, self.lost_rule)

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return self._dict(run_row(conn, run_id))

    def list_runs(
        self, project: str | None = None, status: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        with self.store.read() as conn:
            rows, total = runs_q.list_runs(conn, project, status, limit, offset, self.lost_rule)
            return [self._dict(r) for r in rows], total

    def list_metrics(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            return [
                {"name": s.name, "points": s.n_points, "nonfinite_points": s.n_nonfinite,
                 "first_step": s.first_step, "last_step": s.last_step}
                for s in series_q.series_infos(conn, run_id)
            ]

    def read_metric(
        self, run_id: str, name: str, *, branch: BranchSelector = "latest",
        start_step: int | None = None, end_step: int | None = None,
        max_points: int | None = None, with_wall_times: bool = False,
    ) -> SeriesView:
        """Read a series: the latest branch's lineage by default, a given branch's lineage,
        or (``"all"``) every point ever stored in arrival order."""
        check_metric_name(name, ("path", "name"))
        with self.store.read() as conn:
            run = run_row(conn, run_id)
            info = series_q.series_info(conn, run_id, name)
            if info is None:
                raise NotFoundError(f"run {run_id!r} has no metric {name!r}")
            if branch == "all":
                windows = None
            else:
                wanted = int(run["max_branch"]) if branch == "latest" else int(branch)
                known = {b["branch"] for b in runs_q.list_branches(conn, run_id)}
                if wanted not in known:
                    raise NotFoundError(f"run {run_id!r} has no branch {wanted}")
                windows = branches_q.lineage(conn, run_id, wanted)
            pts = points_q.read_points(conn, info.series_id, windows, start_step, end_step,
                                       with_wall_times=with_wall_times)
        steps, values, walls = pts.steps, pts.values, pts.wall_times
        brs = pts.branches if branch == "all" else None
        downsampled = False
        if max_points is not None and pts.size > max_points:
            idx = downsample_indices(steps, values, max_points)
            steps, values = steps[idx], values[idx]
            walls = walls[idx] if walls is not None else None
            brs = brs[idx] if brs is not None else None
            downsampled = True
        return SeriesView(name, branch, steps, values, walls, brs, pts.size, downsampled)

    def list_branches(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            return runs_q.list_branches(conn, run_id)

    def list_diagnoses(self, run_id: str, kind: str | None = None, status: str | None = None
                       ) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            return analysis_q.list_diagnoses(conn, run_id, kind, status)

    def schedule(self, run_id: str) -> list[dict[str, Any]]:
        """The LR schedule segments identified so far (saved state plus a replay of the tail)."""
        with self.store.read() as conn:
            run = run_row(conn, run_id)
            analyzer = self.analyzers.replayed(conn, run)
            return [seg.to_dict() for seg in analyzer.schedule()]

    def list_recommendations(self, run_id: str, status: str | None = None) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            return [recs_q.rec_to_dict(r)
                    for r in recs_q.list_recommendations(conn, run_id, status).all()]

    def summary(self, run_id: str) -> dict[str, Any]:
        """Status, current LR, best/last value of each metric, and counts."""
        with self.store.read() as conn:
            row = run_row(conn, run_id)
            metrics = summary_q.series_summary(conn, run_id)
            diags = analysis_q.list_diagnoses(conn, run_id, None, None)
            recs = recs_q.list_recommendations(conn, run_id, None).all()
        by_status: dict[str, int] = {}
        for r in recs:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        lr = metrics.get("lr", {}).get("last")
        return {
            "run_id": run_id, "name": row["name"], "project": row["project"],
            "status": runs_q.display_status(row, self.lost_rule, time.time()),
            "run_status": row["status"], "health": row["health"],
            "last_step": row["last_step"], "current_lr": lr, "updated_at": row["updated_at"],
            "branch": row["max_branch"], "metrics": metrics,
            "counts": {
                "points": row["n_points"], "batches": row["n_batches"],
                "diagnoses": len(diags),
                "open_diagnoses": sum(1 for d in diags if d.get("status") == "open"),
                "recommendations": by_status,
                "lr_changes_applied": sum(1 for r in recs if r["status"] == "applied"
                                          and r["action"] != "stop"),
                "rollbacks": row["max_branch"],
            },
            "open_diagnoses": [{"id": d["id"], "kind": d["kind"], "severity": d["severity"],
                                "message": d["message"]}
                               for d in diags if d.get("status") == "open"],
        }

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        """Everything that happened to the run, in order: diagnoses, recommendations and what
        the client did with them, rollbacks with the abandoned steps, schedule segments, ends."""
        base = f"/v1/runs/{run_id}"
        with self.store.read() as conn:
            row = run_row(conn, run_id)
            events = recs_q.list_events(conn, run_id)
            branch_rows = runs_q.list_branches(conn, run_id)
            rollbacks = []
            for b in branch_rows:
                if b["branch"] == 0 or b["parent_branch"] is None:
                    continue
                until = branches_q.abandoned_until(conn, run_id, b["parent_branch"],
                                                 b["created_seq"])
                rollbacks.append((b, until))
        items: list[dict[str, Any]] = []
        for e in events:
            items.append(_timeline_item(base, e))
        for b, until in rollbacks:
            start = b["start_step"]
            span = (f"; steps {start}-{until} of branch {b['parent_branch']} abandoned"
                    if until is not None and start is not None and until >= start else "")
            items.append({
                "kind": "rollback", "step": start, "wall_time": b["created_at"],
                "ref_id": str(b["branch"]),
                "title": f"rolled back: resumed at step {start} on branch {b['branch']}{span}",
                "detail": {"branch": b["branch"], "parent_branch": b["parent_branch"],
                           "resumed_at_step": start, "abandoned_from_step": start,
                           "abandoned_to_step": until},
                "links": {"branches": f"{base}/branches"}})
        items.sort(key=lambda i: (i["wall_time"], i["step"] if i["step"] is not None else -1))
        try:
            segments = self.schedule(run_id)
        except Exception:  # the schedule is a convenience here; never fail the timeline
            log.exception("schedule for the timeline of %s failed", run_id)
            segments = []
        for seg in segments:
            item = {"kind": "schedule_segment", "step": seg["start_step"], "wall_time": None,
                    "ref_id": None,
                    "title": (f"LR {seg['kind']} from step {seg['start_step']} to "
                              f"{seg['end_step']}: {_g(seg['lr_start'])} -> {_g(seg['lr_end'])}"),
                    "detail": seg, "links": {"schedule": f"{base}/schedule"}}
            at = next((i for i, x in enumerate(items)
                       if x["step"] is not None and x["step"] > seg["start_step"]), len(items))
            items.insert(at, item)
        now = time.time()
        if self.lost_rule.is_lost(row, now):
            items.append({"kind": "run_lost", "step": row["last_step"], "wall_time": now,
                          "ref_id": None,
                          "title": f"no data for {now - row['updated_at']:.0f} s: the run looks "
                                   "crashed or preempted", "detail": {}, "links": {}})
        return items

    def get_diagnosis(self, run_id: str, diagnosis_id: str) -> dict[str, Any]:
        for d in self.list_diagnoses(run_id):
            if d["id"] == diagnosis_id:
                return d
        raise NotFoundError(f"run {run_id!r} has no diagnosis {diagnosis_id!r}")

    def get_recommendation(self, run_id: str, rec_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            row = recs_q.get_recommendation(conn, run_id, rec_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} has no recommendation {rec_id!r}")
            return recs_q.rec_to_dict(row)

    def list_events(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            run_row(conn, run_id)
            return recs_q.list_events(conn, run_id)
