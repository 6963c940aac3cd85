"""SQLite WAL checkpoints run in the store's own thread, not inside an ingest commit."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from rhythmd.batch import parse_metric_batch
from rhythmd.service import Service
from rhythmd.store import Store


def _rows_in_main_file(db: Path, copy: Path) -> int:
    """Points stored in the database file itself (its log left out)."""
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT coalesce(sum(n), 0) FROM chunks").fetchone()[0])
    except sqlite3.OperationalError:  # not even the schema copied back yet
        return 0
    finally:
        conn.close()


def test_commits_leave_checkpoints_to_the_background_thread(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = Store(f"sqlite:///{db}")
    store.open()
    try:
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        service = Service(store)
        run_id = service.create_run("ckpt")[0]["run_id"]
        for b in range(20):
            steps = list(range(b * 100, (b + 1) * 100))
            service.ingest(run_id, parse_metric_batch({"batch_id": f"b{b}", "series": [
                {"name": "train_loss", "steps": steps, "values": [1.0] * 100}]}))
        deadline = time.monotonic() + 10
        while _rows_in_main_file(db, tmp_path / "copy.db") < 2000:
            assert time.monotonic() < deadline, "the log was never checkpointed"
            time.sleep(0.05)
        assert store._checkpointer is not None and store._checkpointer.checkpoints > 0
        service.close()
    finally:
        store.close()
    assert store._checkpointer is None  # stopped with the store
