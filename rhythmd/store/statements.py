"""The statements driver: Core statements compiled once per dialect, run on the DBAPI cursor.

The ingest transaction runs a handful of small statements per batch. Through
``Connection.execute`` each pays SQLAlchemy's bookkeeping (execution context, result proxy,
event dispatch), which costs several times the statement itself; at hundreds of batches per
second that bookkeeping is most of the daemon's CPU. A :class:`FastStatement` keeps the
statement defined in SQLAlchemy Core (same tables, same dialect-specific SQL, casts included),
compiles it once per dialect, and executes the compiled text on the cursor of the
connection's own DBAPI connection, so it takes part in the surrounding transaction exactly
like ``conn.execute``.

It relies on SQLAlchemy internals (the compiler's ``positiontup`` and ``binds``, the
connection's ``dispatch``, ``DBAPIError.instance``) as they are in the SQLAlchemy minor version
the project is tested with; the constraints file pins that version.

DBAPI errors are raised as ``Connection.execute`` raises them (``sqlalchemy.exc.DBAPIError``
subclasses; a lost connection is invalidated), so ``store.translate_db_errors`` sees no
difference. Every statement is announced to the engine's ``before_cursor_execute`` listeners
(with ``context`` None), so a listener sees these statements as it sees the others (tests
count statements that way).

Only statements whose parameters and results need no type processing belong here: integers,
floats, text and bytes (``LargeBinary``), which both drivers (sqlite3, psycopg) adapt natively.
Everything else goes through ``Connection.execute``.

:meth:`FastStatement.submit` sends a read whose rows are taken later: inside a PostgreSQL
pipeline (``rhythmd.store.pipeline``) the reads a transaction needs share one round trip; on
SQLite it reads at once. :func:`deferred_writes` collects a block's writes and sends them
together at its end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Select, Table, any_, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias


class _Compiled:
    __slots__ = ("bind_names", "fixed", "keys", "names", "sql")

    def __init__(self, sql: str, keys: tuple[str, ...] | None, fixed: dict[str, Any],
                 bind_names: tuple[str, ...] = ()) -> None:
        self.sql = sql
        self.bind_names = bind_names  # the parameters a caller supplies
        self.keys = keys  # positional parameter order; None for named (pyformat) drivers
        self.fixed = fixed  # values bound in the statement itself (``n + 1``)
        self.names: list[str] | None = None  # result column names, from the first result

    def args(self, params: Mapping[str, Any]) -> Any:
        if self.fixed:
            params = {**self.fixed, **params}
        if self.keys is None:
            return params
        return tuple([params[k] for k in self.keys])


def wrap_dbapi_error(conn: Connection, dbapi_conn: Any, exc: Exception, sql: str, args: Any
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


PIPELINE_KEY = "rhythmd.pipeline"
"""Where ``rhythmd.store.pipeline`` keeps a connection's open psycopg pipeline."""


def pipeline_of(conn: Connection) -> Any:
    """The psycopg pipeline the connection is in, or None."""
    return conn.connection.info.get(PIPELINE_KEY)


def _announce(conn: Connection, cursor: Any, sql: str, args: Any, many: bool) -> tuple[str, Any]:
    """Run the engine's ``before_cursor_execute`` listeners, as ``Connection.execute`` does."""
    if conn._has_events or conn.engine._has_events:
        for fn in conn.dispatch.before_cursor_execute:
            sql, args = fn(conn, cursor, sql, args, None, many)
    return sql, args


