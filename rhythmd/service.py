"""Orchestration: the only place that touches storage, analysis and policy together.

Every method is synchronous (SQLAlchemy Core); the API layer runs them in a worker thread.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent, RunAnalyzer
from rhythmd.analysis.metrics import is_eval_name, with_aliases
from rhythmd.auth import Principal
from rhythmd.batch import MetricBatch, check_metric_name
from rhythmd.errors import ConflictError, InvalidInputError, NotFoundError, StoreUnavailableError
from rhythmd.jsonsafe import encode_nonfinite
from rhythmd.observability import ANALYSIS_ERRORS, ANALYSIS_SECONDS, BATCHES, INGEST_SECONDS, POINTS
from rhythmd.policy import (
    TRIAL_ACTIONS,
    PolicyConfig,
    RecommendationSpec,
    answerable,
    decide,
    fallback,
    run_context,
)
from rhythmd.recommendations import validate_action
from rhythmd.run_status import ENDINGS, health_of
from rhythmd.store import Store
from rhythmd.store import analysis as analysis_q
from rhythmd.store import outbox as outbox_q
from rhythmd.store import points as points_q
from rhythmd.store import recommendations as recs_q
from rhythmd.store import runs as runs_q
from rhythmd.store import summary as summary_q
from rhythmd.store import tokens as tokens_q
from rhythmd.store.downsample import downsample_indices
from rhythmd.store.fast import Deferred
from rhythmd.store.token_watch import TokenVerifier
from rhythmd.webhooks import SEVERITY_RANK, diagnosis_message, recommendation_message, should_alert

log = logging.getLogger("rhythmd.service")

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
BranchSelector = int | Literal["latest", "all"]


@dataclass(slots=True)
class IngestResult:
    accepted: int
    duplicate: bool
    batch_id: str
    seq_start: int
    branch: int
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    blowup_bound: float | None = None  # train loss above which one step is a blow-up


@dataclass(slots=True)
class SeriesView:
    name: str
    branch: BranchSelector
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray | None
    branches: np.ndarray | None
    total_points: int
    downsampled: bool


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Webhook alerts: diagnoses at or above ``min_severity`` (info, warning, high, critical)
    when they open or escalate, and every applied or rejected recommendation."""

    min_severity: str = "warning"
    base_url: str | None = None  # link to the run's page in the message


@dataclass(frozen=True, slots=True)
class _BatchReads:
    """The reads of one batch's transaction, sent together and read when needed."""

    run: Deferred
    batch: Deferred | None
    recs: Deferred  # the pending recommendations, or all of them when ``history``
    replay: tuple[int, Deferred] | None
    series_ids: Deferred | None = None
    cold_start: tuple[Deferred, Deferred] | None = None  # saved state, replay after it
    history: bool = False  # ``recs`` holds every recommendation of the run (for the policy)

    def pending(self) -> list[Any]:
        rows = self.recs.all()
        return [r for r in rows if r["status"] == "pending"] if self.history else rows


@dataclass(frozen=True, slots=True)
class _PolicyChange:
    """What the policy did to a run's recommendations in one batch."""

    issued: list[dict[str, Any]]  # the new rows, oldest first
    cancelled: list[str]  # ids of pending ones it expired


@dataclass(slots=True)
class _LiveAnalyzer:
    analyzer: RunAnalyzer
    analyzed_seq: int  # points with a smaller arrival sequence number have been fed
    saved_at: float  # time.monotonic() of the last save
    unsaved_batches: int = 0
    was_behind: bool = False  # the last batch found batches stored by another process


def _with_aliases(series: dict[str, Any], cfg: AnalysisConfig) -> dict[str, Any]:
    return with_aliases(series, {"train_loss": cfg.train_metric, "val_loss": cfg.val_metric,
                                 "lr": cfg.lr_metric})


def _evaluates(batch: MetricBatch, cfg: AnalysisConfig) -> bool:
    """Whether the batch carries a validation point (where diagnoses open and update)."""
    names = {cfg.val_metric, cfg.aux_val_metric, *cfg.roles}
    return any(s.name in names or is_eval_name(s.name) for s in batch.series)


def _restore(analyzer: RunAnalyzer, state: dict[str, Any]) -> bool:
    """Load a saved analyzer state; False when it is of another version (replay instead)."""
    try:
        analyzer.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        log.info("saved analyzer state not used (%s); replaying the run", exc)
        return False
    return True


