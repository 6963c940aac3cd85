"""Storing metric batches: exactly once, in one transaction under the run's write lock, with
their analysis. Synchronous; :class:`rhythmd.core.ingest_queue.IngestQueue` runs it off the
event loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rhythmd.batch import MetricBatch
from rhythmd.core import recommendations as recs
from rhythmd.core.analyzers import AnalyzerCache, ColdStart
from rhythmd.core.diagnoses import NOTHING, AnalysisOutcome, analyse_batch, evaluates
from rhythmd.errors import NotFoundError, StoreUnavailableError
from rhythmd.observability import BATCHES, INGEST_SECONDS, POINTS
from rhythmd.store import Store
from rhythmd.store import analysis as analysis_q
from rhythmd.store import points as points_q
from rhythmd.store import recommendations as recs_q
from rhythmd.store import runs as runs_q
from rhythmd.store import series as series_q
from rhythmd.store.statements import Deferred
from rhythmd.webhooks import AlertConfig

log = logging.getLogger("rhythmd.service")


@dataclass(slots=True)
class IngestResult:
    accepted: int
    duplicate: bool
    batch_id: str
    seq_start: int
    branch: int
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    blowup_bound: float | None = None  # train loss above which one step is a blow-up


@dataclass(frozen=True, slots=True)
class _BatchReads:
    """The reads of one batch's transaction, sent together and read when needed."""

    run: Deferred
    batch: Deferred | None
    recs: Deferred  # the pending recommendations, or all of them when ``history``
    replay: tuple[int, analysis_q.Replay] | None
    series_ids: Deferred | None = None
    cold_start: ColdStart | None = None
    history: bool = False  # the policy reads the run's recommendations (``recs``: all of them)
    all_recs: bool = False  # ``recs`` holds every recommendation of the run, not the pending

    def pending(self) -> list[Any]:
        rows = self.recs.all()
        return [r for r in rows if r["status"] == recs.PENDING] if self.all_recs else rows


@dataclass(frozen=True, slots=True)
class _GroupReads:
    """Reads of a group's runs sent as one statement each: {run_id: rows}."""

    runs: dict[str, Deferred]
    batches: dict[str, Deferred]
    recs: dict[str, Deferred] | None  # every recommendation of each run


