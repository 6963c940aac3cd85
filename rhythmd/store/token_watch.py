"""Token verification that sees a revocation on every process within a second.

SQLite is one daemon process (plus the CLI): every request reads the token row (one indexed
lookup in a local file), so nothing is cached and a revocation holds at once.

PostgreSQL may have many daemon processes: each keeps verified tokens in memory and listens on
the ``rhythmd_tokens`` channel, on which every revocation is announced (``pg_notify`` in the
revoking transaction, delivered at its commit). A notification empties the cache. While the
listening connection is down the cache is not used at all, so a missed notification can never
leave a revoked token working.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from rhythmd.auth import Principal
from rhythmd.store import tokens as tokens_q

if TYPE_CHECKING:
    from rhythmd.store.store import Store

log = logging.getLogger("rhythmd")
MAX_CACHED = 10_000


class TokenVerifier:
    """The principal of a presented token, or None when it is unknown or revoked."""

    def __init__(self, store: Store, *, poll_s: float = 0.5) -> None:
        self.store = store
        self.poll_s = poll_s
        self._cache: dict[str, Principal | None] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._listening = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        """Whether revocations are being heard (the cache is in use)."""
        return self._listening

    def verify(self, token: str) -> Principal | None:
        if not self.store.sqlite:
            self._ensure_listener()
        with self._lock:
            if self._listening and token in self._cache:
                return self._cache[token]
            generation = self._generation
        with self.store.read() as conn:
            row = tokens_q.find_token(conn, token)
        principal = None if row is None else Principal(row["project"], row["scope"],
                                                       row["token_id"])
        with self._lock:
            # a revocation heard while we read may concern this row: do not keep it
            if self._listening and generation == self._generation:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[token] = principal
        return principal

    def invalidate(self) -> None:
        """Forget every verified token (a revocation happened)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    # PostgreSQL -------------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen_forever,
                                                name="rhythmd-token-watch", daemon=True)
                self._thread.start()

    def _set_listening(self, value: bool) -> None:
        with self._lock:
            self._listening = value
            self._generation += 1
            self._cache.clear()

    def _listen_forever(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._listen_once()
                delay = 0.1
            except Exception as exc:  # any driver error: not listening, retry
                self._set_listening(False)
                log.warning("token revocation watch lost (%s); verifying every request against "
                            "the database until it is back", str(exc).strip()[:200])
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self._set_listening(False)

    def _listen_once(self) -> None:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute(f"LISTEN {tokens_q.CHANNEL}")
            self._set_listening(True)
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=self.poll_s):
                    self.invalidate()
                # a dead connection raises here rather than waiting silently
                conn.execute("SELECT 1")
