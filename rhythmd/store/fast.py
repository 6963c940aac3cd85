"""Hot-path statements: Core statements compiled once per dialect, run on the DBAPI cursor.

The ingest transaction runs a handful of small statements per batch. Through
``Connection.execute`` each costs 25-35 µs of SQLAlchemy bookkeeping (execution context,
result proxy, event dispatch) around a 3-10 µs statement; at hundreds of batches per second that
bookkeeping is most of the daemon's CPU. A :class:`FastStatement` keeps the statement defined
in SQLAlchemy Core (same tables, same dialect-specific SQL, casts included), compiles it once per
dialect, and executes the compiled text on the cursor of the connection's own DBAPI
connection, so it takes part in the surrounding transaction exactly like ``conn.execute``.

DBAPI errors are raised as ``Connection.execute`` raises them (``sqlalchemy.exc.DBAPIError``
subclasses; a lost connection is invalidated), so ``store.translate_db_errors`` sees no
difference.

Only statements whose parameters and results need no type processing belong here: integers,
floats, text and bytes (``LargeBinary``), which both drivers (sqlite3, psycopg) adapt natively.
Everything else goes through ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


class _Compiled:
    __slots__ = ("fixed", "keys", "sql")

    def __init__(self, sql: str, keys: tuple[str, ...] | None, fixed: dict[str, Any]) -> None:
        self.sql = sql
        self.keys = keys  # positional parameter order; None for named (pyformat) drivers
        self.fixed = fixed  # values bound in the statement itself (``n + 1``)

    def args(self, params: Mapping[str, Any]) -> Any:
        if self.fixed:
            params = {**self.fixed, **params}
        if self.keys is None:
            return params
        return tuple([params[k] for k in self.keys])


def _wrapped(conn: Connection, dbapi_conn: Any, exc: Exception, sql: str, args: Any
             ) -> DBAPIError:
    """A DBAPI error as ``Connection.execute`` would raise it: wrapped in SQLAlchemy's
    exception classes, and with the connection invalidated when the database is gone (so the
    pool reconnects instead of handing the dead connection out again)."""
    dialect = conn.dialect
    disconnect = bool(dialect.is_disconnect(exc, dbapi_conn, None))
    if disconnect and not conn.invalidated:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                               connection_invalidated=disconnect, dialect=dialect)


class FastStatement:
    """A Core statement for the hot path.

    ``column_keys``: for an ``insert``/``update`` without explicit values, the columns the
    parameter dicts carry (as in ``Connection.execute(insert(t), [rows])``).
    """

    __slots__ = ("_by_dialect", "column_keys", "stmt")

    def __init__(self, stmt: ClauseElement, column_keys: Sequence[str] | None = None) -> None:
        self.stmt = stmt
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        key = f"{dialect.name}+{dialect.driver}"
        found = self._by_dialect.get(key)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect, column_keys=self.column_keys)
            if compiled.literal_execute_params or compiled.post_compile_params:
                raise ValueError("FastStatement cannot run statements with expanding or "
                                 "post-compile parameters")
            keys = tuple(compiled.positiontup) if compiled.positional else None  # type: ignore[arg-type]
            fixed = {name: bind.value for name, bind in compiled.binds.items()
                     if not bind.required and bind.callable is None}
            found = self._by_dialect[key] = _Compiled(compiled.string, keys, fixed)
        return found

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run once; returns the DBAPI cursor (``rowcount``, ``fetchone``, ``description``)."""
        compiled = self._compiled(conn)
        dbapi_conn = conn.connection.dbapi_connection
        args = compiled.args(params)
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute(compiled.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, dbapi_conn, exc, compiled.sql, args) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = self._compiled(conn)
        dbapi_conn = conn.connection.dbapi_connection
        args = [compiled.args(r) for r in rows]
        try:
            cursor = dbapi_conn.cursor()
            if len(args) == 1:
                cursor.execute(compiled.sql, args[0])
            else:
                cursor.executemany(compiled.sql, args)
            cursor.close()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, dbapi_conn, exc, compiled.sql, args) from exc

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row as a dict keyed by column name, or None."""
        cursor = self.execute(conn, params)
        row = cursor.fetchone()
        names = [d[0] for d in cursor.description]
        cursor.close()
        return dict(zip(names, row, strict=True)) if row is not None else None

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row, as dicts keyed by column name."""
        cursor = self.execute(conn, params)
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description]
        cursor.close()
        return [dict(zip(names, r, strict=True)) for r in rows]
