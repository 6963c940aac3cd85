"""PostgreSQL pipeline mode for a transaction: statements are queued and sent together, and the
client waits for the server only where it needs a result. A no-op on other drivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection

from rhythmd.store.statements import PIPELINE_KEY, pipeline_of, wrap_dbapi_error


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """Run the block in psycopg's pipeline mode (PostgreSQL); a no-op on other drivers.

    Inside, :class:`FastStatement` writes are only queued, and a read waits just for its own
    result; ``Connection.execute`` still works (the engine's ``after_cursor_execute`` hook,
    :func:`sync_pipeline_after_execute`, syncs so that SQLAlchemy sees the result). An error of
    a queued statement is raised where the next result is awaited, at the latest when the
    block ends, wrapped as ``Connection.execute`` would wrap it.
    """
    dbapi_conn = conn.connection.dbapi_connection
    if not hasattr(dbapi_conn, "pipeline") or pipeline_of(conn) is not None:
        yield
        return
    error = conn.dialect.loaded_dbapi.Error
    info = conn.connection.info
    try:
        with dbapi_conn.pipeline() as queue:
            info[PIPELINE_KEY] = queue
            try:
                yield
            except BaseException:
                # the block failed: collect what its failure aborted, so that the error
                # raised is the block's own (the transaction is rolled back anyway)
                with suppress(error):
                    queue.sync()
                raise
            finally:
                info.pop(PIPELINE_KEY, None)
    except error as exc:
        raise wrap_dbapi_error(conn, dbapi_conn, exc, "<pipeline sync>", None) from exc


@contextmanager
def pipelined_transaction(conn: Connection) -> Iterator[None]:
    """The whole transaction in one :func:`pipeline`, its ``BEGIN`` and ``COMMIT`` included: a
    batch then waits for the server twice (its reads, and the commit with its writes) instead
    of also once for ``BEGIN`` (psycopg syncs after a ``BEGIN`` it sends itself in a pipeline)
    and once more for the ``COMMIT``.

    For use inside SQLAlchemy's ``conn.begin()`` before any statement ran. The driver runs in
    autocommit mode meanwhile and this block sends ``BEGIN``/``COMMIT`` (or ``ROLLBACK`` after
    an error), so SQLAlchemy's own commit or rollback at the end finds nothing left to do.
    Other drivers, or a connection already inside a transaction: a plain :func:`pipeline`.
    """
    dbapi_conn = conn.connection.dbapi_connection
    if not hasattr(dbapi_conn, "pipeline") or dbapi_conn.info.transaction_status.name != "IDLE":
        with pipeline(conn):
            yield
        return
    error = conn.dialect.loaded_dbapi.Error
    try:
        dbapi_conn.autocommit = True
    except error as exc:  # a connection the driver already knows to be broken
        raise wrap_dbapi_error(conn, dbapi_conn, exc, "<autocommit>", None) from exc
    try:
        with pipeline(conn):
            dbapi_conn.cursor().execute("BEGIN")  # queued, as is everything up to the COMMIT
            yield
            dbapi_conn.cursor().execute("COMMIT")  # the end of the pipeline waits for it
    finally:
        # after an error the server is still in the (failed) transaction: end it
        if not dbapi_conn.closed and dbapi_conn.info.transaction_status.name != "IDLE":
            with suppress(error):
                dbapi_conn.execute("ROLLBACK")
        with suppress(error):
            dbapi_conn.autocommit = False


def sync_pipeline_after_execute(conn: Connection, cursor: Any, statement: str,
                                parameters: Any, context: Any, executemany: bool) -> None:
    """``after_cursor_execute`` listener: inside :func:`pipeline`, wait for the statement's
    result, so that ``Connection.execute`` (which reads ``cursor.description`` and
    ``rowcount`` at once) works there too. Raised errors are wrapped by SQLAlchemy."""
    queue = pipeline_of(conn)
    if queue is not None:
        queue.sync()
