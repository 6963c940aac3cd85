"""Alerts: Slack-compatible webhooks sent from the outbox, retried with backoff.

Ingest only inserts an outbox row in its own transaction; this dispatcher thread sends it, so
a slow or dead receiver never blocks ingest, and a row is sent once even with several daemon
processes (see ``rhythmd.store.outbox``).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rhythmd.observability import WEBHOOKS
from rhythmd.store import Store
from rhythmd.store import outbox as outbox_q

log = logging.getLogger("rhythmd.webhooks")
SEVERITY_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Webhook alerts: diagnoses at or above ``min_severity`` (info, warning, high, critical)
    when they open or escalate, and every applied or rejected recommendation."""

    min_severity: str = "warning"
    base_url: str | None = None  # link to the run's page in the message


def diagnosis_message(run: Any, event_type: str, d: dict[str, Any], base_url: str | None
                      ) -> dict[str, Any]:
    """The body for a diagnosis that opened or escalated: ``text`` for Slack, plus fields."""
    name = run["name"]
    verb = "opened" if event_type == "opened" else f"escalated to {d.get('severity')}"
    text = f"[rhythmd] {name}: {d.get('kind')} {verb} at step {d.get('detected_at_step')}: " \
           f"{d.get('message')}"
    if base_url:
        text += f" <{base_url.rstrip('/')}/runs/{run['run_id']}>"
    return {"text": text, "rhythmd": {"event": f"diagnosis_{event_type}",
                                      "run_id": run["run_id"], "run_name": name,
                                      "project": run["project"], "diagnosis": d}}


def recommendation_message(run: Any, status: str, rec: dict[str, Any]) -> dict[str, Any]:
    text = (f"[rhythmd] {run['name']}: {rec.get('action')} {status}"
            + (f" at step {rec.get('applied_step')}" if rec.get("applied_step") is not None
               else "")
            + (f": lr {rec.get('lr_before')} -> {rec.get('lr_after')}"
               if rec.get("lr_after") is not None else "")
            + (f" ({rec.get('note')})" if rec.get("note") else ""))
    return {"text": text, "rhythmd": {"event": f"recommendation_{status}",
                                      "run_id": run["run_id"], "run_name": run["name"],
                                      "project": run["project"], "recommendation": rec}}


class WebhookDispatcher:
    """Sends due outbox rows to ``url``; retries with exponential backoff (1 s, 2 s, 4 s, …
    capped at 5 min) up to ``max_attempts`` tries."""

    def __init__(self, store: Store, url: str, *, max_attempts: int = 8, poll_s: float = 0.5,
                 timeout_s: float = 5.0) -> None:
        self.store = store
        self.url = url
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rhythmd-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 2)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception as exc:  # database away: try again later
                log.warning("webhook dispatch paused: %s", exc)
                sent = 0
            if not sent:
                self._stop.wait(self.poll_s)

    def run_once(self) -> int:
        """Claim and send due rows once; returns how many were tried."""
        with self.store.write() as conn:
            rows = outbox_q.claim(conn, 20, lease_s=self.timeout_s * 3 + 5)
        for outbox_id, attempts, payload in rows:
            error = self._post(payload)
            with self.store.write() as conn:
                if error is None:
                    outbox_q.mark_sent(conn, outbox_id)
                    WEBHOOKS.labels("sent").inc()
                    continue
                tries = attempts + 1
                retry_at = (time.time() + min(2.0 ** (tries - 1), 300.0)
                            if tries < self.max_attempts else None)
                outbox_q.mark_failed(conn, outbox_id, tries, error, retry_at)
                WEBHOOKS.labels("retry" if retry_at is not None else "failed").inc()
                log.warning("webhook %s failed (try %d): %s", outbox_id, tries, error)
        return len(rows)

    def _post(self, payload: str) -> str | None:
        req = urllib.request.Request(self.url, data=payload.encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "rhythmd-webhook"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(exc)


def should_alert(severity: str | None, minimum: str) -> bool:
    return SEVERITY_RANK.get(severity or "info", 0) >= SEVERITY_RANK.get(minimum, 1)