def _issue(conn: Any, run_id: str, spec: RecommendationSpec, step: int) -> dict[str, Any]:
    """Store one recommendation of the policy, with its timeline event; return the row."""
    rec = {"id": uuid.uuid4().hex[:16], "run_id": run_id, "action": spec.action,
           "params": spec.params, "reason": spec.reason, "author": "rhythmd",
           "diagnosis_id": spec.diagnosis_id, "issued_at_step": step,
           "expires_at_step": spec.expires_at_step}
    validate_action(spec.action, spec.params)
    row = recs_q.insert_recommendation(conn, rec)
    log.info("recommendation issued: %s %s", spec.action, spec.params,
             extra={"run_id": run_id, "recommendation_id": rec["id"], "step": step})
    recs_q.add_event(conn, run_id, "recommendation_issued", step,
                     {"action": spec.action, "params": spec.params, "author": "rhythmd",
                      "reason": spec.reason, "diagnosis_id": spec.diagnosis_id},
                     ref_id=rec["id"])
    return row


class Service:
    """The daemon's use cases over one :class:`~rhythmd.store.Store`.

    Analysis runs inside each ingest transaction, under the run's write lock. Analyzers are
    cached per process; the database holds the truth (the diagnoses, and a saved state with
    the sequence number it covers), so a cached analyzer that is behind (another process took
    some batches, or this one restarted) catches up by replaying only the points after it.
    """

    SAVE_EVERY_BATCHES = 64
    SAVE_EVERY_SECONDS = 30.0

    def __init__(self, store: Store, *, analysis: bool = True, cache_size: int = 4096,
                 lost_rule: runs_q.LostRule | None = None,
                 alerts: AlertConfig | None = None, ingest_concurrency: int = 4) -> None:
        self.store = store
        self.alerts = alerts
        self._tokens = TokenVerifier(store)
        self._projects: dict[str, str | None] = {}
        self.lost_rule = lost_rule or runs_q.LostRule()
        self.analysis = analysis
        self._cache: OrderedDict[str, _LiveAnalyzer] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # At most this many batches are being stored at once; more requests wait their turn.
        # With a shared database (PostgreSQL) every transaction waits on a few round trips,
        # and dozens of threads interleaving them on the GIL cost more CPU per batch than
        # they win in overlap; SQLite stores one batch at a time anyway.
        self._ingest_slots = threading.BoundedSemaphore(ingest_concurrency)

    # runs ---------------------------------------------------------------------------------
    def create_run(
        self, name: str, project: str | None = None, config: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None, run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create a run; with an existing ``run_id`` return it instead (created = False)."""
        if run_id is not None and not RUN_ID_RE.match(run_id):
            raise InvalidInputError(("body", "run_id"),
                                    "run_id must be 1-64 characters of A-Z a-z 0-9 _ . -", run_id)
        rid = run_id or uuid.uuid4().hex
        with self.store.write(rid) as conn:
            existing = runs_q.get_run(conn, rid)
            if existing is not None:
                if existing["name"] != name or existing["project"] != project:
                    raise ConflictError(
                        f"run {rid!r} exists with name {existing['name']!r} and project "
                        f"{existing['project']!r}: use another run_id or the same name and project"
                    )
                return self._run_dict(existing), False
            runs_q.insert_run(conn, rid, name, project, config, tags)
            log.info("run created: %s", name, extra={"run_id": rid, "project": project})
            return self._run_dict(runs_q.get_run(conn, rid)), True

    def _run_dict(self, row: Any) -> dict[str, Any]:
        out = runs_q.run_to_dict(row)
        out["state"] = runs_q.display_status(row, self.lost_rule, time.time())
        return out

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return self._run_dict(self._run_row(conn, run_id))

    def list_runs(
        self, project: str | None = None, status: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        with self.store.read() as conn:
            rows, total = runs_q.list_runs(conn, project, status, limit, offset, self.lost_rule)
            return [self._run_dict(r) for r in rows], total

    def finish_run(self, run_id: str, status: str, step: int | None) -> dict[str, Any]:
        if status not in ENDINGS:
            raise InvalidInputError(("body", "status"),
                                    f"status must be one of {', '.join(ENDINGS)}", status)
        with self.store.write(run_id) as conn:
            self._run_row(conn, run_id)
            runs_q.set_status(conn, run_id, status, step)
            recs_q.add_event(conn, run_id, "run_finished", step, {"status": status})
            return self._run_dict(runs_q.get_run(conn, run_id))

    @staticmethod
    def _run_row(conn: Any, run_id: str) -> Any:
        row = runs_q.get_run(conn, run_id)
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found")
        return row

    # metrics ------------------------------------------------------------------------------
    def ingest(self, run_id: str, batch: MetricBatch) -> IngestResult:
        """Store a batch exactly once (idempotent on ``batch_id``), in one transaction under
        the run's write lock, and return the run's pending recommendations."""
        started = time.perf_counter()
        with self._ingest_slots:
            result = self._ingest(run_id, batch)
        self._count(result, time.perf_counter() - started)
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
            with self._ingest_slots, self.store.write_many([r for r, _ in items]) as conn:
                reads = [self._submit_reads(conn, run_id, batch) for run_id, batch in items]
                created = self._create_series(conn, items, reads)
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
                self._count(result, elapsed)
        return out

    def _count(self, result: IngestResult, seconds: float) -> None:
        INGEST_SECONDS.observe(seconds)
        if result.duplicate:
            BATCHES.labels("duplicate").inc()
        else:
            BATCHES.labels("stored").inc()
            POINTS.inc(result.accepted)

    def _ingest(self, run_id: str, batch: MetricBatch) -> IngestResult:
        with self.store.write(run_id, pipelined=True) as conn:
            return self._store_batch(conn, run_id, batch,
                                     self._submit_reads(conn, run_id, batch))

    @staticmethod
    def _create_series(conn: Any, items: Sequence[tuple[str, MetricBatch]],
                       reads: list[_BatchReads]) -> dict[str, dict[str, int]]:
        """The new series of a group's batches, created together (one round trip on
        PostgreSQL, not one per series: a sweep's first batches all bring new ones):
        {run_id: {name: series_id}}. Unknown runs and retried batches create none."""
        wanted: list[tuple[str, str]] = []
        for (run_id, batch), found in zip(items, reads, strict=True):
            if found.series_ids is None or found.run.first() is None:
                continue
            if found.batch is not None and found.batch.first() is not None:
                continue
            wanted.extend((run_id, name) for name in dict.fromkeys(
                points_q.missing_series(conn, run_id, batch.series, found.series_ids)))
        out: dict[str, dict[str, int]] = {}
        if len(wanted) > 1:
            for (run_id, name), sid in points_q.create_series(conn, wanted).items():
                out.setdefault(run_id, {})[name] = sid
        return out

    def _submit_reads(self, conn: Any, run_id: str, batch: MetricBatch) -> _BatchReads:
        """Send the reads a batch needs (they go out together: one round trip on PostgreSQL):
        the run, the batch id, the pending recommendations; when this process's analyzer of
        the run was behind last time (another replica took batches), the batches it has not
        seen; when it has no analyzer of the run yet, the saved state and the batches after
        it; and the run's series ids when some of the batch's are not cached.

        While the run has an open diagnosis, or when the batch carries a validation point, the
        analysis may open or update one and the policy then reads the run's recommendation
        history: all of them are read instead of the pending ones, so that the policy seldom
        waits for a round trip of its own."""
        analyse = self.analysis and bool(batch.series)
        with self._cache_lock:
            live = self._cache.get(run_id)
        cold = None
        if analyse and live is None:
            cold = (analysis_q.submit_load_state(conn, run_id),
                    analysis_q.submit_replay_after_saved_state(conn, run_id))
        history = analyse and live is not None and (
            live.analyzer.has_open_diagnoses() or _evaluates(batch, live.analyzer.cfg))
        return _BatchReads(
            runs_q.submit_get_run(conn, run_id),
            (runs_q.submit_find_batch(conn, run_id, batch.batch_id)
             if batch.batch_id is not None else None),
            recs_q.submit_history(conn, run_id) if history else recs_q.submit_pending(conn, run_id),
            self._submit_replay(conn, run_id) if analyse and live is not None else None,
            points_q.submit_series_ids(conn, run_id, batch.series) if batch.series else None,
            cold, history)

    def _store_batch(self, conn: Any, run_id: str, batch: MetricBatch, reads: _BatchReads,
                     created: dict[str, int] | None = None) -> IngestResult:
        """The batch's writes and analysis, in the caller's transaction under the run's lock
        (``created``: its new series, made by :meth:`_create_series`). Raises
        :class:`NotFoundError` before writing anything when the run does not exist."""
        found_batch, replay = reads.batch, reads.replay
        run = reads.run.first()
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found")
        if found_batch is not None:
            seen = found_batch.first()
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
        health = None
        bound: float | None = None
        change: _PolicyChange | None = None
        if batch.series:
            next_seq = points_q.write_series(conn, run_id, batch.series, seq_start, branch,
                                             reads.series_ids, created)
            if self.analysis:
                health, change, bound = self._analyze(conn, run, batch, seq_start, next_seq,
                                                      start, replay, reads.cold_start,
                                                      reads.recs if reads.history else None)
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
                           interval_s=interval, health=health)
        pending_rows = reads.pending()
        if change is not None:  # read before the policy acted: apply what it did
            pending_rows = [r for r in pending_rows if r["rec_id"] not in change.cancelled]
            pending_rows += change.issued
        pending, expired = recs_q.expire_stale(conn, pending_rows, last_step)
        for rec_id in expired:
            recs_q.add_event(conn, run_id, "recommendation_expired", last_step,
                             {"reason": "expires_at_step passed"}, ref_id=rec_id)
        return IngestResult(n, False, batch_id, seq_start, branch,
                            [recs_q.rec_to_dict(r) for r in pending], bound)

    def list_metrics(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            return [
                {"name": s.name, "points": s.n_points, "nonfinite_points": s.n_nonfinite,
                 "first_step": s.first_step, "last_step": s.last_step}
                for s in points_q.series_infos(conn, run_id)
            ]

    def read_metric(
        self, run_id: str, name: str, *, branch: BranchSelector = "latest",
        start_step: int | None = None, end_step: int | None = None,
        max_points: int | None = None, with_wall_times: bool = False,
    ) -> SeriesView:
        """Read a series: the latest branch's lineage by default, a given branch's lineage,
        or (``"all"``) every point ever stored in arrival order."""
        check_metric_name(name, ("path", "name"))
        with self.store.read() as conn:
            run = self._run_row(conn, run_id)
            info = points_q.series_info(conn, run_id, name)
            if info is None:
                raise NotFoundError(f"run {run_id!r} has no metric {name!r}")
            if branch == "all":
                windows = None
            else:
                wanted = int(run["max_branch"]) if branch == "latest" else int(branch)
                known = {b["branch"] for b in runs_q.list_branches(conn, run_id)}
                if wanted not in known:
                    raise NotFoundError(f"run {run_id!r} has no branch {wanted}")
                windows = points_q.lineage(conn, run_id, wanted)
            pts = points_q.read_points(conn, info.series_id, windows, start_step, end_step,
                                       with_wall_times=with_wall_times)
        steps, values, walls = pts.steps, pts.values, pts.wall_times
        brs = pts.branches if branch == "all" else None
        downsampled = False
        if max_points is not None and pts.size > max_points:
            idx = downsample_indices(steps, values, max_points)
            steps, values = steps[idx], values[idx]
            walls = walls[idx] if walls is not None else None
            brs = brs[idx] if brs is not None else None
            downsampled = True
        return SeriesView(name, branch, steps, values, walls, brs, pts.size, downsampled)

    def list_branches(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            return runs_q.list_branches(conn, run_id)

    # analysis -----------------------------------------------------------------------------
    def _submit_replay(self, conn: Any, run_id: str) -> tuple[int, Deferred] | None:
        """Send the replay query for a cached analyzer that was behind on the run's last batch
        (batches alternating between replicas): (its first sequence number, the rows)."""
        with self._cache_lock:
            live = self._cache.get(run_id)
        if live is None or not live.was_behind:
            return None
        return live.analyzed_seq, analysis_q.submit_replay(conn, run_id, live.analyzed_seq,
                                                           analysis_q.REPLAY_TO_END)

    def _analyzer_for(self, conn: Any, run: Any, upto_seq: int,
                      replay: tuple[int, Deferred] | None = None,
                      cold_start: tuple[Deferred, Deferred] | None = None) -> _LiveAnalyzer:
        """The run's analyzer, fed with every point below ``upto_seq`` (``replay``: a replay
        query already sent, used when it starts where the analyzer stands; ``cold_start``:
        the saved state and the replay after it, already sent, for a new analyzer)."""
        run_id = run["run_id"]
        with self._cache_lock:
            live = self._cache.get(run_id)
            if live is not None:
                self._cache.move_to_end(run_id)
        if live is not None and live.analyzed_seq == upto_seq:
            live.was_behind = False
            return live
        if live is None or live.analyzed_seq > upto_seq:
            config = json.loads(run["config"]) if run["config"] else None
            analyzer = RunAnalyzer(AnalysisConfig.from_run_config(config))
            # a run without points yet (its first batch) has no saved state and nothing to replay
            if cold_start is not None:
                saved = analysis_q.saved_state(cold_start[0])
                replay = (saved[0] if saved is not None else 0, cold_start[1])
            else:
                saved = analysis_q.load_state(conn, run_id) if upto_seq > 0 else None
            analyzed = 0
            if saved is not None and saved[0] <= upto_seq and _restore(analyzer, saved[1]):
                analyzed = saved[0]
            # Runs started together (a sweep) would otherwise all save their state on the same
            # batch: each run starts at its own point of the save cycle.
            phase = zlib.crc32(run_id.encode()) / 2**32
            live = _LiveAnalyzer(analyzer, analyzed,
                                 time.monotonic() - phase * self.SAVE_EVERY_SECONDS,
                                 int(phase * self.SAVE_EVERY_BATCHES))
        if live.analyzed_seq == upto_seq:
            return live
        if replay is not None and replay[0] == live.analyzed_seq:
            batches = analysis_q.stored_batches(replay[1], upto_seq)
        else:
            batches = analysis_q.replay_batches(conn, run_id, live.analyzed_seq, upto_seq)
        for stored in batches:
            live.analyzer.feed(_with_aliases(stored.series, live.analyzer.cfg), stored.branch,
                               stored.branch_start_step)
            live.unsaved_batches += 1
        live.analyzed_seq = upto_seq
        live.was_behind = True
        return live

    def _analyze(self, conn: Any, run: Any, batch: MetricBatch, seq_start: int,
                 next_seq: int, branch_start: int | None,
                 replay: tuple[int, Deferred] | None,
                 cold_start: tuple[Deferred, Deferred] | None = None,
                 history: Deferred | None = None,
                 ) -> tuple[str | None, _PolicyChange | None, float | None]:
        """Feed the batch to the run's analyzer and persist what changed; return the run's new
        health when diagnoses changed (else None), what the policy issued or cancelled (None if
        nothing; ``history``: the run's recommendations, already sent for), and the run's
        blow-up bound for the client's reflex.
        An analysis error is logged and counted; it never loses the batch."""
        run_id = run["run_id"]
        started = time.perf_counter()
        try:
            live = self._analyzer_for(conn, run, seq_start, replay, cold_start)
            # the analyzer saw every stored batch, so its open diagnoses are the stored ones
            before = live.analyzer.open_severities()
            events = live.analyzer.feed(
                _with_aliases({s.name: (s.steps, s.values) for s in batch.series},
                              live.analyzer.cfg),
                                        batch.branch, branch_start)
        except Exception:
            ANALYSIS_ERRORS.inc()
            log.exception("analysis failed; the batch is stored", extra={"run_id": run_id})
            with self._cache_lock:
                self._cache.pop(run_id, None)
            return None, None, None
        ANALYSIS_SECONDS.observe(time.perf_counter() - started)
        live.analyzed_seq = next_seq
        live.unsaved_batches += 1
        if events:
            latest: dict[str, dict[str, Any]] = {}
            for ev in events:
                latest[ev.diagnosis.id] = ev.diagnosis.to_dict()
            analysis_q.upsert_diagnoses(conn, run_id, list(latest.values()))
            # {id: previous severity} of the stored ones whose severity or status changed
            changed = {i: sev for i, sev in before.items() if i in latest
                       and (latest[i]["severity"], latest[i]["status"]) != (sev, "open")}
            for ev in events:
                d = ev.diagnosis
                if ev.type == "updated" and d.id not in changed:
                    continue
                recs_q.add_event(conn, run_id, f"diagnosis_{ev.type}", int(ev.step),
                                 {"kind": d.kind, "severity": d.severity, "message": d.message},
                                 ref_id=d.id)
                log.info("diagnosis %s: %s", ev.type, d.message,
                         extra={"run_id": run_id, "diagnosis_id": d.id, "kind": d.kind,
                                "severity": d.severity, "step": int(ev.step)})
                self._alert_diagnosis(conn, run, ev, changed.pop(d.id, None))
            change = self._recommend(conn, run, live.analyzer, events,
                                     max(int(s.steps.max()) for s in batch.series), history)
        elif history is not None:  # an evaluation: an applied change may be judged now
            change = self._recommend(conn, run, live.analyzer, [],
                                     max(int(s.steps.max()) for s in batch.series), history)
        else:
            change = None
        now = time.monotonic()
        # a diagnosis that opened or closed is saved with its state at once; refreshes of an
        # open one ("updated", every eval while a run stays flat or slow) wait for the regular
        # save (a restart replays the batches after the saved state, and the diagnosis rows
        # are upserted by id, so nothing is lost either way)
        if (any(ev.type != "updated" for ev in events)
                or live.unsaved_batches >= self.SAVE_EVERY_BATCHES
                or now - live.saved_at > self.SAVE_EVERY_SECONDS):
            analysis_q.save_state(conn, run_id, next_seq, live.analyzer.state_dict())
            live.saved_at, live.unsaved_batches = now, 0
        with self._cache_lock:
            self._cache[run_id] = live
            self._cache.move_to_end(run_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        bound = live.analyzer.blowup_bound()
        if not events:
            return None, None, bound
        open_kinds = {d.kind for d in live.analyzer.diagnoses if d.status == "open"}
        return health_of(open_kinds), change, bound

    def _alert_diagnosis(self, conn: Any, run: Any, ev: DiagnosisEvent,
                         old_severity: str | None) -> None:
        """Queue a webhook when a diagnosis opens or escalates at or above the minimum."""
        if self.alerts is None:
            return
        d = ev.diagnosis
        if not should_alert(d.severity, self.alerts.min_severity):
            return
        escalated = (ev.type == "updated" and old_severity is not None
                     and SEVERITY_RANK.get(d.severity, 0) > SEVERITY_RANK.get(old_severity, 0))
        if ev.type == "opened" or escalated:
            outbox_q.enqueue(conn, run["run_id"], f"diagnosis_{ev.type}", encode_nonfinite(
                diagnosis_message(run, ev.type, d.to_dict(), self.alerts.base_url)))

    def _recommend(self, conn: Any, run: Any, analyzer: RunAnalyzer,
                   events: list[DiagnosisEvent], step: int,
                   sent: Deferred | None = None) -> _PolicyChange | None:
        """Ask the policy what answers these diagnosis events; store its recommendations.
        Returns what it issued or cancelled, None if nothing. ``sent``: the run's
        recommendations, already sent for (read here otherwise, only when the policy may
        answer an event)."""
        if not answerable(events) and sent is None:
            return None
        run_id = run["run_id"]
        config = json.loads(run["config"]) if run["config"] else None
        rows = sent.all() if sent is not None else recs_q.list_recommendations(conn, run_id, None)
        history = [recs_q.rec_to_dict(r) for r in rows]
        if not answerable(events) and not any(
                h["action"] in TRIAL_ACTIONS and h["status"] == "applied" for h in history):
            return None  # nothing to answer and no applied change to judge
        ctx = run_context(analyzer, step, history)
        decision = decide(events, ctx, PolicyConfig.from_run_config(config))
        for note in decision.notes:
            log.info("policy: %s", note, extra={"run_id": run_id, "step": step})
        if not (decision.cancel or decision.issue):
            return None
        if decision.cancel:
            recs_q.cancel_pending(conn, run_id, decision.cancel, "superseded by a divergence fix")
        issued = [_issue(conn, run_id, spec, step) for spec in decision.issue]
        issued.sort(key=lambda r: (r["created_at"], r["rec_id"]))  # the order of a read
        return _PolicyChange(issued, list(decision.cancel))

    def list_diagnoses(self, run_id: str, kind: str | None = None, status: str | None = None
                       ) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            return analysis_q.list_diagnoses(conn, run_id, kind, status)

    def schedule(self, run_id: str) -> list[dict[str, Any]]:
        """The LR schedule segments identified so far (saved state plus a replay of the tail)."""
        with self.store.read() as conn:
            run = self._run_row(conn, run_id)
            config = json.loads(run["config"]) if run["config"] else None
            analyzer = RunAnalyzer(AnalysisConfig.from_run_config(config))
            saved = analysis_q.load_state(conn, run_id)
            start = 0
            if saved is not None and _restore(analyzer, saved[1]):
                start = saved[0]
            for stored in analysis_q.replay_batches(conn, run_id, start, int(run["next_seq"])):
                analyzer.feed(_with_aliases(stored.series, analyzer.cfg), stored.branch,
                              stored.branch_start_step)
            return [seg.to_dict() for seg in analyzer.schedule()]

    # recommendations ----------------------------------------------------------------------
    def create_recommendation(
        self, run_id: str, action: str, params: dict[str, Any], *, reason: str,
        author: str, expires_at_step: int | None = None, diagnosis_id: str | None = None,
        report: bool = False,
    ) -> dict[str, Any]:
        """Issue a recommendation (by hand or from the policy); the client applies it. A
        ``report`` records a change the client already made on its own: stored as applied."""
        validate_action(action, params)
        with self.store.write(run_id) as conn:
            run = self._run_row(conn, run_id)
            rec = {
                "id": uuid.uuid4().hex[:16], "run_id": run_id, "action": action,
                "params": params, "reason": reason, "author": author,
                "diagnosis_id": diagnosis_id, "issued_at_step": run["last_step"],
                "expires_at_step": expires_at_step,
            }
            recs_q.insert_recommendation(conn, rec)
            recs_q.add_event(conn, run_id, "recommendation_issued", run["last_step"],
                             {"action": action, "params": params, "author": author,
                              "reason": reason}, ref_id=rec["id"])
            if report:
                recs_q.resolve_recommendation(conn, rec["id"], "applied", run["last_step"],
                                              None, None, "reported by the client")
                recs_q.add_event(conn, run_id, "recommendation_applied", run["last_step"],
                                 {"action": action, "lr_before": None, "lr_after": None,
                                  "note": "reported by the client"}, ref_id=rec["id"])
            return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec["id"]))

    def list_recommendations(self, run_id: str, status: str | None = None) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            return [recs_q.rec_to_dict(r)
                    for r in recs_q.list_recommendations(conn, run_id, status)]

    def ack_recommendation(
        self, run_id: str, rec_id: str, status: str, step: int | None,
        lr_before: list[float] | None, lr_after: list[float] | None, note: str | None,
    ) -> dict[str, Any]:
        """Record what the client did with a recommendation. Acknowledging again with the same
        status is idempotent (a retried request); a different outcome is a conflict."""
        if status not in ("applied", "rejected"):
            raise InvalidInputError(("body", "status"), "status must be applied or rejected",
                                    status)
        for key, lrs in (("lr_before", lr_before), ("lr_after", lr_after)):
            if lrs is not None and not all(math.isfinite(v) and v >= 0 for v in lrs):
                raise InvalidInputError(("body", key), f"{key} must be finite LRs >= 0")
        with self.store.write(run_id) as conn:
            self._run_row(conn, run_id)
            row = recs_q.get_recommendation(conn, run_id, rec_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} has no recommendation {rec_id!r}")
            if row["status"] == status:
                if status == "applied" and row["lr_before"] is None and lr_before is not None:
                    # a client's report (stored as applied) acknowledged with its LRs
                    recs_q.resolve_recommendation(conn, rec_id, status,
                                                  step if step is not None
                                                  else row["applied_step"],
                                                  lr_before, lr_after, note or row["note"])
                    return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))
                return recs_q.rec_to_dict(row)
            if row["status"] not in ("pending", "expired"):
                raise ConflictError(
                    f"recommendation {rec_id!r} is already {row['status']}; it cannot become "
                    f"{status}"
                )
            recs_q.resolve_recommendation(conn, rec_id, status, step, lr_before, lr_after, note)
            resolved = recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))
            if self.alerts is not None:
                run = runs_q.get_run(conn, run_id)
                outbox_q.enqueue(conn, run_id, f"recommendation_{status}",
                                 encode_nonfinite(recommendation_message(run, status, resolved)))
            log.info("recommendation %s: %s (%s)", status, row["action"], note or "",
                     extra={"run_id": run_id, "recommendation_id": rec_id, "step": step})
            recs_q.add_event(conn, run_id, f"recommendation_{status}", step,
                             {"action": row["action"], "lr_before": lr_before,
                              "lr_after": lr_after, "note": note}, ref_id=rec_id)
            spec = fallback(resolved) if status == "rejected" else None
            if spec is not None and not recs_q.list_recommendations(conn, run_id, "pending"):
                # a rollback the client cannot do (no snapshot): the fallback goes out now,
                # not when the divergence happens to be updated again
                at = step if step is not None else resolved.get("issued_at_step") or 0
                _issue(conn, run_id, spec, int(at))
            return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))

    # access -------------------------------------------------------------------------------
    def verify_token(self, token: str) -> Principal | None:
        """The principal of a stored, unrevoked token (a revocation holds at once on SQLite,
        within a second on every PostgreSQL process: ``rhythmd.store.token_watch``)."""
        return self._tokens.verify(token)

    def token_project(self, token_id: str) -> str | None:
        """The project of an active token (None when there is none)."""
        with self.store.read() as conn:
            return tokens_q.token_project(conn, token_id)

    def close(self) -> None:
        """Stop the token revocation watch."""
        self._tokens.close()

    def run_project(self, run_id: str) -> str | None:
        """A run's project (immutable, so cached). Raises NotFoundError."""
        if run_id in self._projects:
            return self._projects[run_id]
        with self.store.read() as conn:
            project = self._run_row(conn, run_id)["project"]
        if len(self._projects) > 100_000:
            self._projects.clear()
        self._projects[run_id] = project
        return project

    def create_token(self, project: str, scope: str, description: str | None = None
                     ) -> dict[str, Any]:
        if scope not in tokens_q.SCOPES:
            raise InvalidInputError(("body", "scope"),
                                    f"scope must be one of {', '.join(tokens_q.SCOPES)}", scope)
        with self.store.write() as conn:
            token_id, token = tokens_q.create_token(conn, project, scope, description)
        log.info("token created", extra={"token_id": token_id, "project": project,
                                         "scope": scope})
        return {"token_id": token_id, "token": token, "project": project, "scope": scope,
                "description": description}

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return tokens_q.list_tokens(conn)

    def revoke_token(self, token_id: str) -> None:
        with self.store.write() as conn:
            if not tokens_q.revoke_token(conn, token_id):
                raise NotFoundError(f"no active token {token_id!r}")
        self._tokens.invalidate()

    # debugging views ----------------------------------------------------------------------
    def summary(self, run_id: str) -> dict[str, Any]:
        """Status, current LR, best/last value of each metric, and counts."""
        with self.store.read() as conn:
            row = self._run_row(conn, run_id)
            metrics = summary_q.series_summary(conn, run_id)
            diags = analysis_q.list_diagnoses(conn, run_id, None, None)
            recs = recs_q.list_recommendations(conn, run_id, None)
        by_status: dict[str, int] = {}
        for r in recs:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        lr = metrics.get("lr", {}).get("last")
        return {
            "run_id": run_id, "name": row["name"], "project": row["project"],
            "status": runs_q.display_status(row, self.lost_rule, time.time()),
            "run_status": row["status"], "health": row["health"],
            "last_step": row["last_step"], "current_lr": lr, "updated_at": row["updated_at"],
            "branch": row["max_branch"], "metrics": metrics,
            "counts": {
                "points": row["n_points"], "batches": row["n_batches"],
                "diagnoses": len(diags),
                "open_diagnoses": sum(1 for d in diags if d.get("status") == "open"),
                "recommendations": by_status,
                "lr_changes_applied": sum(1 for r in recs if r["status"] == "applied"
                                          and r["action"] != "stop"),
                "rollbacks": row["max_branch"],
            },
            "open_diagnoses": [{"id": d["id"], "kind": d["kind"], "severity": d["severity"],
                                "message": d["message"]}
                               for d in diags if d.get("status") == "open"],
        }

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        """Everything that happened to the run, in order: diagnoses, recommendations and what
        the client did with them, rollbacks with the abandoned steps, schedule segments, ends."""
        base = f"/v1/runs/{run_id}"
        with self.store.read() as conn:
            row = self._run_row(conn, run_id)
            events = recs_q.list_events(conn, run_id)
            branch_rows = runs_q.list_branches(conn, run_id)
            rollbacks = []
            for b in branch_rows:
                if b["branch"] == 0 or b["parent_branch"] is None:
                    continue
                until = points_q.abandoned_until(conn, run_id, b["parent_branch"],
                                                 b["created_seq"])
                rollbacks.append((b, until))
        items: list[dict[str, Any]] = []
        for e in events:
            items.append(_timeline_item(base, e))
        for b, until in rollbacks:
            start = b["start_step"]
            span = (f"; steps {start}-{until} of branch {b['parent_branch']} abandoned"
                    if until is not None and start is not None and until >= start else "")
            items.append({
                "kind": "rollback", "step": start, "wall_time": b["created_at"],
                "ref_id": str(b["branch"]),
                "title": f"rolled back: resumed at step {start} on branch {b['branch']}{span}",
                "detail": {"branch": b["branch"], "parent_branch": b["parent_branch"],
                           "resumed_at_step": start, "abandoned_from_step": start,
                           "abandoned_to_step": until},
                "links": {"branches": f"{base}/branches"}})
        items.sort(key=lambda i: (i["wall_time"], i["step"] if i["step"] is not None else -1))
        try:
            segments = self.schedule(run_id)
        except Exception:  # the schedule is a convenience here; never fail the timeline
            log.exception("schedule for the timeline of %s failed", run_id)
            segments = []
        for seg in segments:
            item = {"kind": "schedule_segment", "step": seg["start_step"], "wall_time": None,
                    "ref_id": None,
                    "title": (f"LR {seg['kind']} from step {seg['start_step']} to "
                              f"{seg['end_step']}: {_g(seg['lr_start'])} -> {_g(seg['lr_end'])}"),
                    "detail": seg, "links": {"schedule": f"{base}/schedule"}}
            at = next((i for i, x in enumerate(items)
                       if x["step"] is not None and x["step"] > seg["start_step"]), len(items))
            items.insert(at, item)
        now = time.time()
        if self.lost_rule.is_lost(row, now):
            items.append({"kind": "run_lost", "step": row["last_step"], "wall_time": now,
                          "ref_id": None,
                          "title": f"no data for {now - row['updated_at']:.0f} s: the run looks "
                                   "crashed or preempted", "detail": {}, "links": {}})
        return items

    def get_diagnosis(self, run_id: str, diagnosis_id: str) -> dict[str, Any]:
        for d in self.list_diagnoses(run_id):
            if d["id"] == diagnosis_id:
                return d
        raise NotFoundError(f"run {run_id!r} has no diagnosis {diagnosis_id!r}")

    def get_recommendation(self, run_id: str, rec_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            row = recs_q.get_recommendation(conn, run_id, rec_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} has no recommendation {rec_id!r}")
            return recs_q.rec_to_dict(row)

    def list_events(self, run_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            self._run_row(conn, run_id)
            return recs_q.list_events(conn, run_id)


def _g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _timeline_item(base: str, e: dict[str, Any]) -> dict[str, Any]:
    kind, p, ref = e["kind"], e["payload"], e["ref_id"]
    links: dict[str, str] = {}
    if kind.startswith("diagnosis_"):
        links["diagnosis"] = f"{base}/diagnoses/{ref}"
        verb = kind.split("_", 1)[1]
        title = (f"{p.get('kind')} {verb}"
                 + (f" ({p.get('severity')})" if verb != "closed" else "")
                 + (f": {p.get('message')}" if p.get("message") else ""))
    elif kind == "recommendation_issued":
        links["recommendation"] = f"{base}/recommendations/{ref}"
        if p.get("diagnosis_id"):
            links["diagnosis"] = f"{base}/diagnoses/{p['diagnosis_id']}"
        args = ", ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items())
        title = f"{p.get('author')} recommends {p.get('action')}({args}): {p.get('reason')}"
    elif kind in ("recommendation_applied", "recommendation_rejected",
                  "recommendation_expired"):
        links["recommendation"] = f"{base}/recommendations/{ref}"
        verb = kind.split("_", 1)[1]
        title = f"{p.get('action', 'recommendation')} {verb}"
        if verb == "applied" and p.get("lr_before") is not None:
            title += f": lr {p.get('lr_before')} -> {p.get('lr_after')}"
        if p.get("note"):
            title += f" ({p['note']})"
    elif kind == "run_finished":
        title = f"run ended: {p.get('status')}"
    elif kind == "run_resumed":
        title = f"data again after {p.get('silent_s')} s of silence"
    else:
        title = kind
    return {"kind": kind, "step": e["step"], "wall_time": e["wall_time"], "ref_id": ref,
            "title": title, "detail": p, "links": links}