class Deferred:
    """The rows of a :meth:`FastStatement.submit`: read from the server when first asked for."""

    __slots__ = ("_compiled", "_conn", "_cursor", "_rows")

    def __init__(self, conn: Connection, cursor: Any, compiled: _Compiled) -> None:
        self._conn, self._cursor, self._compiled = conn, cursor, compiled
        self._rows: list[dict[str, Any]] | None = None
        if pipeline_of(conn) is None:
            self.all()  # no pipeline (SQLite): read now, the cursor is free again

    def all(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = _fetch_dicts(self._conn, self._cursor, self._compiled, None)
        return self._rows

    def first(self) -> dict[str, Any] | None:
        rows = self.all()
        return rows[0] if rows else None


class KeyedRows:
    """The rows of one read for many keys (a group commit's runs: one statement instead of
    one per run), split by ``key`` (a column) when first asked for; :meth:`of` is the
    :class:`Deferred` of one key's rows, in the read's order."""

    __slots__ = ("_by_key", "_key", "_source")

    def __init__(self, source: Deferred, key: str) -> None:
        self._source, self._key = source, key
        self._by_key: dict[Any, list[dict[str, Any]]] | None = None

    def rows_of(self, key: Any) -> list[dict[str, Any]]:
        if self._by_key is None:
            by_key: dict[Any, list[dict[str, Any]]] = {}
            for row in self._source.all():
                by_key.setdefault(row[self._key], []).append(row)
            self._by_key = by_key
        return self._by_key.get(key, [])

    def of(self, key: Any) -> Deferred:
        return _RowsOf(self, key)


class _RowsOf(Deferred):
    """One key's rows of a :class:`KeyedRows` (read with the others)."""

    __slots__ = ("_group", "_key")

    def __init__(self, group: KeyedRows, key: Any) -> None:  # no statement of its own
        self._group, self._key = group, key

    def all(self) -> list[dict[str, Any]]:
        return self._group.rows_of(self._key)


def _fetch_dicts(conn: Connection, cursor: Any, compiled: _Compiled, limit: int | None
                 ) -> list[dict[str, Any]]:
    try:
        rows = cursor.fetchall() if limit is None else cursor.fetchmany(limit)
        names = compiled.names
        if names is None:  # the same statement always has the same columns
            names = compiled.names = [d[0] for d in cursor.description]
        cursor.close()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise wrap_dbapi_error(conn, conn.connection.dbapi_connection, exc, compiled.sql,
                               None) from exc
    return [dict(zip(names, r, strict=True)) for r in rows]


_DEFERRED_KEY = "rhythmd.deferred_writes"


@contextmanager
def deferred_writes(conn: Connection) -> Iterator[None]:
    """Inside, the :meth:`FastStatement.executemany` calls of statements made with
    ``deferrable=True`` only collect their rows; when the block ends without an error, each
    such statement runs once with every row collected for it (one ``executemany``, in the
    order the statements were first used). A group commit uses it so that the batches of many
    runs cost one chunk insert, one run update, and so on, instead of one per batch.

    Only for writes that nothing in the block reads back (the rows of distinct runs, read
    again in later transactions); after an error the rows are dropped with the transaction.
    On PostgreSQL a statement with a ``multirow`` form sends all its rows in one statement.
    """
    info = conn.connection.info
    if info.get(_DEFERRED_KEY) is not None:
        yield
        return
    queued: dict[FastStatement, list[Mapping[str, Any]]] = {}
    info[_DEFERRED_KEY] = queued
    try:
        yield
    finally:
        info.pop(_DEFERRED_KEY, None)
    for stmt, rows in queued.items():
        multirow = stmt.multirow
        if multirow is not None and len(rows) > 1 and conn.dialect.name == "postgresql":
            keys = multirow._compiled(conn).bind_names
            multirow.execute(conn, {k: [r[k] for r in rows] for k in keys}).close()
        else:
            compiled = stmt._compiled(conn)
            stmt._executemany_args(conn, compiled, [compiled.args(r) for r in rows])


class FastStatement:
    """A Core statement for the hot path.

    ``column_keys``: for an ``insert``/``update`` without explicit values, the columns the
    parameter dicts carry (as in ``Connection.execute(insert(t), [rows])``). ``deferrable``:
    inside :func:`deferred_writes`, :meth:`executemany` queues its rows for the block's end.
    ``multirow``: on PostgreSQL, the same write for many rows in one statement, taking one
    array per parameter (``unnest``); :func:`deferred_writes` uses it for two rows or more.
    """

    __slots__ = ("_by_dialect", "column_keys", "deferrable", "multirow", "stmt")

    def __init__(self, stmt: ClauseElement, column_keys: Sequence[str] | None = None, *,
                 deferrable: bool = False, multirow: FastStatement | None = None) -> None:
        self.stmt = stmt
        self.column_keys = list(column_keys) if column_keys is not None else None
        self.deferrable = deferrable or multirow is not None
        self.multirow = multirow
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
            required = tuple(name for name, bind in compiled.binds.items() if name not in fixed)
            sql = compiled.string
            if dialect.driver == "psycopg":
                # array parameters (the unnest of a group's rows) in psycopg's binary format:
                # its text format escapes every element with a regular expression, about 5x
                # the cost
                for name, bind in compiled.binds.items():
                    if isinstance(bind.type, ARRAY):
                        sql = sql.replace(f"%({name})s", f"%({name})b")
            found = self._by_dialect[key] = _Compiled(sql, keys, fixed, required)
        return found

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run once; returns the DBAPI cursor (``rowcount``, ``fetchone``, ``description``)."""
        compiled = self._compiled(conn)
        dbapi_conn = conn.connection.dbapi_connection
        args = compiled.args(params)
        sql = compiled.sql
        try:
            cursor = dbapi_conn.cursor()
            sql, args = _announce(conn, cursor, sql, args, False)
            cursor.execute(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise wrap_dbapi_error(conn, dbapi_conn, exc, sql, args) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.deferrable:
            queued = conn.connection.info.get(_DEFERRED_KEY)
            if queued is not None:
                queued.setdefault(self, []).extend(rows)
                return
        compiled = self._compiled(conn)
        self._executemany_args(conn, compiled, [compiled.args(r) for r in rows])

    def _executemany_args(self, conn: Connection, compiled: _Compiled, args: list[Any]) -> None:
        if not args:
            return
        dbapi_conn = conn.connection.dbapi_connection
        sql: str = compiled.sql
        try:
            cursor = dbapi_conn.cursor()
            if len(args) == 1:
                sql, one = _announce(conn, cursor, sql, args[0], False)
                cursor.execute(sql, one)
            else:
                sql, args = _announce(conn, cursor, sql, args, True)
                cursor.executemany(sql, args)
            cursor.close()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise wrap_dbapi_error(conn, dbapi_conn, exc, sql, args) from exc

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row as a dict keyed by column name, or None."""
        rows = _fetch_dicts(conn, self.execute(conn, params), self._compiled(conn), 1)
        return rows[0] if rows else None

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row, as dicts keyed by column name."""
        return _fetch_dicts(conn, self.execute(conn, params), self._compiled(conn), None)

    def submit(self, conn: Connection, params: Mapping[str, Any]) -> Deferred:
        """Send the statement now and take its rows later (in a :func:`pipeline`, reads
        submitted together share one round trip)."""
        return Deferred(conn, self.execute(conn, params), self._compiled(conn))


def json_rows(name: str, *paths: str) -> Select[Any]:
    """SQLite: the elements of the JSON array parameter ``name`` as a subquery, one column per
    JSON path in ``paths`` (none: the element itself), by ``json_each``: what
    :func:`unnest_rows` and ``= ANY(:array)`` do on PostgreSQL, for a parameter that
    :func:`json_param` encoded."""
    each = func.json_each(bindparam(name)).table_valued("value")
    if not paths:
        return select(each.c.value)
    return select(*[func.json_extract(each.c.value, p) for p in paths])


def json_param(values: Sequence[Any]) -> str:
    """A list as the JSON text a :func:`json_rows` parameter takes."""
    return json.dumps(list(values))


class ReadByIds:
    """One read of the rows of ``query`` whose ``column`` is among a list of ids (a group
    commit's runs), split by that column: ``= ANY(:ids)`` on PostgreSQL, ``IN`` the
    :func:`json_rows` of a JSON array elsewhere."""

    __slots__ = ("_any", "_json", "key")

    def __init__(self, query: Select[Any], column: ColumnElement[Any],
                 order_by: Sequence[ColumnElement[Any]] = ()) -> None:
        self.key = column.key
        self._any = FastStatement(query.where(column == any_(
            bindparam("ids", type_=ARRAY(column.type)))).order_by(*order_by))
        self._json = FastStatement(query.where(column.in_(json_rows("ids"))).order_by(*order_by))

    def submit(self, conn: Connection, ids: Sequence[Any]) -> dict[Any, Deferred]:
        """``{id: its rows}`` (each a :class:`Deferred`), read together."""
        if conn.dialect.name == "postgresql":
            read = self._any.submit(conn, {"ids": list(ids)})
        else:
            read = self._json.submit(conn, {"ids": json_param(ids)})
        found = KeyedRows(read, self.key)
        return {i: found.of(i) for i in ids}


def unnest_rows(table: Table, keys: Sequence[str], names: Sequence[str] | None = None
                ) -> TableValuedAlias:
    """``unnest(:k1::T1[], :k2::T2[], ...) AS v(n1, n2, ...)``: rows from one array parameter
    per column (PostgreSQL), each typed as the ``table``'s column ``k``; ``names``: the
    parameter and column names when they differ from ``keys``."""
    names = list(names) if names is not None else list(keys)
    return func.unnest(*[bindparam(n, type_=ARRAY(table.c[k].type))
                         for k, n in zip(keys, names, strict=True)]
                       ).table_valued(*names).render_derived()


def unnest_insert(table: Table, keys: Sequence[str]) -> FastStatement:
    """The multirow form of ``FastStatement(insert(table), column_keys=keys)`` (PostgreSQL)."""
    rows = unnest_rows(table, keys)
    return FastStatement(insert(table).from_select(list(keys), select(*[rows.c[k] for k in keys])))
