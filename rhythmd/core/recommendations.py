"""Recommendations: issue, cancel, expire and resolve, with their statuses' transitions.

Each operation runs in the caller's write transaction and writes the recommendation's row and
its timeline event, plus a webhook (outbox row) where alerts are on and the operation has one.
The statuses move only along :data:`TRANSITIONS`.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from rhythmd.analysis import DiagnosisEvent, RunAnalyzer
from rhythmd.core.runs import run_row
from rhythmd.errors import ConflictError, InvalidInputError, NotFoundError
from rhythmd.jsonsafe import encode_nonfinite
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
from rhythmd.store import Store
from rhythmd.store import outbox as outbox_q
from rhythmd.store import recommendations as recs_q
from rhythmd.store import runs as runs_q
from rhythmd.store.statements import Deferred
from rhythmd.webhooks import AlertConfig, recommendation_message

log = logging.getLogger("rhythmd.service")

PENDING, APPLIED, REJECTED, EXPIRED = "pending", "applied", "rejected", "expired"
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPLIED, REJECTED, EXPIRED}),
    APPLIED: frozenset(),
    REJECTED: frozenset(),
    EXPIRED: frozenset({APPLIED, REJECTED}),  # the client may still report what it did
}
"""Status -> the statuses it may move to. Recommendations are issued ``pending``; the client
acknowledges them ``applied`` or ``rejected``; the daemon expires pending ones (a newer fix
supersedes them, or their ``expires_at_step`` passed)."""
CLIENT_OUTCOMES = (APPLIED, REJECTED)
"""What a client may acknowledge a recommendation with."""


def can_become(current: str, new: str) -> bool:
    """Whether a recommendation in status ``current`` may move to ``new``."""
    return new in TRANSITIONS.get(current, frozenset())


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What the policy did to a run's recommendations in one batch."""

    issued: list[dict[str, Any]]  # the new rows, oldest first
    cancelled: list[str]  # ids of pending ones it expired


def issue(conn: Any, run_id: str, action: str, params: dict[str, Any], *, reason: str,
          author: str, step: int | None, diagnosis_id: str | None = None,
          expires_at_step: int | None = None, event_names_diagnosis: bool = False,
          ) -> dict[str, Any]:
    """Store a new pending recommendation and its ``recommendation_issued`` event; return the
    row. ``event_names_diagnosis``: the event carries ``diagnosis_id`` (the policy's do)."""
    validate_action(action, params)
    rec = {"id": uuid.uuid4().hex[:16], "run_id": run_id, "action": action, "params": params,
           "reason": reason, "author": author, "diagnosis_id": diagnosis_id,
           "issued_at_step": step, "expires_at_step": expires_at_step}
    row = recs_q.insert_recommendation(conn, rec)
    log.info("recommendation issued: %s %s", action, params,
             extra={"run_id": run_id, "recommendation_id": rec["id"], "step": step})
    payload: dict[str, Any] = {"action": action, "params": params, "author": author,
                               "reason": reason}
    if event_names_diagnosis:
        payload["diagnosis_id"] = diagnosis_id
    recs_q.add_event(conn, run_id, "recommendation_issued", step, payload, ref_id=rec["id"])
    return row


def issue_spec(conn: Any, run_id: str, spec: RecommendationSpec, step: int) -> dict[str, Any]:
    """Store one recommendation of the policy (author ``rhythmd``)."""
    return issue(conn, run_id, spec.action, spec.params, reason=spec.reason, author="rhythmd",
                 step=step, diagnosis_id=spec.diagnosis_id,
                 expires_at_step=spec.expires_at_step, event_names_diagnosis=True)


def record_report(conn: Any, run_id: str, rec_id: str, action: str, step: int | None) -> None:
    """A change the client made on its own, issued just now: pending -> applied."""
    note = "reported by the client"
    recs_q.resolve_recommendation(conn, rec_id, APPLIED, step, None, None, note)
    recs_q.add_event(conn, run_id, "recommendation_applied", step,
                     {"action": action, "lr_before": None, "lr_after": None, "note": note},
                     ref_id=rec_id)


def cancel(conn: Any, run_id: str, rec_ids: list[str], note: str) -> None:
    """Pending -> expired for recommendations a newer one supersedes (row only: the newer
    one's ``recommendation_issued`` event tells the story)."""
    recs_q.cancel_pending(conn, run_id, rec_ids, note)


def expire_stale(conn: Any, run_id: str, pending: list[Any], step: int | None) -> list[Any]:
    """Pending -> expired for the ``pending`` rows whose ``expires_at_step`` is below ``step``,
    each with its event; returns the rows still pending."""
    still, expired = recs_q.expire_stale(conn, pending, step)
    for rec_id in expired:
        recs_q.add_event(conn, run_id, "recommendation_expired", step,
                         {"reason": "expires_at_step passed"}, ref_id=rec_id)
    return still


def check_outcome(status: str, lr_before: list[float] | None, lr_after: list[float] | None
                  ) -> None:
    """Validate a client's acknowledgement (422 naming the field)."""
    if status not in CLIENT_OUTCOMES:
        raise InvalidInputError(("body", "status"), "status must be applied or rejected", status)
    for key, lrs in (("lr_before", lr_before), ("lr_after", lr_after)):
        if lrs is not None and not all(math.isfinite(v) and v >= 0 for v in lrs):
            raise InvalidInputError(("body", key), f"{key} must be finite LRs >= 0")


