"""The :class:`Store`: the engine, the schema check and the transactions the service uses."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from rhythmd.errors import InvalidInputError, StoreUnavailableError
from rhythmd.store.checkpoint import WalCheckpointer
from rhythmd.store.engine import ProcessLock, is_sqlite, make_engine, sqlite_path
from rhythmd.store.locks import (
    RunLocks,
    advisory_key,
    lock_run_in_transaction,
    lock_runs_in_transaction,
)
from rhythmd.store.pipeline import pipelined_transaction
from rhythmd.store.schema import init_schema
from rhythmd.store.statements import deferred_writes


class Store:
    """A database behind one SQLAlchemy URL.

    ``sqlite:///rhythmd.db`` is the single-process mode (WAL journal, one daemon process per
    file, enforced by a lock file). ``postgresql+psycopg://…`` may be shared by any number of
    daemon processes: every write to a run happens under that run's advisory lock.
    """

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self._run_locks = RunLocks()
        self._sqlite_write_lock = threading.Lock()
        self._sqlite_writer: Connection | None = None  # SQLite: the one writing connection
        self._process_lock: ProcessLock | None = None
        self._checkpointer: WalCheckpointer | None = None
        self.schema_version: int | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def open(self) -> None:
        """Take the SQLite process lock, create or check the schema."""
        path = sqlite_path(self.url) if self.sqlite else None
        if path is not None:
            self._process_lock = ProcessLock(path)
            self._process_lock.acquire()
        try:
            with translate_db_errors():
                self.schema_version = init_schema(self.engine)
        except BaseException:
            self.close()
            raise
        if path is not None:
            self._checkpointer = WalCheckpointer(path)
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._sqlite_write_lock:
            if self._sqlite_writer is not None:
                self._sqlite_writer.close()
                self._sqlite_writer = None
        self.engine.dispose()
        if self._process_lock is not None:
            self._process_lock.release()
            self._process_lock = None

    def ping(self) -> None:
        with translate_db_errors(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (SQLite WAL readers never wait for the writer)."""
        with translate_db_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self, run_id: str | None = None, *, pipelined: bool = False
              ) -> Iterator[Connection]:
        """A write transaction, holding ``run_id``'s lock when given (see ``store.locks``).

        ``pipelined``: on PostgreSQL, run the transaction in pipeline mode
        (:func:`~rhythmd.store.pipeline.pipelined_transaction`): ``BEGIN``, the lock and the hot
        statements are sent together and the ``COMMIT`` with the writes, instead of one round
        trip each. No effect on SQLite.
        """
        if self.sqlite:
            with translate_db_errors(), self._sqlite_write_lock, \
                    self._sqlite_transaction() as conn:
                yield conn
            return
        guard: AbstractContextManager[object] = (
            self._run_locks.get(run_id) if run_id is not None else nullcontext())
        # the pipeline ends (and reports what failed in it) before SQLAlchemy's commit or
        # rollback, which then have nothing left to do
        with (translate_db_errors(), guard, self.engine.connect() as conn, conn.begin(),
              pipelined_transaction(conn) if pipelined else nullcontext()):
            if run_id is not None:
                lock_run_in_transaction(conn, run_id)
            yield conn

    @contextmanager
    def write_many(self, run_ids: Collection[str]) -> Iterator[Connection]:
        """One pipelined write transaction holding the locks of all ``run_ids`` (group commit:
        the batches of several runs stored together, one ``BEGIN``/``COMMIT`` for all).

        The locks are taken in one global order (by advisory key), in this process and on the
        server, so that two groups, or a group and a single-run transaction, never wait for
        each other in a cycle. The hot writes of the batches (chunks, series counts, batch and
        run rows) are sent together at the end (:func:`~rhythmd.store.statements.deferred_writes`):
        the caller must not read them back in the transaction. On SQLite the one writer's
        transaction, with the same deferred writes (one ``executemany`` per statement for the
        group instead of one per batch).
        """
        if self.sqlite:
            with (translate_db_errors(), self._sqlite_write_lock,
                  self._sqlite_transaction() as conn, deferred_writes(conn)):
                yield conn
            return
        order = sorted((advisory_key(r), r) for r in set(run_ids))
        with ExitStack() as held:
            for _, run_id in order:
                held.enter_context(self._run_locks.get(run_id))
            with (translate_db_errors(), self.engine.connect() as conn, conn.begin(),
                  pipelined_transaction(conn)):
                lock_runs_in_transaction(conn, sorted({k for k, _ in order}))
                with deferred_writes(conn):
                    yield conn

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[Connection]:
        """A transaction on the kept-open writing connection (the caller holds the write lock):
        SQLite has one writer at a time anyway, and checking a connection out of the pool and
        back in for every batch costs more than the batch's own statements."""
        conn = self._sqlite_writer
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._sqlite_writer = self.engine.connect()
        try:
            with conn.begin():
                yield conn
        except BaseException:
            if conn.invalidated:
                conn.close()
                self._sqlite_writer = None
            raise


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn a lost or refused database connection into :class:`StoreUnavailableError` (503)."""
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailableError(f"database unavailable: {_first_line(exc.orig)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailableError(f"database connection lost: {_first_line(exc.orig)}") \
                from exc
        if "NUL (0x00)" in str(exc.orig):  # PostgreSQL text cannot hold NUL (SQLite can)
            raise InvalidInputError(("request",), "text must not contain NUL (0x00)") from exc
        raise


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
