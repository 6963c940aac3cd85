"""The per-run write lock: one writer per run at a time, across threads and processes.

In one process a ``threading.Lock`` per run serialises writers. On PostgreSQL a
transaction-level advisory lock keyed by a stable 64-bit hash of the run id extends this to
any number of daemon processes sharing the database (Python's ``hash()`` differs per process,
so it is not used). On SQLite, the single-process mode, one process-wide lock serialises every
write transaction, which is what SQLite does anyway, without busy-waiting.
"""

from __future__ import annotations

import hashlib
import threading
import weakref

from sqlalchemy import BigInteger, Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from rhythmd.store.statements import FastStatement


def advisory_key(run_id: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RunLocks:
    """Per-run ``threading.Lock`` objects, created on demand and freed when unused."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, _Lock] = (
            weakref.WeakValueDictionary()
        )

    def get(self, run_id: str) -> _Lock:
        with self._guard:
            lock = self._locks.get(run_id)
            if lock is None:
                lock = _Lock()
                self._locks[run_id] = lock
            return lock


class _Lock:
    """A weak-referenceable lock (``threading.Lock`` objects are not)."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


_ADVISORY_LOCK = FastStatement(text("SELECT pg_advisory_xact_lock(:k)"))


def lock_run_in_transaction(conn: Connection, run_id: str) -> None:
    """Take the cross-process run lock inside the current transaction (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        # in a pipeline, only queued: the statements after it run once the lock is held
        _ADVISORY_LOCK.execute(conn, {"k": advisory_key(run_id)}).close()


_ADVISORY_LOCKS = FastStatement(text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) AS k"
).bindparams(bindparam("keys", type_=ARRAY(BigInteger))))


def lock_runs_in_transaction(conn: Connection, keys: list[int]) -> None:
    """Take several runs' locks (their :func:`advisory_key` values, sorted ascending by the
    caller) in one statement; ``unnest`` yields them in array order (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        _ADVISORY_LOCKS.execute(conn, {"keys": keys}).close()
