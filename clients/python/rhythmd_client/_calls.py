"""One daemon request at a time: outcome, retry backoff and the daemon's reachability.

:class:`Caller` wraps an :class:`~rhythmd_client._http.HTTPTransport`. Each call returns a
:class:`Reply` holding everything the caller needs (outcome, HTTP status, JSON); nothing is
left behind in attributes to be read afterwards except the backoff deadline and the
reachability summary (``daemon_up``, ``last_error``). Used by the sender thread only.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from typing import Any, NamedTuple

from rhythmd_client._http import HTTPTransport
from rhythmd_client._wire import decode

log = logging.getLogger("rhythmd_client")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Outcome(enum.Enum):
    """``OK`` (2xx), ``RETRY`` (no answer or a transient status: backoff set), ``NOT_FOUND``
    (a missing run or recommendation), ``FAIL`` (refused; not retried)."""

    OK = "ok"
    RETRY = "retry"
    FAIL = "fail"
    NOT_FOUND = "not_found"


class Reply(NamedTuple):
    """A call's result: its outcome, the HTTP status (0: no answer) and the JSON body."""

    outcome: Outcome
    status: int
    data: Any = None


class Caller:
    """Sends requests, classifies answers, and spaces retries with jittered exponential
    backoff from ``backoff_s`` up to ``backoff_max_s`` seconds (a ``Retry-After`` is honoured
    up to three times ``backoff_max_s``). ``counts`` receives ``retried`` and ``errors``."""

    def __init__(self, http: HTTPTransport, counts: dict[str, int], *, url: str,
                 backoff_s: float = 0.25, backoff_max_s: float = 10.0) -> None:
        self.http = http
        self.counts = counts
        self.url = url
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.daemon_up: bool | None = None
        self.last_error: str | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._down_logged = False

    def waiting(self) -> bool:
        """Whether the backoff after a failed call is still running."""
        return time.monotonic() < self._retry_at

    def call(self, method: str, path: str, body: bytes | None,
             quiet_status: tuple[int, ...] = ()) -> Reply:
        """One request. Statuses in ``quiet_status`` fail without a warning (and a 404 among
        them reads as ``NOT_FOUND``; a 404 on ``/metrics`` or ``/ack`` always does)."""
        retry_after: float | None = None
        try:
            status, raw, retry_after = self.http.request(method, path, body)
        except OSError as exc:
            status, raw = 0, b""
            self.last_error = f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            if self._down_logged:
                log.warning("rhythmd daemon reachable again at %s", self.url)
            self._down_logged = False
            self.daemon_up = True
            self._failures = 0
            return Reply(Outcome.OK, status, decode(raw))
        if status == 0 or status in RETRY_STATUSES:
            self._backoff(status, method, path, retry_after)
            return Reply(Outcome.RETRY, status)
        self.daemon_up = True
        self.last_error = f"HTTP {status} on {method} {path}: {raw[:200]!r}"
        if status == 404 and (404 in quiet_status or "/metrics" in path or "/ack" in path):
            return Reply(Outcome.NOT_FOUND, status)
        if status not in quiet_status:
            self.counts["errors"] += 1
            log.warning("rhythmd request failed: %s", self.last_error)
        return Reply(Outcome.FAIL, status)

    def _backoff(self, status: int, method: str, path: str, retry_after: float | None) -> None:
        if status:
            self.last_error = f"HTTP {status} on {method} {path}"
        else:
            self.daemon_up = False
        self.counts["retried"] += 1
        self._failures += 1
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** min(self._failures - 1, 20))
        delay = random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s * 3))
        self._retry_at = time.monotonic() + delay
        if not self._down_logged:
            log.warning("rhythmd daemon unavailable (%s); buffering and retrying",
                        self.last_error)
            self._down_logged = True
