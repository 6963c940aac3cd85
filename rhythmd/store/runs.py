"""Queries on runs, their batches and branches."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    update,
)

from rhythmd.run_status import LIFECYCLE, LOST
from rhythmd.store.schema import batches, branches, runs
from rhythmd.store.statements import (
    Deferred,
    FastStatement,
    KeyedRows,
    ReadByIds,
    json_param,
    json_rows,
    unnest_insert,
    unnest_rows,
)


def _loads(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


def run_to_dict(row: Any) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "name": row["name"],
        "project": row["project"],
        "config": _loads(row["config"]),
        "tags": _loads(row["tags"]),
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_step": row["last_step"],
        "n_points": row["n_points"],
        "n_batches": row["n_batches"],
        "branch": row["max_branch"],
        "health": row["health"],
    }


@dataclass(frozen=True, slots=True)
class LostRule:
    """A running run is ``lost`` when silent for ``multiple`` times its usual interval between
    batches, and at least ``min_seconds``."""

    multiple: float = 20.0
    min_seconds: float = 60.0

    def threshold(self, interval_s: float | None) -> float:
        return max(self.min_seconds, self.multiple * (interval_s or 0.0))

    def is_lost(self, row: Any, now: float) -> bool:
        return (row["status"] == "running" and row["n_batches"] > 0
                and now - row["updated_at"] > self.threshold(row["interval_s"]))


def display_status(row: Any, rule: LostRule, now: float) -> str:
    """The one status a person wants: lifecycle first, then lost, then health."""
    if row["status"] in ("finished", "failed"):
        return "finished"
    if row["status"] == "stopped":
        return "stopped"
    if rule.is_lost(row, now):
        return LOST
    return str(row["health"])


def insert_run(
    conn: Connection, run_id: str, name: str, project: str | None,
    config: dict[str, Any] | None, tags: dict[str, Any] | None,
) -> None:
    now = time.time()
    conn.execute(insert(runs).values(
        run_id=run_id, name=name, project=project,
        config=json.dumps(config) if config is not None else None,
        tags=json.dumps(tags) if tags is not None else None,
        status="running", created_at=now, updated_at=now, last_step=None,
        next_seq=0, n_points=0, n_batches=0, max_branch=0, health="healthy", interval_s=None,
    ))
    conn.execute(insert(branches).values(run_id=run_id, branch=0, start_step=None,
                                         parent_branch=None, created_seq=0, created_at=now))


_GET_RUN = FastStatement(select(runs).where(runs.c.run_id == bindparam("run_id")))
_FIND_BATCH = FastStatement(select(batches).where(batches.c.run_id == bindparam("run_id"),
                                                  batches.c.batch_id == bindparam("batch_id")))
_BATCH_KEYS = ["run_id", "batch_id", "seq_start", "n_points", "branch", "received_at"]
_INSERT_BATCH = FastStatement(insert(batches), column_keys=_BATCH_KEYS,
                              multirow=unnest_insert(batches, _BATCH_KEYS))
_ADVANCED = unnest_rows(
    runs, ["run_id", "next_seq", "n_points", "updated_at", "max_branch", "last_step", "status",
           "interval_s", "health"],
    ["rid", "next_seq", "add_points", "now", "max_branch", "last_step_", "status_",
     "interval_s_", "health_"])
_ADVANCE_RUN = FastStatement(
    update(runs).where(runs.c.run_id == bindparam("rid")).values(
        next_seq=bindparam("next_seq"), n_points=runs.c.n_points + bindparam("add_points"),
        n_batches=runs.c.n_batches + 1, updated_at=bindparam("now"),
        max_branch=bindparam("max_branch"), last_step=bindparam("last_step_"),
        status=bindparam("status_"), interval_s=bindparam("interval_s_"),
        health=bindparam("health_")),
    multirow=FastStatement(update(runs).where(runs.c.run_id == _ADVANCED.c.rid).values(
        next_seq=_ADVANCED.c.next_seq, n_points=runs.c.n_points + _ADVANCED.c.add_points,
        n_batches=runs.c.n_batches + 1, updated_at=_ADVANCED.c.now,
        max_branch=_ADVANCED.c.max_branch, last_step=_ADVANCED.c.last_step_,
        status=_ADVANCED.c.status_, interval_s=_ADVANCED.c.interval_s_,
        health=_ADVANCED.c.health_)))
"""One batch's update of its run row; ``multirow``: many runs' at once (group commit)."""


def get_run(conn: Connection, run_id: str) -> Deferred:
    """The run's row (``.first()``: a dict, or None)."""
    return _GET_RUN.submit(conn, {"run_id": run_id})


_GET_RUNS = ReadByIds(select(runs), runs.c.run_id)


def get_runs(conn: Connection, run_ids: Sequence[str]) -> dict[str, Deferred]:
    """:func:`get_run` of several runs (a group commit's) in one read."""
    if len(run_ids) < 2:
        return {r: get_run(conn, r) for r in run_ids}
    return _GET_RUNS.submit(conn, run_ids)


