"""Columnar point chunks: writing a batch's series and reading a series back.

One chunk is one (run, metric, batch) row. Reading a step range selects the chunks whose
[min_step, max_step] overlaps it and cuts them with numpy.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, and_, bindparam, case, insert, or_, select, update

from rhythmd.batch import SeriesData
from rhythmd.store.fast import Deferred, FastStatement, unnest_insert, unnest_rows
from rhythmd.store.schema import branches, chunks, series

I8 = np.dtype("<i8")
"""Packed steps: little-endian int64."""
F8 = np.dtype("<f8")
"""Packed values and wall times: little-endian float64 (non-finite kept exactly)."""
_I8, _F8 = I8, F8


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    series_id: int
    name: str
    n_points: int
    n_nonfinite: int
    first_step: int | None
    last_step: int | None


@dataclass(frozen=True, slots=True)
class Points:
    """A series read back: parallel arrays, in step order (lineage views) or arrival order."""

    steps: np.ndarray
    values: np.ndarray
    seqs: np.ndarray
    branches: np.ndarray
    wall_times: np.ndarray | None

    @property
    def size(self) -> int:
        return int(self.steps.size)


def series_infos(conn: Connection, run_id: str) -> list[SeriesInfo]:
    rows = conn.execute(
        select(series).where(series.c.run_id == run_id).order_by(series.c.name)
    ).mappings()
    return [_info(r) for r in rows]


def _info(r: object) -> SeriesInfo:
    return SeriesInfo(r["series_id"], r["name"], r["n_points"], r["n_nonfinite"],  # type: ignore[index]
                      r["first_step"], r["last_step"])  # type: ignore[index]


def series_info(conn: Connection, run_id: str, name: str) -> SeriesInfo | None:
    row = conn.execute(
        select(series).where(series.c.run_id == run_id, series.c.name == name)
    ).mappings().first()
    return _info(row) if row is not None else None


# Hot-path statements are built once and run through ``FastStatement`` (see ``store.fast``).
_SERIES_BY_NAME = FastStatement(select(series.c.series_id).where(
    series.c.run_id == bindparam("run_id"), series.c.name == bindparam("name")))
_INSERT_SERIES = FastStatement(insert(series).returning(series.c.series_id), column_keys=[
    "run_id", "name", "n_points", "n_nonfinite"])
_CHUNK_KEYS = ["series_id", "run_id", "seq_start", "batch_seq", "branch", "n", "min_step",
               "max_step", "n_nonfinite", "vmin", "vmax", "steps", "values", "wall_times"]
_INSERT_CHUNKS = FastStatement(insert(chunks), column_keys=_CHUNK_KEYS,
                               multirow=unnest_insert(chunks, _CHUNK_KEYS))
_COUNTED = unnest_rows(series, ["series_id", "n_points", "n_nonfinite", "first_step",
                                "last_step"], ["sid", "np", "nn", "fs", "ls"])
_ADD_TO_SERIES_STATS = FastStatement(
    update(series).where(series.c.series_id == bindparam("sid")).values(
        n_points=series.c.n_points + bindparam("np"),
        n_nonfinite=series.c.n_nonfinite + bindparam("nn"),
        first_step=case((or_(series.c.first_step.is_(None), series.c.first_step > bindparam("fs")),
                         bindparam("fs")), else_=series.c.first_step),
        last_step=case((or_(series.c.last_step.is_(None), series.c.last_step < bindparam("ls")),
                        bindparam("ls")), else_=series.c.last_step)),
    multirow=FastStatement(update(series).where(series.c.series_id == _COUNTED.c.sid).values(
        n_points=series.c.n_points + _COUNTED.c.np,
        n_nonfinite=series.c.n_nonfinite + _COUNTED.c.nn,
        first_step=case((or_(series.c.first_step.is_(None), series.c.first_step > _COUNTED.c.fs),
                         _COUNTED.c.fs), else_=series.c.first_step),
        last_step=case((or_(series.c.last_step.is_(None), series.c.last_step < _COUNTED.c.ls),
                        _COUNTED.c.ls), else_=series.c.last_step))))
"""Add a chunk's counts to its series; ``multirow``: many series at once (group commit)."""

_SERIES_IDS: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], int]] = (
    weakref.WeakKeyDictionary())
"""Per database: (run_id, name) -> series_id of series committed before. Series rows are never
deleted or renumbered, so an id once seen committed stays valid in every process."""
_SERIES_IDS_MAX = 200_000


_SERIES_OF_RUN = FastStatement(select(series.c.series_id, series.c.name).where(
    series.c.run_id == bindparam("run_id")))


_SERIES_KEYS = ["run_id", "name", "n_points", "n_nonfinite"]
_INSERT_MANY_SERIES = FastStatement(
    insert(series).from_select(_SERIES_KEYS, select(*[
        c for c in unnest_rows(series, _SERIES_KEYS).c]))
    .returning(series.c.series_id, series.c.run_id, series.c.name))