class Ingestor:
    """Stores batches, one run's at a time (:meth:`ingest`) or several runs' in one
    transaction (:meth:`ingest_many`), each with its analysis when ``analysis`` is on."""

    def __init__(self, store: Store, analyzers: AnalyzerCache, *, analysis: bool = True,
                 lost_rule: runs_q.LostRule | None = None,
                 alerts: AlertConfig | None = None) -> None:
        self.store = store
        self.analyzers = analyzers
        self.analysis = analysis
        self.lost_rule = lost_rule or runs_q.LostRule()
        self.alerts = alerts

    @property
    def writers(self) -> int | None:
        """Write transactions the database runs at once: 1 on SQLite, None (no limit of its
        own) on PostgreSQL."""
        return 1 if self.store.sqlite else None

    def ingest(self, run_id: str, batch: MetricBatch) -> IngestResult:
        """Store a batch exactly once (idempotent on ``batch_id``), in one transaction under
        the run's write lock, and return the run's pending recommendations."""
        started = time.perf_counter()
        with self.store.write(run_id, pipelined=True) as conn:
            result = self._store_batch(conn, run_id, batch,
                                       self._submit_reads(conn, run_id, batch))
        _count(result, time.perf_counter() - started)
        return result

    def ingest_many(self, items: Sequence[tuple[str, MetricBatch]]
                    ) -> list[IngestResult | Exception]:
        """Store the batches of several runs in one transaction (group commit); one result,
        or the error that batch alone would have raised, per item, in order.

        Each batch is stored and analysed exactly as by :meth:`ingest`; only the transaction
        (and its ``BEGIN``, locks, commit and round trips) is shared. The runs must be
        distinct. A batch that fails before it writes (an unknown run) fails alone; a lost
        database fails them all (503); any other error rolls the group back and each batch is
        then stored on its own, so one bad batch never costs the others theirs.
        """
        if len({run_id for run_id, _ in items}) != len(items):
            raise ValueError("ingest_many: one batch per run")
        if len(items) == 1:
            try:
                return [self.ingest(*items[0])]
            except Exception as exc:  # handed to the caller of this item
                return [exc]
        started = time.perf_counter()
        out: list[IngestResult | Exception]
        try:
            with self.store.write_many([r for r, _ in items]) as conn:
                shared = _submit_group_reads(conn, items)
                reads = [self._submit_reads(conn, run_id, batch, shared)
                         for run_id, batch in items]
                created = _create_series(conn, items, reads)
                out = []
                for (run_id, batch), found in zip(items, reads, strict=True):
                    try:
                        out.append(self._store_batch(conn, run_id, batch, found,
                                                     created.get(run_id)))
                    except NotFoundError as exc:  # raised before the batch wrote anything
                        out.append(exc)
        except StoreUnavailableError as exc:  # the database is away: each batch would fail too
            return [StoreUnavailableError(str(exc)) for _ in items]
        except Exception:
            log.debug("group commit of %d batches failed; storing them one by one",
                      len(items), exc_info=True)
            out = []
            for run_id, batch in items:
                try:
                    out.append(self.ingest(run_id, batch))
                except Exception as exc:  # handed to the caller of this item
                    out.append(exc)
            return out
        elapsed = (time.perf_counter() - started) / len(items)
        for result in out:
            if isinstance(result, IngestResult):
                _count(result, elapsed)
        return out

    def _submit_reads(self, conn: Any, run_id: str, batch: MetricBatch,
                      shared: _GroupReads | None = None) -> _BatchReads:
        """Send the reads a batch needs (they go out together: one round trip on PostgreSQL):
        the run, the batch id, the pending recommendations; when this process's analyzer of
        the run was behind last time (another replica took batches), the batches it has not
        seen; when it has no analyzer of the run yet, the saved state and the batches after
        it; and the run's series ids when some of the batch's are not cached.

        While the run has an open diagnosis, or when the batch carries a validation point, the
        analysis may open or update one and the policy then reads the run's recommendation
        history: all of them are read instead of the pending ones, so that the policy seldom
        waits for a round trip of its own.

        ``shared``: the run, batch and recommendation reads of a group, already sent."""
        analyse = self.analysis and bool(batch.series)
        live = self.analyzers.peek(run_id)
        cold = None
        if analyse and live is None:
            cold = self.analyzers.submit_cold_start(conn, run_id)
        history = analyse and live is not None and (
            live.analyzer.has_open_diagnoses() or evaluates(batch, live.analyzer.cfg))
        if shared is not None:
            run, found = shared.runs[run_id], shared.batches.get(run_id)
        else:
            run = runs_q.get_run(conn, run_id)
            found = (runs_q.find_batch(conn, run_id, batch.batch_id)
                     if batch.batch_id is not None else None)
        if shared is not None and shared.recs is not None:
            rec_rows, all_recs = shared.recs[run_id], True
        else:
            rec_rows = recs_q.list_recommendations(conn, run_id,
                                                   None if history else recs.PENDING)
            all_recs = history
        return _BatchReads(
            run, found, rec_rows,
            self.analyzers.submit_catch_up(conn, run_id) if analyse and live is not None
            else None,
            series_q.submit_series_ids(conn, run_id, batch.series) if batch.series else None,
            cold, history, all_recs)

    def _store_batch(self, conn: Any, run_id: str, batch: MetricBatch, reads: _BatchReads,
                     created: dict[str, int] | None = None) -> IngestResult:
        """The batch's writes and analysis, in the caller's transaction under the run's lock
        (``created``: its new series, made by :func:`_create_series`). Raises
        :class:`NotFoundError` before writing anything when the run does not exist."""
        run = reads.run.first()
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found")
        if reads.batch is not None:
            seen = reads.batch.first()
            if seen is not None:
                return IngestResult(seen["n_points"], True, batch.batch_id,
                                    seen["seq_start"], seen["branch"],
                                    [recs_q.rec_to_dict(r) for r in reads.pending()])
        seq_start = int(run["next_seq"])
        # Without a client id the batch cannot be retried safely; it gets a unique one
        # (a sequence-based id would repeat for batches without points).
        batch_id = batch.batch_id or f"srv-{uuid.uuid4().hex}"
        branch = batch.branch
        n = batch.n_points
        start = None
        if branch != 0 or batch.branch_start_step is not None:
            start = batch.branch_start_step
            if start is None and batch.series:
                start = min(int(s.steps.min()) for s in batch.series)
            runs_q.ensure_branch(conn, run_id, branch, start, seq_start)
        next_seq = seq_start
        outcome: AnalysisOutcome = NOTHING
        if batch.series:
            next_seq = points_q.write_series(conn, run_id, batch.series, seq_start, branch,
                                             reads.series_ids, created)
            if self.analysis:
                outcome = analyse_batch(conn, self.analyzers, self.alerts, run, batch,
                                        seq_start, next_seq, start, reads.replay,
                                        reads.cold_start, reads.recs if reads.history else None)
        now = time.time()
        interval = run["interval_s"]
        if run["n_batches"]:
            gap = min(max(now - float(run["updated_at"]), 0.0), 3600.0)
            interval = gap if interval is None else 0.8 * float(interval) + 0.2 * gap
            if self.lost_rule.is_lost(run, now):
                recs_q.add_event(conn, run_id, "run_resumed", None,
                                 {"silent_s": round(now - float(run["updated_at"]), 3)})
        runs_q.record_batch(conn, run_id, batch_id, seq_start, n, branch)
        max_branch = max(int(run["max_branch"]), branch)
        last_step = None
        if batch.series and branch >= int(run["max_branch"]):
            last_step = max(int(s.steps.max()) for s in batch.series)
            if branch == int(run["max_branch"]) and run["last_step"] is not None:
                last_step = max(last_step, int(run["last_step"]))
        status = "running" if run["status"] != "running" and n else None
        runs_q.advance_run(conn, run, next_seq=next_seq, add_points=n,
                           last_step=last_step, max_branch=max_branch, status=status,
                           interval_s=interval, health=outcome.health)
        pending_rows = reads.pending()
        change = outcome.change
        if change is not None:  # read before the policy acted: apply what it did
            pending_rows = [r for r in pending_rows if r["rec_id"] not in change.cancelled]
            pending_rows += change.issued
        pending = recs.expire_stale(conn, run_id, pending_rows, last_step)
        return IngestResult(n, False, batch_id, seq_start, branch,
                            [recs_q.rec_to_dict(r) for r in pending], outcome.blowup_bound)


