"""Background sender: run creation, batching, retries, spooling and recommendation intake.

Everything here except :meth:`Transport.submit`, :meth:`Transport.ack`,
:meth:`Transport.report`, :meth:`Transport.take_recommendations` and :meth:`Transport.close`
runs on one daemon thread.
The training thread only appends to ``collections.deque`` objects (atomic in CPython) and reads
plain attributes, so it never waits for the network or for a lock held across I/O.

Units: times are seconds, sizes are points (one value of one series at one step), counters in
:attr:`Transport.stats` count points (``sent``, ``dropped``, ``spooled``) or requests
(``retried``, ``errors``).
"""

from __future__ import annotations

import array
import collections
import contextlib
import http.client
import json
import logging
import math
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from rhythmd_client._buffer import (
    compact_sig,
    compact_wall,
    drop_missing,
    is_finite_all,
    resolve,
)

log = logging.getLogger("rhythmd_client")

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Chunk:
    """Per-step values of K consecutive steps (or logged metrics), handed over at a flush.

    ``series`` items are ``(name, steps, frozen values, wall_times)``; values may still be a
    :class:`~rhythmd_client._buffer.Pending` device copy.
    """

    __slots__ = ("branch", "branch_start", "points", "series")

    def __init__(self, branch: int, branch_start: int | None,
                 series: list[tuple[str, list[int], Any, list[float]]]) -> None:
        self.branch = branch
        self.branch_start = branch_start
        self.series = series
        self.points = sum(len(s[1]) for s in series)


class _Batch:
    """One request body; its ``batch_id`` is fixed once a send was attempted (idempotency).

    Points wait in ``array`` objects, whose elements the cyclic garbage collector never
    visits: with lists, a million buffered floats made full collections take 0.1-0.7 s, all
    of it under the GIL, stalling the training thread.
    """

    __slots__ = ("attempted", "batch_id", "body", "branch", "branch_start", "points", "series")

    def __init__(self, batch_id: str, branch: int, branch_start: int | None) -> None:
        self.batch_id = batch_id
        self.branch = branch
        self.branch_start = branch_start
        self.series: dict[str, tuple[array.array[int], array.array[float],
                                     array.array[float]]] = {}
        self.points = 0
        self.attempted = False
        self.body: bytes | None = None

    def add(self, name: str, steps: list[int], values: list[Any], walls: list[float]) -> None:
        steps, values, walls2 = drop_missing(steps, values, walls)
        cur = self.series.get(name)
        if cur is None:
            cur = self.series[name] = (array.array("q"), array.array("d"), array.array("d"))
        n = len(cur[0])
        try:
            cur[0].extend(steps)
            cur[1].extend(values)
        except (TypeError, OverflowError, ValueError):  # odd steps or values: one by one
            del cur[0][n:], cur[1][n:]
            cur[0].extend(int(s) for s in steps)
            cur[1].extend(_to_float(v) for v in values)
        if walls2 is not None and len(walls2) == len(steps):
            cur[2].extend(walls2)
        self.points += len(steps)

    def encode(self, compact: bool) -> bytes:
        """JSON body, encoded by the C encoder in one call; the arrays are freed afterwards."""
        if self.body is None:
            series = []
            for name, (steps, values, walls) in self.series.items():
                vals = compact_sig(values) if compact else values.tolist()
                wall = (compact_wall(walls) if compact else walls.tolist()) \
                    if len(walls) == len(steps) else None
                series.append({"name": name, "steps": steps.tolist(), "values": vals,
                               "wall_times": wall})
            doc: dict[str, Any] = {"batch_id": self.batch_id, "branch": self.branch,
                                   "series": series}
            if self.branch or self.branch_start is not None:
                doc["branch_start_step"] = self.branch_start
            self.body = json.dumps(doc, separators=(",", ":")).encode()
            self.series = {}
        return self.body


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


class _Outcome:
    OK, RETRY, FAIL, NOT_FOUND = range(4)


