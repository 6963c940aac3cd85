"""The analysis step of one stored batch: feed the run's analyzer, persist the diagnoses that
changed (rows, timeline events, webhooks), and let the policy answer them.

Runs in the batch's write transaction, in a worker thread. An analysis error is logged and
counted; it never loses the batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent
from rhythmd.analysis.metrics import is_eval_name, with_aliases
from rhythmd.batch import MetricBatch
from rhythmd.core import recommendations as recs
from rhythmd.core.analyzers import AnalyzerCache, ColdStart, analysis_names
from rhythmd.jsonsafe import encode_nonfinite
from rhythmd.observability import ANALYSIS_ERRORS, ANALYSIS_SECONDS
from rhythmd.run_status import health_of
from rhythmd.store import analysis as analysis_q
from rhythmd.store import outbox as outbox_q
from rhythmd.store import recommendations as recs_q
from rhythmd.store.statements import Deferred
from rhythmd.webhooks import SEVERITY_RANK, AlertConfig, diagnosis_message, should_alert

log = logging.getLogger("rhythmd.service")


@dataclass(frozen=True, slots=True)
class AnalysisOutcome:
    """What the analysis of one batch changed."""

    health: str | None  # the run's new health when diagnoses changed, else None
    change: recs.PolicyChange | None  # what the policy issued or cancelled
    blowup_bound: float | None  # train loss above which one step is a blow-up


NOTHING = AnalysisOutcome(None, None, None)


def evaluates(batch: MetricBatch, cfg: AnalysisConfig) -> bool:
    """Whether the batch carries a validation point (where diagnoses open and update)."""
    names = {cfg.val_metric, cfg.aux_val_metric, *cfg.roles}
    return any(s.name in names or is_eval_name(s.name) for s in batch.series)


def analyse_batch(conn: Any, cache: AnalyzerCache, alerts: AlertConfig | None, run: Any,
                  batch: MetricBatch, seq_start: int, next_seq: int, branch_start: int | None,
                  replay: tuple[int, analysis_q.Replay] | None, cold_start: ColdStart | None = None,
                  history: Deferred | None = None) -> AnalysisOutcome:
    """Feed the batch (stored at ``[seq_start, next_seq)``) to the run's analyzer and persist
    what changed. ``replay`` / ``cold_start``: the catch-up reads already sent;
    ``history``: the run's recommendations, already sent for."""
    run_id = run["run_id"]
    started = time.perf_counter()
    try:
        live = cache.analyzer_for(conn, run, seq_start, replay, cold_start)
        # the analyzer saw every stored batch, so its open diagnoses are the stored ones
        before = live.analyzer.open_severities()
        events = live.analyzer.feed(
            with_aliases({s.name: (s.steps, s.values) for s in batch.series},
                         analysis_names(live.analyzer.cfg)),
            batch.branch, branch_start)
    except Exception:
        ANALYSIS_ERRORS.inc()
        log.exception("analysis failed; the batch is stored", extra={"run_id": run_id})
        cache.drop(run_id)
        return NOTHING
    ANALYSIS_SECONDS.observe(time.perf_counter() - started)
    live.analyzed_seq = next_seq
    live.unsaved_batches += 1
    step = max(int(s.steps.max()) for s in batch.series)
    change = None
    if events or history is not None:  # with no events, an applied change may be judged now
        if events:
            _record(conn, run, events, before, alerts)
        change = recs.recommend(conn, run, live.analyzer, events, step, history)
    # the state is saved on its regular cadence, whatever the events: the diagnosis rows and
    # events above are what readers see, and a restart replays the batches after the saved
    # state (diagnosis ids are deterministic, rows upserted by id: nothing lost or doubled)
    cache.save_if_due(conn, run_id, live)
    cache.keep(run_id, live)
    bound = live.analyzer.blowup_bound()
    if not events:
        return AnalysisOutcome(None, None, bound)
    open_kinds = {d.kind for d in live.analyzer.diagnoses if d.status == "open"}
    return AnalysisOutcome(health_of(open_kinds), change, bound)


def _record(conn: Any, run: Any, events: list[DiagnosisEvent], before: dict[str, str],
            alerts: AlertConfig | None) -> None:
    """Upsert the diagnoses the events touched; an event and an alert for each that opened,
    closed, or changed severity (``before``: the open ones' severities before the batch)."""
    run_id = run["run_id"]
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
        _alert(conn, run, ev, changed.pop(d.id, None), alerts)


def _alert(conn: Any, run: Any, ev: DiagnosisEvent, old_severity: str | None,
           alerts: AlertConfig | None) -> None:
    """Queue a webhook when a diagnosis opens or escalates at or above the minimum."""
    if alerts is None:
        return
    d = ev.diagnosis
    if not should_alert(d.severity, alerts.min_severity):
        return
    escalated = (ev.type == "updated" and old_severity is not None
                 and SEVERITY_RANK.get(d.severity, 0) > SEVERITY_RANK.get(old_severity, 0))
    if ev.type == "opened" or escalated:
        outbox_q.enqueue(conn, run["run_id"], f"diagnosis_{ev.type}", encode_nonfinite(
            diagnosis_message(run, ev.type, d.to_dict(), alerts.base_url)))
