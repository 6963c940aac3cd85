"""The sender thread: batching, run creation, spooling, acks/reports and recommendation intake.

:class:`Mailbox` is all the state the training thread and the sender thread share: the
training thread only appends to its ``collections.deque`` objects (atomic in CPython) and
reads or sets plain attributes, so it never waits for the network or for a lock held across
I/O. :class:`Sender` is everything else, touched by the sender thread only.

Units: times are seconds, sizes are points (one value of one series at one step); counters
count points (``sent``, ``dropped``, ``spooled``) or requests (``retried``, ``errors``).
"""

from __future__ import annotations

import array
import collections
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rhythmd_client._buffer import is_finite_all, resolve
from rhythmd_client._calls import Caller, Outcome
from rhythmd_client._spool import Spool, parse
from rhythmd_client._wire import Batch, Chunk, encode

log = logging.getLogger("rhythmd_client")

COUNTERS = ("sent", "dropped", "retried", "errors", "spooled", "spool_uploaded", "batches",
            "duplicates", "recommendations", "internal_errors")


class Mailbox:
    """What crosses between the training thread (T) and the sender thread (S).

    T -> S: ``inbound`` chunks, ``acks`` ``(rec_id, body)``, ``reports`` ``(create, ack)``,
    ``produced``/``dropped_early`` (points handed over / dropped before the sender saw them),
    ``watch_loss`` (bound to check tensor losses against; None: don't), ``finish`` and
    ``close_deadline`` (monotonic s) once closing, ``attach_to`` (a run id to continue, set
    by a resumed hook). S -> T: ``recs`` and ``has_recs``,
    ``consumed``, ``loss_finite``, ``blowup_bound`` (the daemon's, absolute loss), ``bad_loss``
    ((branch, step) of the first loss beyond ``watch_loss``; T clears it).
    """

    def __init__(self) -> None:
        self.inbound: collections.deque[Chunk] = collections.deque()
        self.acks: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self.reports: collections.deque[tuple[dict[str, Any], dict[str, Any]]] = \
            collections.deque()
        self.recs: collections.deque[dict[str, Any]] = collections.deque()
        self.has_recs = False
        self.produced = 0
        self.dropped_early = 0
        self.consumed = 0
        self.loss_finite: bool | None = None
        self.blowup_bound: float | None = None
        self.watch_loss: float | None = None
        self.bad_loss: tuple[int, int] | None = None
        self.finish: tuple[str, int | None] | None = None
        self.attach_to: str | None = None
        self.close_deadline = 0.0
        self.wake = threading.Event()

    @property
    def closing(self) -> bool:
        """Whether the training thread asked the sender to finish."""
        return self.finish is not None


