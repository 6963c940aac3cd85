"""Queries for the analysis: saved analyzer state, diagnoses, and the replay of a run's tail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, bindparam, func, select, text

from rhythmd.jsonsafe import stored_json
from rhythmd.store.chunks import floats_of, steps_of
from rhythmd.store.schema import analysis_state, branches, chunks, diagnoses, series
from rhythmd.store.statements import Deferred, FastStatement


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One ingested batch as the analyzer sees it again on replay."""

    seq_start: int
    branch: int
    branch_start_step: int | None
    series: dict[str, tuple[np.ndarray, np.ndarray]]


_LOAD_STATE = FastStatement(select(analysis_state.c.analyzed_seq, analysis_state.c.state)
                            .where(analysis_state.c.run_id == bindparam("run_id")))


class SavedState:
    """The run's saved analyzer state, sent for and read when asked (:meth:`get`)."""

    __slots__ = ("_found",)

    def __init__(self, found: Deferred) -> None:
        self._found = found

    def get(self) -> tuple[int, dict[str, Any]] | None:
        """(the sequence number the state covers, the state dict), or None."""
        row = self._found.first()
        if row is None:
            return None
        return int(row["analyzed_seq"]), json.loads(row["state"])


def load_state(conn: Connection, run_id: str) -> SavedState:
    """Send the read of the run's saved analyzer state (see :class:`SavedState`)."""
    return SavedState(_LOAD_STATE.submit(conn, {"run_id": run_id}))


_SAVE_STATE = FastStatement(text(
    "INSERT INTO analysis_state (run_id, analyzed_seq, state, updated_at) "
    "VALUES (:run_id, :analyzed_seq, :state, :updated_at) "
    "ON CONFLICT (run_id) DO UPDATE SET analyzed_seq = excluded.analyzed_seq, "
    "state = excluded.state, updated_at = excluded.updated_at"), deferrable=True)
"""One upsert (the same SQL on SQLite >= 3.24 and PostgreSQL): no row count to wait for; in a
group commit, one ``executemany`` for the group."""


def save_state(conn: Connection, run_id: str, analyzed_seq: int, state: dict[str, Any]) -> None:
    payload = stored_json(state)
    _SAVE_STATE.executemany(conn, [{"run_id": run_id, "analyzed_seq": analyzed_seq,
                                    "state": payload, "updated_at": time.time()}])


REPLAY_TO_END = 2**62
"""``to_seq`` for "every batch stored so far" (under the run's write lock: nothing is added)."""

_REPLAY_CHUNKS = FastStatement(
    select(chunks.c.batch_seq, chunks.c.branch, series.c.name, chunks.c.steps,
           chunks.c["values"], branches.c.start_step)
    .join(series, series.c.series_id == chunks.c.series_id)
    .outerjoin(branches, and_(branches.c.run_id == chunks.c.run_id,
                              branches.c.branch == chunks.c.branch))
    .where(chunks.c.run_id == bindparam("run_id"), chunks.c.seq_start >= bindparam("lo"),
           chunks.c.seq_start < bindparam("hi"))
    .order_by(chunks.c.seq_start))


_REPLAY_AFTER_SAVED = FastStatement(
    _REPLAY_CHUNKS.stmt.where(chunks.c.seq_start >= func.coalesce(
        select(analysis_state.c.analyzed_seq)
        .where(analysis_state.c.run_id == bindparam("run_id")).scalar_subquery(), 0)))


class Replay:
    """The stored batches of a replay query, sent for and decoded when asked
    (:meth:`batches`)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Deferred) -> None:
        self._rows = rows

    def batches(self, to_seq: int = REPLAY_TO_END) -> Iterator[StoredBatch]:
        """The batches in arrival order, stopping at sequence number ``to_seq``."""
        current: StoredBatch | None = None
        for row in self._rows.all():
            batch_seq = int(row["batch_seq"])
            if batch_seq >= to_seq:
                break
            if current is None or current.seq_start != batch_seq:
                if current is not None:
                    yield current
                current = StoredBatch(batch_seq, int(row["branch"]), row["start_step"], {})
            current.series[row["name"]] = (steps_of(row["steps"]), floats_of(row["values"]))
        if current is not None:
            yield current


def replay(conn: Connection, run_id: str, from_seq: int, to_seq: int = REPLAY_TO_END
           ) -> Replay:
    """Send the replay of the batches whose points have sequence numbers in
    [from_seq, to_seq) (one query: chunks, their series names and their branches' start
    steps)."""
    return Replay(_REPLAY_CHUNKS.submit(conn, {"run_id": run_id, "lo": from_seq, "hi": to_seq}))


def replay_after_saved_state(conn: Connection, run_id: str) -> Replay:
    """Send the replay of every batch after the run's saved analyzer state (from the start
    when it has none): sent together with :func:`load_state` by a process that has no analyzer
    of the run yet, both answers arrive in the batch's first round trip."""
    return Replay(_REPLAY_AFTER_SAVED.submit(conn, {"run_id": run_id, "lo": 0,
                                                   "hi": REPLAY_TO_END}))


_UPSERT_DIAGNOSIS = FastStatement(text(
    "INSERT INTO diagnoses (run_id, diagnosis_id, kind, status, detected_at_step, data, "
    "created_at, updated_at) VALUES (:run_id, :diagnosis_id, :kind, :status, "
    ":detected_at_step, :data, :now, :now) "
    "ON CONFLICT (run_id, diagnosis_id) DO UPDATE SET kind = excluded.kind, "
    "status = excluded.status, detected_at_step = excluded.detected_at_step, "
    "data = excluded.data, updated_at = excluded.updated_at"), deferrable=True)
"""Insert or replace one diagnosis by id, keeping its ``created_at`` (one statement, the same
SQL on SQLite >= 3.24 and PostgreSQL: nothing to read first, no row count to wait for; in a
group commit, one ``executemany`` for the group)."""


def upsert_diagnoses(conn: Connection, run_id: str, items: list[dict[str, Any]]) -> None:
    """Insert or replace diagnoses by id (ids are deterministic, so replays are idempotent).
    Nothing is read: what changed is known to the run's analyzer, which saw every batch."""
    now = time.time()
    _UPSERT_DIAGNOSIS.executemany(conn, [
        {"run_id": run_id, "diagnosis_id": d["id"], "kind": d["kind"],
         "status": d.get("status", "open"), "detected_at_step": d.get("detected_at_step"),
         "data": stored_json(d), "now": now} for d in items])


def list_diagnoses(conn: Connection, run_id: str, kind: str | None, status: str | None
                   ) -> list[dict[str, Any]]:
    cond = [diagnoses.c.run_id == run_id]
    if kind is not None:
        cond.append(diagnoses.c.kind == kind)
    if status is not None:
        cond.append(diagnoses.c.status == status)
    rows = conn.execute(select(diagnoses.c.data).where(*cond)
                        .order_by(diagnoses.c.detected_at_step, diagnoses.c.created_at,
                                  diagnoses.c.diagnosis_id)).scalars()
    return [json.loads(r) for r in rows]
