"""The ingest queue of the ingest route: at most ``ingest_concurrency`` transactions per
process; the batches that arrive meanwhile wait on the event loop and go into the next
transaction together, one per run, each run's batches in arrival order."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from rhythmd.app import create_app
from rhythmd.batch import MetricBatch
from rhythmd.config import Settings
from rhythmd.core.ingest import IngestResult
from rhythmd.core.ingest_queue import IngestQueue
from rhythmd.errors import NotFoundError


class FakeService:
    """Stands in for ``Service.ingest_many``: records the groups, takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.groups: list[list[tuple[str, str | None]]] = []
        self.busy = self.peak = 0
        self._lock = threading.Lock()

    def ingest_many(self, items):
        with self._lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
            self.groups.append([(run_id, batch.batch_id) for run_id, batch in items])
        time.sleep(self.delay)
        with self._lock:
            self.busy -= 1
        return [NotFoundError(f"run {run_id!r} not found") if run_id == "missing"
                else IngestResult(batch.n_points, False, batch.batch_id or "b", 0, 0)
                for run_id, batch in items]


def _batch(batch_id: str) -> MetricBatch:
    return MetricBatch(batch_id, 0, None, ())


def test_groups_hold_distinct_runs_in_arrival_order():
    service = FakeService()

    async def main():
        committer = IngestQueue(service, concurrency=2, max_group=4)  # type: ignore[arg-type]
        # 3 batches for each of 5 runs, interleaved, all at once, plus an unknown run
        items = [(f"r{i % 5}", f"b{i}") for i in range(15)] + [("missing", "m")]
        tasks = [asyncio.ensure_future(committer.ingest(r, _batch(b))) for r, b in items]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return items, results, committer

    items, results, committer = asyncio.run(main())
    assert [r.batch_id for r in results[:-1]] == [b for _, b in items[:-1]]
    assert isinstance(results[-1], NotFoundError)  # the error goes to its own request only
    assert service.peak == 2  # at most `concurrency` transactions at once
    assert max(len(g) for g in service.groups) == 4  # the waiting batches went together
    assert committer.batches == 16 and committer.groups == len(service.groups) < 16
    for group in service.groups:
        assert len({run for run, _ in group}) == len(group)  # one batch per run and group
    order = [b for g in service.groups for _, b in g]
    for run in {r for r, _ in items}:  # each run's batches stored in the order they came
        sent = [b for r, b in items if r == run]
        assert [b for b in order if b in sent] == sent


def test_a_request_that_went_away_is_not_stored():
    service = FakeService(delay=0.05)

    async def main():
        committer = IngestQueue(service, concurrency=1)  # type: ignore[arg-type]
        first = asyncio.ensure_future(committer.ingest("r1", _batch("b1")))
        await asyncio.sleep(0.01)  # r1 is being stored; the next two wait
        gone = asyncio.ensure_future(committer.ingest("r2", _batch("b2")))
        kept = asyncio.ensure_future(committer.ingest("r3", _batch("b3")))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, kept)

    asyncio.run(main())
    assert service.groups == [[("r1", "b1")], [("r3", "b3")]]


def test_a_failed_or_closed_queue_answers_every_request_and_keeps_going():
    """An error out of the store reaches each request of its group, and the queue takes the
    next group after it; once closed (shutting down) every request gets an error at once,
    none is left waiting."""

    class Failing(FakeService):
        def ingest_many(self, items):
            if any(run_id == "boom" for run_id, _ in items):
                raise RuntimeError("database exploded")
            return super().ingest_many(items)

    service = Failing(delay=0.01)

    async def main():
        committer = IngestQueue(service, concurrency=1)  # type: ignore[arg-type]
        first = asyncio.ensure_future(committer.ingest("boom", _batch("b1")))
        await asyncio.sleep(0)
        later = asyncio.ensure_future(committer.ingest("r2", _batch("b2")))
        results = await asyncio.gather(first, later, return_exceptions=True)
        committer.close()
        closed = await asyncio.wait_for(asyncio.gather(
            committer.ingest("r3", _batch("b3")), committer.ingest("r4", _batch("b4")),
            return_exceptions=True), timeout=5)
        return results, closed, committer

    (boom, fine), closed, committer = asyncio.run(main())
    assert isinstance(boom, RuntimeError) and "exploded" in str(boom)
    assert isinstance(fine, IngestResult) and fine.batch_id == "b2"
    assert all(isinstance(r, RuntimeError) for r in closed)
    assert committer._in_flight == 0 and not committer._busy_runs


def test_the_route_stores_through_the_committer(postgres_url, monkeypatch):
    app = create_app(Settings(database_url=postgres_url, ingest_concurrency=1))
    with TestClient(app) as c:
        fake = FakeService(delay=0.05)
        monkeypatch.setattr(app.state.ingest_queue, "ingestor", fake)
        body = {"series": [{"name": "train_loss", "steps": [1], "values": [1.0]}]}
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: c.post(f"/v1/runs/r{i}/metrics",
                                                   json={**body, "batch_id": f"b{i}"}
                                                   ).status_code, range(8)))
    assert codes == [200] * 8
    assert fake.peak == 1
    assert sum(len(g) for g in fake.groups) == 8 and len(fake.groups) < 8