def create_series(conn: Connection, wanted: Sequence[tuple[str, str]]
                  ) -> dict[tuple[str, str], int]:
    """Create the (run_id, name) series ``wanted`` (new ones: the caller holds their runs'
    locks and has read their series); returns their ids. On PostgreSQL one statement for all
    of them: a group of first batches waits for one round trip instead of one per series.
    Not cached: the transaction may still roll back."""
    if not wanted:
        return {}
    if conn.dialect.name != "postgresql" or len(wanted) == 1:
        return {(r, n): _insert_series(conn, r, n) for r, n in wanted}
    rows = _INSERT_MANY_SERIES.all(conn, {
        "run_id": [r for r, _ in wanted], "name": [n for _, n in wanted],
        "n_points": [0] * len(wanted), "n_nonfinite": [0] * len(wanted)})
    return {(row["run_id"], row["name"]): int(row["series_id"]) for row in rows}


def missing_series(conn: Connection, run_id: str, items: Sequence[SeriesData],
                   series_ids: Deferred | None) -> list[str]:
    """The names of ``items`` that the run has no series for yet (``series_ids``: from
    :func:`submit_series_ids`; None when every name was cached)."""
    if series_ids is None:
        return []
    ids = _SERIES_IDS.get(conn.engine) or {}
    known = {r["name"] for r in series_ids.all()}
    return [s.name for s in items if s.name not in known and (run_id, s.name) not in ids]


def _insert_series(conn: Connection, run_id: str, name: str) -> int:
    row = _INSERT_SERIES.first(conn, {"run_id": run_id, "name": name, "n_points": 0,
                                      "n_nonfinite": 0})
    assert row is not None
    return int(row["series_id"])


def submit_series_ids(conn: Connection, run_id: str, items: Sequence[SeriesData]
                      ) -> Deferred | None:
    """When this process has not seen some of the ``items``' series yet: the run's series
    ids, sent now (with the batch's other reads) for :func:`write_series`; else None."""
    ids = _SERIES_IDS.get(conn.engine)
    if ids is not None and all((run_id, s.name) in ids for s in items):
        return None
    return _SERIES_OF_RUN.submit(conn, {"run_id": run_id})


def _series_id(conn: Connection, run_id: str, name: str,
               known: dict[str, int] | None = None) -> int:
    """The series' id, creating the series if new. The caller holds the run's write lock;
    ``known``: the run's series read under it (:func:`submit_series_ids`), if any."""
    ids = _SERIES_IDS.get(conn.engine)
    if ids is None:
        ids = _SERIES_IDS.setdefault(conn.engine, {})
    found = ids.get((run_id, name))
    if found is not None:
        return found
    if known is not None:
        row = {"series_id": known[name]} if name in known else None
    else:
        row = _SERIES_BY_NAME.first(conn, {"run_id": run_id, "name": name})
    if row is not None:
        # Existed before this transaction (the run's lock is held): committed, safe to cache.
        if len(ids) >= _SERIES_IDS_MAX:
            ids.clear()
        ids[(run_id, name)] = int(row["series_id"])
        return int(row["series_id"])
    # Created now: not cached until a later transaction sees it (this one may roll back).
    return _insert_series(conn, run_id, name)


def write_series(
    conn: Connection, run_id: str, items: Sequence[SeriesData], seq_start: int, branch: int,
    series_ids: Deferred | None = None, created: dict[str, int] | None = None,
) -> int:
    """Append ``items`` as chunks numbered from ``seq_start``; returns the next free sequence
    number. The caller holds the run's write lock (``series_ids``: from
    :func:`submit_series_ids` in this transaction; ``created``: {name: id} of the series
    :func:`create_series` made for it in this transaction)."""
    chunk_rows = []
    stat_rows = []
    seq = seq_start
    known = ({r["name"]: int(r["series_id"]) for r in series_ids.all()}
             if series_ids is not None else None)
    for s in items:
        sid = created.get(s.name) if created else None
        if sid is None:
            sid = _series_id(conn, run_id, s.name, known)
        values = s.values
        finite_mask = np.isfinite(values)
        n = int(values.size)
        n_finite = int(np.count_nonzero(finite_mask))
        if n_finite == n:
            vmin, vmax = float(values.min()), float(values.max())
        elif n_finite:
            finite = values[finite_mask]
            vmin, vmax = float(finite.min()), float(finite.max())
        else:
            vmin = vmax = None
        lo, hi = int(s.steps.min()), int(s.steps.max())
        chunk_rows.append({
            "series_id": sid,
            "run_id": run_id,
            "seq_start": seq,
            "batch_seq": seq_start,
            "branch": branch,
            "n": n,
            "min_step": lo,
            "max_step": hi,
            "n_nonfinite": n - n_finite,
            "vmin": vmin,
            "vmax": vmax,
            "steps": s.steps.astype(_I8, copy=False).tobytes(),
            "values": values.astype(_F8, copy=False).tobytes(),
            "wall_times": (s.wall_times.astype(_F8, copy=False).tobytes()
                           if s.wall_times is not None else None),
        })
        stat_rows.append({"sid": sid, "np": n, "nn": n - n_finite, "fs": lo, "ls": hi})
        seq += n
    _INSERT_CHUNKS.executemany(conn, chunk_rows)
    _ADD_TO_SERIES_STATS.executemany(conn, stat_rows)
    return seq


