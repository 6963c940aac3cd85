"""Queries on recommendations and the run's event log."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from rhythmd.jsonsafe import stored_json
from rhythmd.store.schema import events, recommendations
from rhythmd.store.statements import Deferred, FastStatement, ReadByIds


def rec_to_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["rec_id"],
        "run_id": row["run_id"],
        "action": row["action"],
        "params": json.loads(row["params"]),
        "reason": row["reason"],
        "diagnosis_id": row["diagnosis_id"],
        "author": row["author"],
        "issued_at_step": row["issued_at_step"],
        "expires_at_step": row["expires_at_step"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "applied_step": row["applied_step"],
        "lr_before": json.loads(row["lr_before"]) if row["lr_before"] is not None else None,
        "lr_after": json.loads(row["lr_after"]) if row["lr_after"] is not None else None,
        "note": row["note"],
    }


_INSERT_RECOMMENDATION = FastStatement(insert(recommendations), column_keys=[
    "rec_id", "run_id", "action", "params", "reason", "diagnosis_id", "author",
    "issued_at_step", "expires_at_step", "status", "created_at", "updated_at"])


def insert_recommendation(conn: Connection, rec: dict[str, Any]) -> dict[str, Any]:
    """Store a new pending recommendation; returns its row, as a read would return it."""
    now = time.time()
    row = {
        "rec_id": rec["id"], "run_id": rec["run_id"], "action": rec["action"],
        "params": json.dumps(rec["params"]), "reason": rec["reason"],
        "diagnosis_id": rec.get("diagnosis_id"), "author": rec["author"],
        "issued_at_step": rec.get("issued_at_step"),
        "expires_at_step": rec.get("expires_at_step"), "status": "pending",
        "created_at": now, "updated_at": now}
    _INSERT_RECOMMENDATION.executemany(conn, [row])
    return {**row, "applied_step": None, "lr_before": None, "lr_after": None, "note": None}


def get_recommendation(conn: Connection, run_id: str, rec_id: str) -> Any | None:
    return conn.execute(select(recommendations).where(
        recommendations.c.run_id == run_id, recommendations.c.rec_id == rec_id)).mappings().first()


_ORDER = (recommendations.c.created_at, recommendations.c.rec_id)
_BY_RUN = FastStatement(select(recommendations).where(
    recommendations.c.run_id == bindparam("run_id")).order_by(*_ORDER))
_BY_RUN_STATUS = FastStatement(select(recommendations).where(
    recommendations.c.run_id == bindparam("run_id"),
    recommendations.c.status == bindparam("status")).order_by(*_ORDER))


def list_recommendations(conn: Connection, run_id: str, status: str | None) -> Deferred:
    """The run's recommendations (``.all()``), oldest first; only those in ``status`` unless
    it is None."""
    if status is None:
        return _BY_RUN.submit(conn, {"run_id": run_id})
    return _BY_RUN_STATUS.submit(conn, {"run_id": run_id, "status": status})


_BY_RUNS = ReadByIds(select(recommendations), recommendations.c.run_id,
                     order_by=(recommendations.c.run_id, *_ORDER))


def list_recommendations_of_runs(conn: Connection, run_ids: Sequence[str]
                                 ) -> dict[str, Deferred] | None:
    """Every recommendation of each run (as :func:`list_recommendations` with no status), in
    one read (a group commit's runs); None for a single run."""
    if len(run_ids) < 2:
        return None
    return _BY_RUNS.submit(conn, run_ids)


def expire_stale(conn: Connection, pending: list[Any], step: int | None
                 ) -> tuple[list[Any], list[str]]:
    """Mark the ``pending`` rows whose ``expires_at_step`` < ``step`` as expired; returns
    (the rows still pending, the expired ids)."""
    stale = [r["rec_id"] for r in pending if step is not None
             and r["expires_at_step"] is not None and r["expires_at_step"] < step]
    if stale:
        _expire(conn, stale, None)
        pending = [r for r in pending if r["rec_id"] not in stale]
    return pending, stale


def cancel_pending(conn: Connection, run_id: str, rec_ids: list[str], note: str) -> None:
    """Expire pending recommendations that a newer one supersedes."""
    _expire(conn, rec_ids, note)


_EXPIRE = FastStatement(update(recommendations).where(
    recommendations.c.rec_id == bindparam("rec_id_"), recommendations.c.status == "pending",
).values(status="expired", note=func.coalesce(bindparam("note_"), recommendations.c.note),
         updated_at=bindparam("now")))


def _expire(conn: Connection, rec_ids: list[str], note: str | None) -> None:
    """Pending -> expired (``note``: why, or None to keep the note), one statement per id
    with nothing to wait for (no sync inside a pipelined transaction)."""
    now = time.time()
    _EXPIRE.executemany(conn, [{"rec_id_": r, "note_": note, "now": now} for r in rec_ids])


def resolve_recommendation(
    conn: Connection, rec_id: str, status: str, step: int | None,
    lr_before: list[float] | None, lr_after: list[float] | None, note: str | None,
) -> None:
    conn.execute(update(recommendations).where(recommendations.c.rec_id == rec_id).values(
        status=status, applied_step=step, updated_at=time.time(),
        lr_before=json.dumps(lr_before) if lr_before is not None else None,
        lr_after=json.dumps(lr_after) if lr_after is not None else None,
        note=note,
    ))


_INSERT_EVENT = FastStatement(insert(events), column_keys=[
    "run_id", "kind", "step", "wall_time", "ref_id", "payload", "processed"])


def add_event(
    conn: Connection, run_id: str, kind: str, step: int | None, payload: dict[str, Any],
    ref_id: str | None = None,
) -> None:
    _INSERT_EVENT.executemany(conn, [{
        "run_id": run_id, "kind": kind, "step": step, "wall_time": time.time(), "ref_id": ref_id,
        "payload": stored_json(payload), "processed": False}])


def list_events(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(events).where(events.c.run_id == run_id).order_by(events.c.event_id)
    ).mappings()
    return [{"event_id": r["event_id"], "kind": r["kind"], "step": r["step"],
             "wall_time": r["wall_time"], "ref_id": r["ref_id"],
             "payload": json.loads(r["payload"])} for r in rows]