def _status_condition(status: str, rule: LostRule, now: float) -> Any:
    silent = runs.c.updated_at < now - case(
        (runs.c.interval_s * rule.multiple > rule.min_seconds, runs.c.interval_s * rule.multiple),
        else_=rule.min_seconds)
    lost = and_(runs.c.status == "running", runs.c.n_batches > 0, silent)
    if status == LOST:
        return lost
    if status in LIFECYCLE:
        return runs.c.status == status
    # A health verdict applies to live runs only.
    return and_(runs.c.status == "running", runs.c.health == status,
                or_(runs.c.n_batches == 0, ~silent))


def list_runs(
    conn: Connection, project: str | None, status: str | None, limit: int, offset: int,
    rule: LostRule | None = None,
) -> tuple[list[Any], int]:
    cond = []
    if project is not None:
        cond.append(runs.c.project == project)
    if status is not None:
        cond.append(_status_condition(status, rule or LostRule(), time.time()))
    total = conn.execute(select(func.count()).select_from(runs).where(*cond)).scalar_one()
    rows = conn.execute(
        select(runs).where(*cond)
        .order_by(runs.c.created_at.desc(), runs.c.run_id)
        .limit(limit).offset(offset)
    ).mappings().all()
    return list(rows), int(total)


def find_batch(conn: Connection, run_id: str, batch_id: str) -> Deferred:
    """The stored batch's row (``.first()``: a dict, or None when the run has no such
    batch)."""
    return _FIND_BATCH.submit(conn, {"run_id": run_id, "batch_id": batch_id})


_WANTED = unnest_rows(batches, ["run_id", "batch_id"], ["rid", "bid"])
_FOUND = (select(batches).where(batches.c.run_id == _WANTED.c.rid,
                                batches.c.batch_id == _WANTED.c.bid)
          .offset(0).lateral("found"))
_FIND_BATCHES = FastStatement(select(_FOUND).select_from(_WANTED.join(_FOUND, true())))
"""One primary-key lookup per wanted batch: the ``OFFSET 0`` keeps the planner from turning
the lateral subquery into a join, which it may plan as a hash join over a sequential scan of
every batch (the table grows fast, so its statistics often say it is small)."""


_FIND_BATCHES_SQLITE = FastStatement(select(batches).where(
    tuple_(batches.c.run_id, batches.c.batch_id).in_(json_rows("wanted", "$[0]", "$[1]"))))


def find_batches(conn: Connection, wanted: Sequence[tuple[str, str]]) -> dict[str, Deferred]:
    """:func:`find_batch` of several (run_id, batch_id), one per run, in one read; keyed by
    run id."""
    if len(wanted) < 2:
        return {r: find_batch(conn, r, b) for r, b in wanted}
    if conn.dialect.name == "postgresql":
        read = _FIND_BATCHES.submit(conn, {"rid": [r for r, _ in wanted],
                                           "bid": [b for _, b in wanted]})
    else:
        read = _FIND_BATCHES_SQLITE.submit(conn, {"wanted": json_param(wanted)})
    found = KeyedRows(read, "run_id")
    return {r: found.of(r) for r, _ in wanted}


def record_batch(
    conn: Connection, run_id: str, batch_id: str, seq_start: int, n_points: int, branch: int
) -> None:
    _INSERT_BATCH.executemany(conn, [{
        "run_id": run_id, "batch_id": batch_id, "seq_start": seq_start, "n_points": n_points,
        "branch": branch, "received_at": time.time()}])


def ensure_branch(
    conn: Connection, run_id: str, branch: int, start_step: int | None, seq: int
) -> bool:
    """Declare ``branch`` if new (its parent is the highest branch below it). True if created."""
    known = {r.branch for r in conn.execute(
        select(branches.c.branch).where(branches.c.run_id == run_id))}
    if branch in known:
        return False
    parents = [b for b in known if b < branch]
    conn.execute(insert(branches).values(
        run_id=run_id, branch=branch, start_step=start_step,
        parent_branch=max(parents) if parents else None, created_seq=seq,
        created_at=time.time(),
    ))
    return True


def list_branches(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(branches).where(branches.c.run_id == run_id).order_by(branches.c.branch)
    ).mappings()
    return [{"branch": r["branch"], "start_step": r["start_step"],
             "parent_branch": r["parent_branch"], "created_at": r["created_at"],
             "created_seq": r["created_seq"]} for r in rows]


def advance_run(
    conn: Connection, run: Any, *, next_seq: int, add_points: int, last_step: int | None,
    max_branch: int, status: str | None = None, interval_s: float | None = None,
    health: str | None = None,
) -> None:
    """Record a stored batch on its run row (``run``: the row read under the write lock; a
    None argument keeps that column's value)."""
    _ADVANCE_RUN.executemany(conn, [{
        "rid": run["run_id"], "next_seq": next_seq, "add_points": add_points,
        "now": time.time(), "max_branch": max_branch,
        "last_step_": last_step if last_step is not None else run["last_step"],
        "status_": status if status is not None else run["status"],
        "interval_s_": interval_s if interval_s is not None else run["interval_s"],
        "health_": health if health is not None else run["health"],
    }])


def set_status(conn: Connection, run_id: str, status: str, last_step: int | None) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": time.time()}
    if last_step is not None:
        values["last_step"] = last_step
    conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))
