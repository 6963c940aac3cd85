"""On PostgreSQL the ingest route lets at most ``ingest_concurrency`` requests per process
into the thread pool at once (the service's own slots are bypassed here: the route's gate alone
must hold the line); the others wait on the event loop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from rhythmd.app import create_app
from rhythmd.config import Settings
from rhythmd.service import IngestResult


def test_at_most_ingest_concurrency_batches_are_stored_at_once(postgres_url, monkeypatch):
    app = create_app(Settings(database_url=postgres_url, ingest_concurrency=2))
    with TestClient(app) as c:
        service = app.state.service
        lock = threading.Lock()
        busy, peak = 0, 0

        def slow_ingest(run_id, batch):  # stands in for the whole transaction
            nonlocal busy, peak
            with lock:
                busy += 1
                peak = max(peak, busy)
            time.sleep(0.05)
            with lock:
                busy -= 1
            return IngestResult(batch.n_points, False, batch.batch_id or "b", 0, 0)

        monkeypatch.setattr(service, "ingest", slow_ingest)
        body = {"series": [{"name": "train_loss", "steps": [1], "values": [1.0]}]}
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: c.post(f"/v1/runs/r{i}/metrics",
                                                   json={**body, "batch_id": f"b{i}"}
                                                   ).status_code, range(8)))
    assert codes == [200] * 8
    assert peak == 2