def _submit_group_reads(conn: Any, items: Sequence[tuple[str, MetricBatch]]) -> _GroupReads:
    """The runs, batch ids and recommendations of a group's runs, one read each (instead of
    one per batch: each statement costs the driver, and on PostgreSQL the server, more than
    its rows)."""
    run_ids = [run_id for run_id, _ in items]
    return _GroupReads(
        runs_q.get_runs(conn, run_ids),
        runs_q.find_batches(conn, [(run_id, batch.batch_id) for run_id, batch in items
                                   if batch.batch_id is not None]),
        recs_q.list_recommendations_of_runs(conn, run_ids))


def _create_series(conn: Any, items: Sequence[tuple[str, MetricBatch]],
                   reads: list[_BatchReads]) -> dict[str, dict[str, int]]:
    """The new series of a group's batches, created together (one round trip on PostgreSQL,
    not one per series: a sweep's first batches all bring new ones):
    {run_id: {name: series_id}}. Unknown runs and retried batches create none."""
    wanted: list[tuple[str, str]] = []
    for (run_id, batch), found in zip(items, reads, strict=True):
        if found.series_ids is None or found.run.first() is None:
            continue
        if found.batch is not None and found.batch.first() is not None:
            continue
        wanted.extend((run_id, name) for name in dict.fromkeys(
            series_q.missing_series(conn, run_id, batch.series, found.series_ids)))
    out: dict[str, dict[str, int]] = {}
    if len(wanted) > 1:
        for (run_id, name), sid in series_q.create_series(conn, wanted).items():
            out.setdefault(run_id, {})[name] = sid
    return out


def _count(result: IngestResult, seconds: float) -> None:
    INGEST_SECONDS.observe(seconds)
    if result.duplicate:
        BATCHES.labels("duplicate").inc()
    else:
        BATCHES.labels("stored").inc()
        POINTS.inc(result.accepted)
