"""Columnar points: writing a batch's series as chunks and reading a series back.

Reading a step range selects the chunks whose [min_step, max_step] overlaps it and cuts them
with numpy (the codec: ``rhythmd.store.chunks``; series ids: ``rhythmd.store.series``; branch
lineage: ``rhythmd.store.branches``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, and_, bindparam, case, insert, or_, select, update

from rhythmd.batch import SeriesData
from rhythmd.store.chunks import F8, I8, encode, floats_of, steps_of
from rhythmd.store.schema import chunks, series
from rhythmd.store.series import series_id
from rhythmd.store.statements import Deferred, FastStatement, unnest_insert, unnest_rows

__all__ = ["F8", "I8", "Points", "read_points", "write_series"]


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


def write_series(
    conn: Connection, run_id: str, items: Sequence[SeriesData], seq_start: int, branch: int,
    series_ids: Deferred | None = None, created: dict[str, int] | None = None,
) -> int:
    """Append ``items`` as chunks numbered from ``seq_start``; returns the next free sequence
    number. The caller holds the run's write lock (``series_ids``: from
    :func:`~rhythmd.store.series.submit_series_ids` in this transaction; ``created``:
    {name: id} of the series :func:`~rhythmd.store.series.create_series` made for it in this
    transaction)."""
    chunk_rows = []
    stat_rows = []
    seq = seq_start
    known = ({r["name"]: int(r["series_id"]) for r in series_ids.all()}
             if series_ids is not None else None)
    for s in items:
        sid = created.get(s.name) if created else None
        if sid is None:
            sid = series_id(conn, run_id, s.name, known)
        row = encode(s, series_id=sid, run_id=run_id, seq_start=seq, batch_seq=seq_start,
                     branch=branch)
        chunk_rows.append(row)
        n = row["n"]
        stat_rows.append({"sid": sid, "np": n, "nn": row["n_nonfinite"],
                          "fs": row["min_step"], "ls": row["max_step"]})
        seq += n
    _INSERT_CHUNKS.executemany(conn, chunk_rows)
    _ADD_TO_SERIES_STATS.executemany(conn, stat_rows)
    return seq


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
        steps = steps_of(row.steps)
        values = floats_of(row[4])
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
            wt_parts.append(floats_of(row.wall_times)[idx]
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