def resolve(conn: Any, run_id: str, rec_id: str, status: str, step: int | None,
            lr_before: list[float] | None, lr_after: list[float] | None, note: str | None,
            alerts: AlertConfig | None) -> dict[str, Any]:
    """Record what the client did with a recommendation (``applied`` or ``rejected``) and
    return it. The same status again is idempotent (a retried request); a move that
    :data:`TRANSITIONS` does not allow is a conflict. A rejected divergence fix that has a
    fallback gets it issued at once."""
    row = recs_q.get_recommendation(conn, run_id, rec_id)
    if row is None:
        raise NotFoundError(f"run {run_id!r} has no recommendation {rec_id!r}")
    if row["status"] == status:
        if status == APPLIED and row["lr_before"] is None and lr_before is not None:
            # a client's report (stored as applied) acknowledged with its LRs
            recs_q.resolve_recommendation(conn, rec_id, status,
                                          step if step is not None else row["applied_step"],
                                          lr_before, lr_after, note or row["note"])
            return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))
        return recs_q.rec_to_dict(row)
    if not can_become(row["status"], status):
        raise ConflictError(f"recommendation {rec_id!r} is already {row['status']}; it cannot "
                            f"become {status}")
    recs_q.resolve_recommendation(conn, rec_id, status, step, lr_before, lr_after, note)
    resolved = recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))
    if alerts is not None:
        run = runs_q.get_run(conn, run_id).first()
        outbox_q.enqueue(conn, run_id, f"recommendation_{status}",
                         encode_nonfinite(recommendation_message(run, status, resolved)))
    log.info("recommendation %s: %s (%s)", status, row["action"], note or "",
             extra={"run_id": run_id, "recommendation_id": rec_id, "step": step})
    recs_q.add_event(conn, run_id, f"recommendation_{status}", step,
                     {"action": row["action"], "lr_before": lr_before, "lr_after": lr_after,
                      "note": note}, ref_id=rec_id)
    spec = fallback(resolved) if status == REJECTED else None
    if spec is not None and not recs_q.list_recommendations(conn, run_id, PENDING).all():
        # a rollback the client cannot do (no snapshot): the fallback goes out now, not when
        # the divergence happens to be updated again
        at = step if step is not None else resolved.get("issued_at_step") or 0
        issue_spec(conn, run_id, spec, int(at))
    return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, rec_id))


def recommend(conn: Any, run: Any, analyzer: RunAnalyzer, events: list[DiagnosisEvent],
              step: int, sent: Deferred | None = None) -> PolicyChange | None:
    """Ask the policy what answers these diagnosis events; store what it issues and cancel
    what it supersedes. Returns the change, None if nothing. ``sent``: the run's
    recommendations, already sent for (read here otherwise, only when the policy may answer
    an event)."""
    if not answerable(events) and sent is None:
        return None
    run_id = run["run_id"]
    rows = (sent if sent is not None else recs_q.list_recommendations(conn, run_id, None)).all()
    if not answerable(events) and not any(
            r["action"] in TRIAL_ACTIONS and r["status"] == APPLIED for r in rows):
        return None  # nothing to answer and no applied change to judge
    history = [recs_q.rec_to_dict(r) for r in rows]
    config = json.loads(run["config"]) if run["config"] else None
    decision = decide(events, run_context(analyzer, step, history),
                      PolicyConfig.from_run_config(config))
    for note in decision.notes:
        log.info("policy: %s", note, extra={"run_id": run_id, "step": step})
    if not (decision.cancel or decision.issue):
        return None
    if decision.cancel:
        cancel(conn, run_id, list(decision.cancel), "superseded by a divergence fix")
    issued = [issue_spec(conn, run_id, spec, step) for spec in decision.issue]
    issued.sort(key=lambda r: (r["created_at"], r["rec_id"]))  # the order of a read
    return PolicyChange(issued, list(decision.cancel))


class Recommendations:
    """The recommendation use cases that own a transaction: issue by hand (or record a
    client's report), and acknowledge."""

    def __init__(self, store: Store, alerts: AlertConfig | None = None) -> None:
        self.store = store
        self.alerts = alerts

    def create(self, run_id: str, action: str, params: dict[str, Any], *, reason: str,
               author: str, expires_at_step: int | None = None,
               diagnosis_id: str | None = None, report: bool = False) -> dict[str, Any]:
        """Issue a recommendation by hand; the client applies it. A ``report`` records a
        change the client already made on its own: stored as applied."""
        validate_action(action, params)
        with self.store.write(run_id) as conn:
            step = run_row(conn, run_id)["last_step"]
            row = issue(conn, run_id, action, params, reason=reason, author=author, step=step,
                        diagnosis_id=diagnosis_id, expires_at_step=expires_at_step)
            if report:
                record_report(conn, run_id, row["rec_id"], action, step)
            return recs_q.rec_to_dict(recs_q.get_recommendation(conn, run_id, row["rec_id"]))

    def acknowledge(self, run_id: str, rec_id: str, status: str, step: int | None,
                    lr_before: list[float] | None, lr_after: list[float] | None,
                    note: str | None) -> dict[str, Any]:
        """Record what the client did with a recommendation (see :func:`resolve`)."""
        check_outcome(status, lr_before, lr_after)
        with self.store.write(run_id) as conn:
            run_row(conn, run_id)
            return resolve(conn, run_id, rec_id, status, step, lr_before, lr_after, note,
                           self.alerts)