class Sender:
    """Runs rounds on the sender thread until closed: see :meth:`run`.

    ``run_body`` is the ``POST /v1/runs`` document (its ``run_id`` is kept, or replaced by
    the daemon's); ``attach``: an existing run with other metadata is used anyway (409).
    ``Mailbox.attach_to`` switches to another existing run (a resumed job's) at the next
    round; the run is then attached to (created with that id if the daemon lost it).
    """

    def __init__(self, mailbox: Mailbox, caller: Caller, *, run_body: dict[str, Any],
                 attach: bool, spool: Spool | None, interval_s: float, poll_s: float,
                 max_points: int, max_batch_points: int, compact: bool,
                 on_recommendation: Callable[[], None] | None,
                 on_round: Callable[[], None] | None) -> None:
        self.mb = mailbox
        self.caller = caller
        self.run_body = run_body
        self.run_id: str = run_body["run_id"]
        self.attach = attach
        self.spool = spool
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.max_points = max_points
        self.max_batch_points = max_batch_points
        self.compact = compact
        self.on_recommendation = on_recommendation
        self.on_round = on_round
        self.counts = caller.counts
        self.pending: collections.deque[Batch] = collections.deque()
        self.pending_points = 0
        self._batch_seq = 0
        self._session = uuid.uuid4().hex[:12]
        self.run_ready = False
        self.dead = False
        self._last_recs_at = 0.0
        self._seen_recs: set[str] = set()
        self._logged_errors: set[str] = set()

    def run(self) -> None:
        """The thread's body: a round every ``interval_s`` (or when woken) until closed."""
        wake = self.mb.wake
        while True:
            closing = self.mb.closing
            try:
                self._round()
            except Exception as exc:  # never let the thread die
                self.internal_error("sender", exc)
            if closing:
                if self._closing_done():
                    break
                wake.wait(0.02)
            else:
                wake.wait(self.interval_s)
            wake.clear()
        try:
            self._shutdown()
        except Exception as exc:
            self.internal_error("shutdown", exc)

    def _closing_done(self) -> bool:
        mb = self.mb
        if time.monotonic() >= mb.close_deadline or self.dead:
            return True
        idle = not mb.inbound and not self.pending and not mb.acks and not mb.reports
        return idle and not (self.spool is not None and self.spool.dirty)

    def _past_deadline(self) -> bool:
        return self.mb.closing and time.monotonic() >= self.mb.close_deadline

    def _round(self) -> None:
        if self.on_round is not None and not self.mb.closing:
            self.on_round()
        self._drain()
        self._enforce_bound()
        if self.mb.attach_to is not None:
            self._switch_run(self.mb.attach_to)
        if self.dead or self.caller.waiting():
            return
        if not self.run_ready and not self._create_run():
            return
        if self.spool is not None and self.spool.dirty and not self._upload_spool():
            return
        if not self._send_reports() or not self._send_acks() or not self._send_batches():
            return
        if time.monotonic() - self._last_recs_at >= self.poll_s:
            self._poll_recommendations()

    def _switch_run(self, run_id: str) -> None:
        """Continue the run ``run_id`` (attach to it) from now on."""
        self.mb.attach_to = None
        if run_id != self.run_id:
            self.run_id = self.run_body["run_id"] = run_id
            self.attach = True
            self.run_ready = False

    # ------------------------------------------------------------------ intake
    def _drain(self) -> None:
        mb = self.mb
        while True:
            try:
                chunk = mb.inbound.popleft()
            except IndexError:
                return
            resolved = []
            for name, steps, frozen, walls in chunk.series:
                try:
                    values = resolve(frozen)
                except Exception as exc:  # unreadable values: lose this series, keep going
                    self.internal_error("resolve", exc)
                    self.counts["dropped"] += len(steps)
                    continue
                if values is None:  # device copy still in flight: keep order, retry later
                    mb.inbound.appendleft(chunk)
                    return
                resolved.append((name, steps, values, walls))
                if name == "loss":
                    mb.loss_finite = is_finite_all(values)
                    bound = mb.watch_loss
                    if bound is not None and not isinstance(frozen, array.array):
                        self._watch(chunk.branch, steps, values, bound)
            mb.consumed += chunk.points
            self._batch(chunk, resolved)

    def _batch(self, chunk: Chunk, resolved: list[tuple[str, list[int], Any, list[float]]]
               ) -> None:
        last = self.pending[-1] if self.pending else None
        if (last is None or last.attempted or last.branch != chunk.branch
                or last.points + chunk.points > self.max_batch_points):
            self._batch_seq += 1
            last = Batch(f"{self._session}-{self._batch_seq}", chunk.branch, chunk.branch_start)
            self.pending.append(last)
        before = last.points
        for name, steps, values, walls in resolved:
            try:
                last.add(name, steps, values, walls)
            except Exception as exc:
                self.internal_error("batch", exc)
                self.counts["dropped"] += len(steps)
        self.pending_points += last.points - before

    def _watch(self, branch: int, steps: Any, values: Any, bound: float) -> None:
        """Note the first loss that is not finite or above ``bound`` (tensor losses: the hook
        checked floats itself) and wake the hook."""
        if self.mb.bad_loss is not None:
            return
        for st, v in zip(steps, values, strict=False):
            if v is not None and not -math.inf < v <= bound:
                self.mb.bad_loss = (branch, int(st))
                if self.on_recommendation is not None:
                    self.on_recommendation()
                return

    def _enforce_bound(self) -> None:
        while self.pending_points > self.max_points and len(self.pending) > 1:
            self._discard(self.pending.popleft())

    def _discard(self, batch: Batch) -> None:
        """Spool a batch (when configured) or count it as dropped."""
        self.pending_points -= batch.points
        if self.spool is not None and self._spool_write([batch]):
            return
        self.counts["dropped"] += batch.points

    def _spool_write(self, batches: list[Batch]) -> bool:
        assert self.spool is not None
        try:
            self.counts["spooled"] += self.spool.append(
                self.run_id, ((b.points, b.encode(self.compact)) for b in batches))
        except OSError as exc:
            self.internal_error("spool", exc)
            return False
        return True

    # ------------------------------------------------------------------ requests
    def _upload_spool(self) -> bool:
        assert self.spool is not None
        lines = self.spool.lines()
        ok = True
        done = 0
        for line in lines:
            if self._past_deadline():
                break
            try:  # the body is sent as stored, unparsed
                item = parse(line)
            except ValueError as exc:
                self.internal_error("spool-parse", exc)
                done += 1
                continue
            rid = item.run_id or self.run_id
            reply = self.caller.call("POST", f"/v1/runs/{rid}/metrics", item.body)
            if reply.outcome is Outcome.RETRY:
                ok = False
                break
            if reply.outcome is Outcome.OK:
                self.counts["sent"] += item.points
                self.counts["spool_uploaded"] += item.points
                if rid == self.run_id:
                    self._take_recs(reply.data)
            else:
                self.counts["dropped"] += item.points
            done += 1
        if lines or self.spool.dirty:  # also clears a file of blank lines
            self.spool.keep(lines[done:])
        return ok

    def _create_run(self) -> bool:
        reply = self.caller.call("POST", "/v1/runs", encode(self.run_body), quiet_status=(409,))
        if reply.outcome is Outcome.OK:
            data = reply.data
            if isinstance(data, dict) and isinstance(data.get("run_id"), str):
                self.run_id = data["run_id"]
            self.run_ready = True
            log.info("rhythmd run %s ready at %s", self.run_id, self.caller.url)
            return True
        if reply.outcome is Outcome.FAIL:
            if reply.status == 409 and self.attach:
                log.warning("run %s exists with other metadata; attaching anyway", self.run_id)
                self.run_ready = True
                return True
            log.error("rhythmd refused to create the run (%s); metrics will not be sent",
                      self.caller.last_error)
            self.dead = True
        return False

    def _send_reports(self) -> bool:
        reports = self.mb.reports
        while reports:
            create, ack = reports[0]
            reply = self.caller.call("POST", f"/v1/runs/{self.run_id}/recommendations",
                                     encode(create))
            if reply.outcome is Outcome.RETRY:
                return False
            reports.popleft()
            rid = reply.data.get("id") if isinstance(reply.data, dict) else None
            if reply.outcome is not Outcome.OK or not isinstance(rid, str):
                continue  # refused (e.g. a token without "steer"): logged by the caller
            self._seen_recs.add(rid)  # ours: never applied again from a pending list
            self.mb.acks.append((rid, ack))
        return True

    def _send_acks(self) -> bool:
        acks = self.mb.acks
        while acks:
            rec_id, body = acks[0]
            reply = self.caller.call(
                "POST", f"/v1/runs/{self.run_id}/recommendations/{rec_id}/ack", encode(body))
            if reply.outcome is Outcome.RETRY:
                return False
            acks.popleft()  # applied, or unknown to the daemon (404): done either way
        return True

    def _send_batches(self) -> bool:
        budget = len(self.pending)  # then return, so acks and polls get their turn
        while self.pending and budget > 0 and not self._past_deadline():
            budget -= 1
            self._drain()  # between requests: merge new points, keep the bound
            self._enforce_bound()
            batch = self.pending[0]
            batch.attempted = True
            try:
                body = batch.encode(self.compact)
            except Exception as exc:  # never let one bad batch block the queue
                self.internal_error("encode", exc)
                self._drop_first()
                continue
            reply = self.caller.call("POST", f"/v1/runs/{self.run_id}/metrics", body)
            if reply.outcome is Outcome.RETRY:
                return False
            if reply.outcome is Outcome.NOT_FOUND:
                self.run_ready = False  # re-create the run (same id), then resend
                return False
            if reply.outcome is not Outcome.OK:
                if reply.status == 413 and batch.points > 1:
                    log.warning("batch of %d points too large for the daemon; lower "
                                "max_batch_points", batch.points)
                self._drop_first()
                continue
            self.pending.popleft()
            self.pending_points -= batch.points
            self.counts["sent"] += batch.points
            self.counts["batches"] += 1
            if isinstance(reply.data, dict) and reply.data.get("duplicate"):
                self.counts["duplicates"] += 1
            self._take_recs(reply.data)
        return True

    def _drop_first(self) -> None:
        batch = self.pending.popleft()
        self.pending_points -= batch.points
        self.counts["dropped"] += batch.points

    def _poll_recommendations(self) -> None:
        reply = self.caller.call(
            "GET", f"/v1/runs/{self.run_id}/recommendations?status=pending", None)
        if reply.outcome is Outcome.OK:
            self._take_recs(reply.data)
        elif reply.outcome is Outcome.FAIL:
            self._last_recs_at = time.monotonic() + 60.0  # endpoint missing: poll rarely

    def _take_recs(self, data: Any) -> None:
        self._last_recs_at = time.monotonic()
        if isinstance(data, dict) and "blowup_bound" in data:
            self._take_bound(data["blowup_bound"])
        recs = data.get("recommendations") if isinstance(data, dict) else None
        if not recs:
            return
        new = False
        for rec in recs:
            if not isinstance(rec, dict):
                continue
            params = rec.get("params")
            if isinstance(params, dict) and "blowup_bound" in params:
                self._take_bound(params["blowup_bound"])
            rid = rec.get("id")
            if not isinstance(rid, str) or rid in self._seen_recs:
                continue
            if rec.get("status", "pending") != "pending":
                continue
            self._seen_recs.add(rid)
            self.mb.recs.append(rec)
            self.counts["recommendations"] += 1
            new = True
        if new:
            self.mb.has_recs = True
            if self.on_recommendation is not None:
                self.on_recommendation()

    def _take_bound(self, value: Any) -> None:
        """Keep the daemon's blow-up bound when it is a finite number (None clears it); wake
        the hook when it changed."""
        old = self.mb.blowup_bound
        if value is None:
            self.mb.blowup_bound = None
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value)):
            self.mb.blowup_bound = float(value)
        if self.mb.blowup_bound != old and self.on_recommendation is not None:
            self.on_recommendation()  # the hook takes it at its next step boundary

    # ------------------------------------------------------------------ end
    def _shutdown(self) -> None:
        mb = self.mb
        self._drain()
        if mb.inbound:  # device copies that never completed: give them a moment
            deadline = time.monotonic() + 1.0
            while mb.inbound and time.monotonic() < deadline:
                time.sleep(0.005)
                self._drain()
        leftover = list(self.pending)
        self.pending.clear()
        inflight = sum(c.points for c in mb.inbound)
        mb.inbound.clear()
        self.counts["dropped"] += inflight
        if leftover and not (self.spool is not None and self._spool_write(leftover)):
            self.counts["dropped"] += sum(b.points for b in leftover)
        self.pending_points = 0
        if mb.finish is not None and self.run_ready and self.caller.daemon_up:
            status, step = mb.finish
            self.caller.call("POST", f"/v1/runs/{self.run_id}/finish",
                             encode({"status": status, "step": step}), quiet_status=(404, 405))
        self.caller.http.close()

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Count a client bug and log it once per place and exception type."""
        self.counts["internal_errors"] += 1
        self.counts["errors"] += 1
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            log.error("rhythmd_client internal error in %s (logged once)", where, exc_info=exc)
