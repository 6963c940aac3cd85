"""``WalCheckpointer``: SQLite's WAL checkpoints in a thread of their own, off the ingest path.

In WAL mode a commit appends to the ``-wal`` file; a checkpoint copies those pages back into
the database file and syncs it. SQLite runs one by default inside the commit that takes the
log past 1,000 pages, so every few seconds under a steady ingest one batch's transaction also
pays for copying and syncing megabytes: here, 20-100 ms in which every other request waits
behind it. The daemon's connections turn that off (``PRAGMA wal_autocheckpoint=0``) and this
thread runs a ``PASSIVE`` checkpoint every ``interval_s`` instead, on its own connection: it
copies what it can without waiting for, or blocking, the writer or the readers, and the next
commit after a complete one starts the log over, so the file stays as small as before.
What a commit guarantees is unchanged (it is in the log when the commit returns, as before);
only who copies it into the database file, and when, changes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("rhythmd.store")

DEFAULT_INTERVAL_S = 0.5
"""Seconds between checkpoints: the log holds about this much ingest at most."""


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file ``path`` every ``interval_s`` until :meth:`stop`."""

    def __init__(self, path: Path, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0  # completed calls (for tests and curiosity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rhythmd-wal-checkpoint",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a final checkpoint runs first, so a closed store leaves no log to
        replay."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:  # the store reports a missing file itself
            log.warning("WAL checkpoints off: cannot open %s: %s", self.path, exc)
            return
        try:
            while not self._stop.wait(self.interval_s):
                self._checkpoint_logged(conn)
            self._checkpoint_logged(conn)
        finally:
            conn.close()

    def _checkpoint_logged(self, conn: sqlite3.Connection) -> None:
        try:
            self.checkpoint(conn)
        except sqlite3.Error as exc:  # a busy or lost file: the next round tries again
            log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
