"""The ingest queue: how HTTP requests' batches reach the database, off the event loop.

Every metrics batch costs a transaction: ``BEGIN``, the run's lock, a round trip for its reads,
the ``COMMIT``, a worker-thread hop and a connection. At hundreds of batches per second from
hundreds of runs those per-transaction costs are most of the daemon's and the database's CPU.
:class:`IngestQueue` lets at most ``concurrency`` transactions run per process, each in one of
its own worker threads; the requests that arrive meanwhile wait on the event loop and the next
free slot takes all of them that belong to distinct runs (up to ``max_group``) into one
transaction (:meth:`rhythmd.core.ingest.Ingestor.ingest_many`). Under a light load a group is
one batch, stored as by :meth:`~rhythmd.core.ingest.Ingestor.ingest`, so the latency is that
of a lone transaction; under a heavy one the cost per batch falls as the groups grow.

Batches of one run keep their arrival order: a run with a batch in a transaction, or waiting
ahead in the queue, leaves its later batch for a later group.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, Protocol

from rhythmd.batch import MetricBatch
from rhythmd.core.ingest import IngestResult

_Item = tuple[str, MetricBatch, "asyncio.Future[IngestResult]"]


class GroupIngest(Protocol):
    """What the queue stores through (:class:`rhythmd.core.ingest.Ingestor`)."""

    def ingest_many(self, items: Sequence[tuple[str, MetricBatch]]
                    ) -> list[IngestResult | Exception]: ...


class IngestQueue:
    """Stores batches from the event loop, several runs' batches per transaction.

    ``concurrency``: transactions in flight at once per process (each in one of the queue's
    ``concurrency`` threads);
    the only limit on concurrent ingest transactions, capped by the ingestor's ``writers``
    (SQLite: one; more would only wait for the write lock). ``max_group``: batches per
    transaction at most. Bound to the event loop it is first used on.
    """

    def __init__(self, ingestor: GroupIngest, *, concurrency: int = 2,
                 max_group: int = 32) -> None:
        if concurrency < 1 or max_group < 1:
            raise ValueError("concurrency and max_group must be at least 1")
        self.ingestor = ingestor
        writers = getattr(ingestor, "writers", None)
        self.concurrency = min(concurrency, writers) if writers else concurrency
        # its own threads: a hop costs less than through the shared pool (no limiter, no
        # cancel scope), and a burst of other requests never holds up the ingest
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="rhythmd-ingest")
        self.max_group = max_group
        self._queue: deque[_Item] = deque()
        self._in_flight = 0
        self._busy_runs: set[str] = set()  # runs with a batch in a transaction now
        self.groups = 0
        """Transactions started (``batches / groups`` is the mean group size)."""
        self.batches = 0

    async def ingest(self, run_id: str, batch: MetricBatch) -> IngestResult:
        """Store one batch (as :meth:`Ingestor.ingest` would) and return its result."""
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append((run_id, batch, future))
        self._start_groups()
        return await future

    def _start_groups(self) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        while self._in_flight < self.concurrency and self._queue:
            group = self._take_group()
            if not group:
                return
            if loop is None:
                loop = asyncio.get_running_loop()
            self._in_flight += 1
            self.groups += 1
            self.batches += len(group)
            # straight to a thread, and back by one callback: no task and no wrapped future in
            # between, which would each cost the request another pass of the event loop
            try:
                self._threads.submit(self._store, loop, group)
            except RuntimeError as exc:  # closed (shutting down): the group gets the error
                self._answer(group, [exc] * len(group))

    def _take_group(self) -> list[_Item]:
        """The waiting batches of distinct runs, oldest first; a run's later batch stays
        queued (behind its earlier one) for a later group. Cancelled requests are dropped."""
        group: list[_Item] = []
        runs: set[str] = set()
        skipped = set(self._busy_runs)
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            run_id, _, future = item
            if future.done():  # the client went away while it waited
                continue
            if len(group) < self.max_group and run_id not in runs and run_id not in skipped:
                group.append(item)
                runs.add(run_id)
            else:
                kept.append(item)
                skipped.add(run_id)
        self._queue = kept
        self._busy_runs |= runs
        return group

    def _store(self, loop: asyncio.AbstractEventLoop, group: list[_Item]) -> None:
        """In a queue thread: store the group, then hand the results to the event loop."""
        results: list[Any] = [RuntimeError("the ingest thread was interrupted")] * len(group)
        try:
            results = self.ingestor.ingest_many([(run_id, batch) for run_id, batch, _ in group])
        except Exception as exc:  # every request of the group gets the error
            results = [exc] * len(group)
        finally:
            with suppress(RuntimeError):  # the loop is closed: its requests are gone with it
                loop.call_soon_threadsafe(self._finish, group, results)

    def _finish(self, group: list[_Item], results: list[Any]) -> None:
        """On the event loop: answer the group's requests and start the next groups."""
        self._answer(group, results)
        self._start_groups()

    def _answer(self, group: list[_Item], results: list[Any]) -> None:
        self._in_flight -= 1
        self._busy_runs.difference_update(run_id for run_id, _, _ in group)
        for (_, _, future), result in zip(group, results, strict=True):
            if future.done():  # the client went away meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Let the transactions in flight finish, then stop the queue's threads."""
        self._threads.shutdown(wait=True)
