"""Queries for the analysis: saved analyzer state, diagnoses, and the replay of a run's tail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, insert, select, update

from rhythmd.store.points import F8 as _F8
from rhythmd.store.points import I8 as _I8
from rhythmd.store.schema import analysis_state, branches, chunks, diagnoses, series


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One ingested batch as the analyzer sees it again on replay."""

    seq_start: int
    branch: int
    branch_start_step: int | None
    series: dict[str, tuple[np.ndarray, np.ndarray]]


def load_state(conn: Connection, run_id: str) -> tuple[int, dict[str, Any]] | None:
    row = conn.execute(select(analysis_state.c.analyzed_seq, analysis_state.c.state)
                       .where(analysis_state.c.run_id == run_id)).first()
    if row is None:
        return None
    return int(row.analyzed_seq), json.loads(row.state)


def save_state(conn: Connection, run_id: str, analyzed_seq: int, state: dict[str, Any]) -> None:
    text = json.dumps(state)  # NaN/Infinity literals round-trip through Python's json
    now = time.time()
    done = conn.execute(update(analysis_state).where(analysis_state.c.run_id == run_id)
                        .values(analyzed_seq=analyzed_seq, state=text, updated_at=now))
    if done.rowcount == 0:
        conn.execute(insert(analysis_state).values(run_id=run_id, analyzed_seq=analyzed_seq,
                                                   state=text, updated_at=now))


def replay_batches(conn: Connection, run_id: str, from_seq: int, to_seq: int
                   ) -> Iterator[StoredBatch]:
    """The batches whose points have sequence numbers in [from_seq, to_seq), in arrival order."""
    starts = {r.branch: r.start_step for r in conn.execute(
        select(branches.c.branch, branches.c.start_step).where(branches.c.run_id == run_id))}
    rows = conn.execute(
        select(chunks.c.batch_seq, chunks.c.branch, series.c.name, chunks.c.steps,
               chunks.c["values"])
        .join(series, series.c.series_id == chunks.c.series_id)
        .where(chunks.c.run_id == run_id, chunks.c.seq_start >= from_seq,
               chunks.c.seq_start < to_seq)
        .order_by(chunks.c.seq_start))
    current: StoredBatch | None = None
    for r in rows:
        if current is None or current.seq_start != r.batch_seq:
            if current is not None:
                yield current
            current = StoredBatch(int(r.batch_seq), int(r.branch), starts.get(r.branch), {})
        current.series[r.name] = (np.frombuffer(r.steps, dtype=_I8),
                                  np.frombuffer(r[4], dtype=_F8))
    if current is not None:
        yield current


def upsert_diagnoses(conn: Connection, run_id: str, items: list[dict[str, Any]]
                     ) -> dict[str, str | None]:
    """Insert or replace diagnoses by id (ids are deterministic, so replays are idempotent).

    Returns ``{id: previous severity}`` for the stored ones whose severity or status changed
    (new ids excluded).
    """
    if not items:
        return {}
    now = time.time()
    ids = [d["id"] for d in items]
    stored = {r.diagnosis_id: json.loads(r.data) for r in conn.execute(
        select(diagnoses.c.diagnosis_id, diagnoses.c.data).where(
            diagnoses.c.run_id == run_id, diagnoses.c.diagnosis_id.in_(ids)))}
    known = set(stored)
    changed = {i: old.get("severity") for i, old in stored.items()
               for d in items if d["id"] == i
               and (old.get("severity"), old.get("status")) != (d.get("severity"), d.get("status"))}
    for d in items:
        values = {"kind": d["kind"], "status": d.get("status", "open"),
                  "detected_at_step": d.get("detected_at_step"), "data": json.dumps(d),
                  "updated_at": now}
        if d["id"] in known:
            conn.execute(update(diagnoses).where(diagnoses.c.run_id == run_id,
                                                 diagnoses.c.diagnosis_id == d["id"])
                         .values(**values))
        else:
            conn.execute(insert(diagnoses).values(run_id=run_id, diagnosis_id=d["id"],
                                                  created_at=now, **values))
            known.add(d["id"])
    return changed


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
