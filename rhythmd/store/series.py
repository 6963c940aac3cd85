"""Series: their ids (with a per-database cache of committed ones), creation and counts."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, insert, select

from rhythmd.batch import SeriesData
from rhythmd.store.schema import series
from rhythmd.store.statements import Deferred, FastStatement, unnest_rows


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    series_id: int
    name: str
    n_points: int
    n_nonfinite: int
    first_step: int | None
    last_step: int | None


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


_SERIES_BY_NAME = FastStatement(select(series.c.series_id).where(
    series.c.run_id == bindparam("run_id"), series.c.name == bindparam("name")))
_INSERT_SERIES = FastStatement(insert(series).returning(series.c.series_id), column_keys=[
    "run_id", "name", "n_points", "n_nonfinite"])
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


def series_id(conn: Connection, run_id: str, name: str,
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