class Transport:
    """Sends metric chunks to the daemon from a background thread.

    Args:
        url: daemon base URL, e.g. ``http://127.0.0.1:8000``.
        run_name, project, config, tags: run metadata for ``POST /v1/runs``.
        run_id: attach to (or create with) this id; a random one is generated otherwise, so
            batches spooled before the daemon was ever reachable still name their run.
        interval_s: seconds between send rounds.
        timeout_s: socket timeout per request, seconds.
        max_points: bound on points held in memory; past it the oldest are dropped (or spooled).
        max_batch_points: most points in one request.
        spool_path: JSONL file that receives batches instead of dropping them; uploaded when the
            daemon is reachable again (batch ids make this idempotent).
        poll_s: seconds between ``GET .../recommendations`` when no ingest response brought them.
        backoff_s, backoff_max_s: first and largest retry delay, seconds (with jitter).
        compact: round values to 8 significant digits and wall times to ms before encoding.
        on_recommendation: called on the sender thread after new recommendations were queued.
        on_round: called on the sender thread at the start of every round.
    """

    def __init__(
        self, url: str, *, run_name: str, project: str | None = None,
        config: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
        run_id: str | None = None, interval_s: float = 0.25, timeout_s: float = 5.0,
        max_points: int = 1_000_000, max_batch_points: int = 50_000,
        spool_path: str | os.PathLike[str] | None = None, poll_s: float = 2.0,
        backoff_s: float = 0.25, backoff_max_s: float = 10.0, compact: bool = True,
        on_recommendation: Callable[[], None] | None = None,
        on_round: Callable[[], None] | None = None,
        token: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        token = token if token is not None else os.environ.get("RHYTHMD_TOKEN")
        self._auth = f"Bearer {token}" if token else None
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self.url = url
        self.run_id = run_id or uuid.uuid4().hex
        self._attach = run_id is not None
        self._run_body = {"name": run_name, "project": project, "config": config,
                          "tags": tags, "run_id": self.run_id}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_points = max(1, int(max_points))
        self.max_batch_points = max(1, min(int(max_batch_points), self.max_points))
        self.spool_path = os.fspath(spool_path) if spool_path is not None else None
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.compact = compact
        self.on_recommendation = on_recommendation
        self.on_round = on_round

        # training thread -> sender (deque append/popleft are atomic)
        self._inbound: collections.deque[Chunk] = collections.deque()
        self._acks: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._reports: collections.deque[tuple[dict[str, Any], dict[str, Any]]] = \
            collections.deque()
        self._produced = 0  # written by the training thread only
        self._pdropped = 0  # points dropped by the training thread (sender stuck); same
        self._consumed = 0  # written by the sender only
        # sender -> training thread
        self._recs: collections.deque[dict[str, Any]] = collections.deque()
        self.has_recs = False

        # sender-only state
        self._pending: collections.deque[_Batch] = collections.deque()
        self._pending_points = 0
        self._batch_seq = 0
        self._session = uuid.uuid4().hex[:12]
        self._conn: http.client.HTTPConnection | None = None
        self._run_ready = False
        self._dead = False
        self._failures = 0
        self._retry_at = 0.0
        self._last_recs_at = 0.0
        self._seen_recs: set[str] = set()
        self._spool_dirty = bool(self.spool_path and os.path.exists(self.spool_path)
                                 and os.path.getsize(self.spool_path) > 0)
        self._down_logged = False
        self._logged_errors: set[str] = set()
        self._counts = {"sent": 0, "dropped": 0, "retried": 0, "errors": 0, "spooled": 0,
                        "spool_uploaded": 0, "batches": 0, "duplicates": 0,
                        "recommendations": 0, "internal_errors": 0}
        self.daemon_up: bool | None = None
        self.loss_finite: bool | None = None  # last loss values read on this thread
        # local reflex: the daemon's blow-up bound (absolute loss; from ingest responses or a
        # recommendation's params), the bound the hook asks this thread to watch tensor losses
        # against (None: do not watch), and the first (branch, step) found beyond it
        self.blowup_bound: float | None = None
        self.watch_loss: float | None = None
        self.bad_loss: tuple[int, int] | None = None
        self.last_error: str | None = None

        self._closing = False
        self._close_deadline = 0.0
        self._finish: tuple[str, int | None] | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name="rhythmd-sender", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- training-thread API
    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk (never blocks). Past ``max_points`` unsent points in the hand-over
        queue (sender stuck), the oldest chunks are dropped unless a spool is configured."""
        self._inbound.append(chunk)
        self._produced += chunk.points
        if (self.spool_path is None
                and self._produced - self._pdropped - self._consumed > self.max_points):
            while self._produced - self._pdropped - self._consumed > self.max_points:
                try:
                    old = self._inbound.popleft()
                except IndexError:
                    break
                self._pdropped += old.points

    def ack(self, rec_id: str, body: dict[str, Any]) -> None:
        """Queue an acknowledgement for ``POST .../recommendations/{rec_id}/ack``."""
        self._acks.append((rec_id, body))

    def report(self, create: dict[str, Any], ack: dict[str, Any]) -> None:
        """Queue a change the client made on its own: ``POST .../recommendations`` with
        ``create``, then acknowledge it with ``ack`` (never blocks)."""
        self._reports.append((create, ack))

    def take_recommendations(self) -> list[dict[str, Any]]:
        """Pop the recommendations received so far (oldest first)."""
        self.has_recs = False
        out = []
        while self._recs:
            out.append(self._recs.popleft())
        return out

    def wake(self) -> None:
        """Ask the sender to run a round now (e.g. after an event worth reporting quickly)."""
        self._wake.set()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: points ``sent``/``dropped``/``spooled``, requests ``retried``/``errors``."""
        out = dict(self._counts)
        out["dropped"] += self._pdropped
        out["buffered"] = self._pending_points + max(
            0, self._produced - self._pdropped - self._consumed)
        return out

    def close(self, *, status: str = "finished", step: int | None = None,
              timeout_s: float = 5.0) -> dict[str, int]:
        """Flush (up to ``timeout_s``), spool or drop what is left, finish the run, stop."""
        if not self._closing:
            self._finish = (status, step)
            self._close_deadline = time.monotonic() + max(0.0, timeout_s)
            self._closing = True
        self._wake.set()
        self._thread.join(timeout_s + 2 * self.timeout_s + 1.0)
        return self.stats

    # ---------------------------------------------------------------- sender thread
    def _main(self) -> None:
        while True:
            closing = self._closing
            try:
                self._round()
            except Exception as exc:  # never let the thread die
                self._internal_error("sender", exc)
            if closing:
                if self._closing_done():
                    break
                self._wake.wait(0.02)
            else:
                self._wake.wait(self.interval_s)
            self._wake.clear()
        try:
            self._shutdown()
        except Exception as exc:
            self._internal_error("shutdown", exc)

    def _closing_done(self) -> bool:
        if time.monotonic() >= self._close_deadline or self._dead:
            return True
        idle = not self._inbound and not self._pending and not self._acks and not self._reports
        return idle and not self._spool_dirty

    def _round(self) -> None:
        if self.on_round is not None and not self._closing:
            self.on_round()
        self._drain()
        self._enforce_bound()
        if self._dead or time.monotonic() < self._retry_at:
            return
        if not self._run_ready and not self._create_run():
            return
        if self._spool_dirty and not self._upload_spool():
            return
        if not self._send_reports():
            return
        if not self._send_acks():
            return
        if not self._send_batches():
            return
        if time.monotonic() - self._last_recs_at >= self.poll_s:
            self._poll_recommendations()

    def _drain(self) -> None:
        while True:
            try:
                chunk = self._inbound.popleft()
            except IndexError:
                return
            resolved = []
            for name, steps, frozen, walls in chunk.series:
                try:
                    values = resolve(frozen)
                except Exception as exc:  # unreadable values: lose this series, keep going
                    self._internal_error("resolve", exc)
                    self._counts["dropped"] += len(steps)
                    continue
                if values is None:  # device copy still in flight: keep order, retry later
                    self._inbound.appendleft(chunk)
                    return
                resolved.append((name, steps, values, walls))
                if name == "loss":
                    self.loss_finite = is_finite_all(values)
                    bound = self.watch_loss
                    if bound is not None and not isinstance(frozen, array.array):
                        self._watch(chunk.branch, steps, values, bound)
            self._consumed += chunk.points
            last = self._pending[-1] if self._pending else None
            if (last is None or last.attempted or last.branch != chunk.branch
                    or last.points + chunk.points > self.max_batch_points):
                self._batch_seq += 1
                last = _Batch(f"{self._session}-{self._batch_seq}", chunk.branch,
                              chunk.branch_start)
                self._pending.append(last)
            before = last.points
            for name, steps, values, walls in resolved:
                try:
                    last.add(name, steps, values, walls)
                except Exception as exc:
                    self._internal_error("batch", exc)
                    self._counts["dropped"] += len(steps)
            self._pending_points += last.points - before

    def _watch(self, branch: int, steps: Any, values: Any, bound: float) -> None:
        """Note the first loss that is not finite or above ``bound`` (tensor losses: the hook
        checked floats itself) and wake the hook."""
        if self.bad_loss is not None:
            return
        for st, v in zip(steps, values, strict=False):
            if v is not None and not -math.inf < v <= bound:
                self.bad_loss = (branch, int(st))
                if self.on_recommendation is not None:
                    self.on_recommendation()
                return

    def _enforce_bound(self) -> None:
        while self._pending_points > self.max_points and len(self._pending) > 1:
            self._discard(self._pending.popleft())

    def _discard(self, batch: _Batch) -> None:
        """Spool a batch (when configured) or count it as dropped."""
        self._pending_points -= batch.points
        if self.spool_path is not None:
            try:
                self._spool_write([batch])
                return
            except OSError as exc:
                self._internal_error("spool", exc)
        self._counts["dropped"] += batch.points

    def _spool_write(self, batches: list[_Batch]) -> None:
        assert self.spool_path is not None
        rid = json.dumps(self.run_id).encode()
        with open(self.spool_path, "ab") as f:
            for b in batches:
                body = b.encode(self.compact)
                f.write(b'{"run_id":' + rid + b',"points":' + str(b.points).encode()
                        + b',"body":' + body + b"}\n")
                self._counts["spooled"] += b.points
        self._spool_dirty = True

    def _upload_spool(self) -> bool:
        assert self.spool_path is not None
        try:
            with open(self.spool_path, "rb") as f:
                lines = [ln for ln in f.read().split(b"\n") if ln.strip()]
        except FileNotFoundError:
            self._spool_dirty = False
            return True
        ok = True
        done = 0
        for line in lines:
            if self._past_deadline():
                break
            try:  # lines are written by _spool_write: the body is sent as stored, unparsed
                cut = line.index(b',"body":')
                head = json.loads(line[:cut] + b"}")
                rid = head.get("run_id") or self.run_id
                points = int(head.get("points") or 0)
                body = line[cut + 8:-1]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._internal_error("spool-parse", exc)
                done += 1
                continue
            outcome, data = self._call("POST", f"/v1/runs/{rid}/metrics", body)
            if outcome == _Outcome.RETRY:
                ok = False
                break
            if outcome == _Outcome.OK:
                self._counts["sent"] += points
                self._counts["spool_uploaded"] += points
                if rid == self.run_id:
                    self._take_recs(data)
            else:
                self._counts["dropped"] += points
            done += 1
        rest = lines[done:]
        with open(self.spool_path, "wb") as f:
            f.write(b"".join(ln + b"\n" for ln in rest))
        self._spool_dirty = bool(rest)
        return ok

    def _create_run(self) -> bool:
        body = json.dumps(self._run_body).encode()
        outcome, data = self._call("POST", "/v1/runs", body, quiet_status=(409,))
        if outcome == _Outcome.OK:
            if isinstance(data, dict) and isinstance(data.get("run_id"), str):
                self.run_id = data["run_id"]
            self._run_ready = True
            log.info("rhythmd run %s ready at %s", self.run_id, self.url)
            return True
        if outcome == _Outcome.FAIL:
            if self._last_status == 409 and self._attach:
                log.warning("run %s exists with other metadata; attaching anyway", self.run_id)
                self._run_ready = True
                return True
            log.error("rhythmd refused to create the run (%s); metrics will not be sent",
                      self.last_error)
            self._dead = True
        return False

    def _send_reports(self) -> bool:
        while self._reports:
            create, ack = self._reports[0]
            outcome, data = self._call("POST", f"/v1/runs/{self.run_id}/recommendations",
                                       json.dumps(create).encode())
            if outcome == _Outcome.RETRY:
                return False
            self._reports.popleft()
            rid = data.get("id") if isinstance(data, dict) else None
            if outcome != _Outcome.OK or not isinstance(rid, str):
                continue  # refused (e.g. a token without "steer"): logged by _call
            self._seen_recs.add(rid)  # ours: never applied again from a pending list
            self._acks.append((rid, ack))
        return True

    def _send_acks(self) -> bool:
        while self._acks:
            rec_id, body = self._acks[0]
            outcome, _ = self._call(
                "POST", f"/v1/runs/{self.run_id}/recommendations/{rec_id}/ack",
                json.dumps(body).encode())
            if outcome == _Outcome.RETRY:
                return False
            self._acks.popleft()  # applied, or unknown to the daemon (404): done either way
        return True

    def _past_deadline(self) -> bool:
        return self._closing and time.monotonic() >= self._close_deadline

    def _send_batches(self) -> bool:
        budget = len(self._pending)  # then return, so acks and polls get their turn
        while self._pending and budget > 0 and not self._past_deadline():
            budget -= 1
            self._drain()  # between requests: merge new points, keep the bound
            self._enforce_bound()
            batch = self._pending[0]
            batch.attempted = True
            try:
                body = batch.encode(self.compact)
            except Exception as exc:  # never let one bad batch block the queue
                self._internal_error("encode", exc)
                self._pending.popleft()
                self._pending_points -= batch.points
                self._counts["dropped"] += batch.points
                continue
            outcome, data = self._call("POST", f"/v1/runs/{self.run_id}/metrics", body)
            if outcome == _Outcome.RETRY:
                return False
            if outcome == _Outcome.NOT_FOUND:
                self._run_ready = False  # re-create the run (same id), then resend
                return False
            self._pending.popleft()
            self._pending_points -= batch.points
            if outcome == _Outcome.OK:
                self._counts["sent"] += batch.points
                self._counts["batches"] += 1
                if isinstance(data, dict) and data.get("duplicate"):
                    self._counts["duplicates"] += 1
                self._take_recs(data)
            elif self._last_status == 413 and batch.points > 1:
                self._counts["dropped"] += batch.points
                log.warning("batch of %d points too large for the daemon; lower "
                            "max_batch_points", batch.points)
            else:
                self._counts["dropped"] += batch.points
        return True

    def _poll_recommendations(self) -> None:
        outcome, data = self._call(
            "GET", f"/v1/runs/{self.run_id}/recommendations?status=pending", None)
        if outcome == _Outcome.OK:
            self._take_recs(data)
        elif outcome == _Outcome.FAIL:
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
            self._recs.append(rec)
            self._counts["recommendations"] += 1
            new = True
        if new:
            self.has_recs = True
            if self.on_recommendation is not None:
                self.on_recommendation()

    def _take_bound(self, value: Any) -> None:
        """Keep the daemon's blow-up bound when it is a finite number (None clears it); wake
        the hook when it changed."""
        old = self.blowup_bound
        if value is None:
            self.blowup_bound = None
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value)):
            self.blowup_bound = float(value)
        if self.blowup_bound != old and self.on_recommendation is not None:
            self.on_recommendation()  # the hook takes it at its next step boundary

    def _shutdown(self) -> None:
        self._drain()
        if self._inbound:  # device copies that never completed: give them a moment
            deadline = time.monotonic() + 1.0
            while self._inbound and time.monotonic() < deadline:
                time.sleep(0.005)
                self._drain()
        leftover = list(self._pending)
        self._pending.clear()
        inflight = sum(c.points for c in self._inbound)
        self._inbound.clear()
        self._counts["dropped"] += inflight
        if leftover:
            if self.spool_path is not None:
                try:
                    self._spool_write(leftover)
                    leftover = []
                except OSError as exc:
                    self._internal_error("spool", exc)
            self._counts["dropped"] += sum(b.points for b in leftover)
        self._pending_points = 0
        if self._finish is not None and self._run_ready and self.daemon_up:
            status, step = self._finish
            self._call("POST", f"/v1/runs/{self.run_id}/finish",
                       json.dumps({"status": status, "step": step}).encode(),
                       quiet_status=(404, 405))
        if self._conn is not None:
            self._conn.close()

    # ---------------------------------------------------------------- HTTP
    _last_status = 0

    def _call(self, method: str, path: str, body: bytes | None,
              quiet_status: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request; updates the backoff state and counters. Returns (outcome, JSON)."""
        self._last_status = 0
        retry_after: float | None = None
        try:
            status, raw, retry_after = self._http(method, self._prefix + path, body)
        except (OSError, http.client.HTTPException) as exc:
            status, raw = 0, b""
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._reset_conn()
        self._last_status = status
        if 200 <= status < 300:
            if self._down_logged:
                log.warning("rhythmd daemon reachable again at %s", self.url)
            self._down_logged = False
            self.daemon_up = True
            self._failures = 0
            try:
                return _Outcome.OK, json.loads(raw) if raw else None
            except ValueError:
                return _Outcome.OK, None
        if status == 0 or status in _RETRY_STATUSES:
            if status:
                self.last_error = f"HTTP {status} on {method} {path}"
            self.daemon_up = False if status == 0 else self.daemon_up
            self._counts["retried"] += 1
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
            return _Outcome.RETRY, None
        self.daemon_up = True
        self.last_error = f"HTTP {status} on {method} {path}: {raw[:200]!r}"
        if status == 404 and (404 in quiet_status or "/metrics" in path or "/ack" in path):
            return _Outcome.NOT_FOUND, None
        if status not in quiet_status:
            self._counts["errors"] += 1
            log.warning("rhythmd request failed: %s", self.last_error)
        return _Outcome.FAIL, None

    def _http(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, float | None]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        headers = {"Accept": "application/json"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        if body is not None:
            headers["Content-Type"] = "application/json"
        self._conn.request(method, path, body=body, headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        retry_after = None
        ra = resp.getheader("Retry-After")
        if ra:
            try:
                retry_after = float(ra)
            except ValueError:
                retry_after = None
        if resp.getheader("Connection", "").lower() == "close":
            self._reset_conn()
        return resp.status, raw, retry_after

    def _reset_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self._counts["internal_errors"] += 1
        self._counts["errors"] += 1
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            log.error("rhythmd_client internal error in %s (logged once)", where, exc_info=exc)
