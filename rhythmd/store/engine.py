"""Engine construction: SQLite (WAL, single process) or PostgreSQL (shared by many processes)."""

from __future__ import annotations

import fcntl
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from rhythmd.errors import ConfigurationError
from rhythmd.store.pipeline import sync_pipeline_after_execute


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve()


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create the engine for ``url`` with the settings each backend needs."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise ConfigurationError(f"RHYTHMD_DATABASE_URL is not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg2" and find_spec("psycopg") is None:
            raise ConfigurationError("a postgresql URL needs psycopg: pip install "
                                     "'rhythmd[postgres]' (in a checkout: pip install -e "
                                     "'.[postgres]')")
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping (a round trip per checkout): a pooled connection the server dropped
            # (a restart) fails one request with a 503 and a retry hint, and is replaced; the
            # client hook retries that batch.
            pool_recycle=1800,
            connect_args={"connect_timeout": 5},
        )
        event.listen(engine, "after_cursor_execute", sync_pipeline_after_execute)
        return engine
    raise ConfigurationError(
        f"unsupported database {backend!r}: use sqlite:///path.db or postgresql+psycopg://…"
    )


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if path is not None:
            cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the process (kill -9); only a power
        # loss can drop the last transactions.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if path is not None:  # checkpoints run in their own thread (store.checkpoint)
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight on the DBAPI connection: exec_driver_sql would cost more than the BEGIN
        conn.connection.dbapi_connection.execute("BEGIN")

    return engine


class ProcessLock:
    """An exclusive advisory lock on ``<database>.lock``: one daemon process per SQLite file.

    SQLite is the single-process mode; a second daemon process on the same file (for example
    ``uvicorn --workers 2``) would serialise on SQLite's write lock and, worse, keep per-run
    state in two memories. It is refused at start with a message saying what to do instead.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigurationError(
                f"another rhythmd process already uses the SQLite database "
                f"{self.path.with_suffix('')}. "
                "SQLite is the single-process mode: run one worker, or use PostgreSQL "
                "(RHYTHMD_DATABASE_URL=postgresql+psycopg://…) for several processes."
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