def abandoned_until(conn: Connection, run_id: str, parent: int, before_seq: int) -> int | None:
    """The highest step branch ``parent`` had reached before sequence number ``before_seq``."""
    from sqlalchemy import func

    return conn.execute(select(func.max(chunks.c.max_step)).where(
        chunks.c.run_id == run_id, chunks.c.branch == parent,
        chunks.c.seq_start < before_seq)).scalar()


def lineage(conn: Connection, run_id: str, branch: int) -> list[tuple[int, int | None, int | None]]:
    """The (branch, lo, hi) step windows that make up the view of ``branch``.

    A branch shows its own points from its start step on, and its ancestors' points below the
    start of the child that replaced them: after a rollback to step 400 on branch 1, the view of
    branch 1 is branch 0's steps < 400 followed by branch 1's steps >= 400.
    """
    rows = {r.branch: r for r in conn.execute(select(branches).where(branches.c.run_id == run_id))}
    out: list[tuple[int, int | None, int | None]] = []
    hi: int | None = None
    current: int | None = branch
    visited: set[int] = set()
    while current is not None and current not in visited:
        visited.add(current)
        row = rows.get(current)
        lo = row.start_step if row is not None and current != 0 else None
        out.append((current, lo, hi))
        if row is None:
            break
        if lo is not None:
            hi = lo if hi is None else min(hi, lo)
        current = row.parent_branch
    return out


def read_points(
    conn: Connection,
    series_id: int,
    windows: Iterable[tuple[int | None, int | None, int | None]] | None,
    start_step: int | None,
    end_step: int | None,
    *,
    with_wall_times: bool = False,
) -> Points:
    """Read a series. ``windows`` is a lineage (branch, lo, hi) list, or None for every point of
    every branch in arrival order. ``start_step``/``end_step`` are inclusive bounds."""
    cond = [chunks.c.series_id == series_id]
    if start_step is not None:
        cond.append(chunks.c.max_step >= start_step)
    if end_step is not None:
        cond.append(chunks.c.min_step <= end_step)
    window_list = list(windows) if windows is not None else None
    if window_list is not None:
        cond.append(or_(*[
            and_(chunks.c.branch == b,
                 *([chunks.c.max_step >= lo] if lo is not None else []),
                 *([chunks.c.min_step < hi] if hi is not None else []))
            for b, lo, hi in window_list
        ]))
    cols = [chunks.c.seq_start, chunks.c.branch, chunks.c.n, chunks.c.steps, chunks.c["values"]]
    if with_wall_times:
        cols.append(chunks.c.wall_times)
    rows = conn.execute(select(*cols).where(*cond).order_by(chunks.c.seq_start)).all()
    bounds = {b: (lo, hi) for b, lo, hi in window_list} if window_list is not None else None
    st_parts, va_parts, sq_parts, br_parts, wt_parts = [], [], [], [], []
    for row in rows:
        steps = np.frombuffer(row.steps, dtype=_I8)
        values = np.frombuffer(row[4], dtype=_F8)
        keep = np.ones(steps.size, dtype=bool)
        if start_step is not None:
            keep &= steps >= start_step
        if end_step is not None:
            keep &= steps <= end_step
        if bounds is not None:
            lo, hi = bounds[row.branch]
            if lo is not None:
                keep &= steps >= lo
            if hi is not None:
                keep &= steps < hi
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            continue
        st_parts.append(steps[idx])
        va_parts.append(values[idx])
        sq_parts.append(row.seq_start + idx)
        br_parts.append(np.full(idx.size, row.branch, dtype=np.int64))
        if with_wall_times:
            wt_parts.append(np.frombuffer(row.wall_times, dtype=_F8)[idx]
                            if row.wall_times is not None else np.full(idx.size, np.nan))
    if not st_parts:
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return Points(empty_i, empty_f, empty_i, empty_i, empty_f if with_wall_times else None)
    steps = np.concatenate(st_parts)
    values = np.concatenate(va_parts)
    seqs = np.concatenate(sq_parts)
    brs = np.concatenate(br_parts)
    walls = np.concatenate(wt_parts) if with_wall_times else None
    if window_list is not None:
        # A lineage view is in step order; ties keep arrival order (stable sort).
        order = np.argsort(steps, kind="stable")
        steps, values, seqs, brs = steps[order], values[order], seqs[order], brs[order]
        walls = walls[order] if walls is not None else None
    return Points(steps, values, seqs, brs, walls)
