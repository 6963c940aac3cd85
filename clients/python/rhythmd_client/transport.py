"""``Transport``: hands metric chunks, acks and reports to the sender thread, and back.

The training thread calls :meth:`Transport.submit`, :meth:`~Transport.ack`,
:meth:`~Transport.report`, :meth:`~Transport.take_recommendations`, :meth:`~Transport.wake`
and :meth:`~Transport.close`; none of them waits for the network. The rest happens on one
daemon thread (:class:`~rhythmd_client._sender.Sender`), which talks to the daemon through
an :class:`~rhythmd_client._http.HTTPTransport` (the stdlib one unless ``http=`` is given).

Units: times are seconds, sizes are points (one value of one series at one step), counters in
:attr:`Transport.stats` count points (``sent``, ``dropped``, ``spooled``) or requests
(``retried``, ``errors``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rhythmd_client._calls import Caller
from rhythmd_client._http import HTTPTransport, StdlibHTTPTransport
from rhythmd_client._sender import COUNTERS, Mailbox, Sender
from rhythmd_client._spool import Spool
from rhythmd_client._wire import Chunk

__all__ = ["Chunk", "Transport"]


class Transport:
    """Sends metric chunks to the daemon from a background thread.

    Args:
        url: daemon base URL, e.g. ``http://127.0.0.1:8000``.
        run_name, project, config, tags: run metadata for ``POST /v1/runs``.
        run_id: attach to (or create with) this id; a random one is generated otherwise, so
            batches spooled before the daemon was ever reachable still name their run.
        interval_s: seconds between send rounds.
        timeout_s: socket timeout per request, seconds (of the default HTTP transport).
        max_points: bound on points held in memory; past it the oldest are dropped (or spooled).
        max_batch_points: most points in one request.
        spool_path: JSONL file that receives batches instead of dropping them; uploaded when the
            daemon is reachable again (batch ids make this idempotent).
        poll_s: seconds between ``GET .../recommendations`` when no ingest response brought them.
        backoff_s, backoff_max_s: first and largest retry delay, seconds (with jitter).
        compact: round values to 8 significant digits and wall times to ms before encoding.
        on_recommendation: called on the sender thread after new recommendations were queued.
        on_round: called on the sender thread at the start of every round.
        token: bearer token of the default HTTP transport (none: send no Authorization).
        http: the HTTP transport to use instead of the stdlib one (``request``/``close``).
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
        token: str | None = None, http: HTTPTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_points = max(1, int(max_points))
        self.spool_path = os.fspath(spool_path) if spool_path is not None else None
        if http is None:
            http = StdlibHTTPTransport(url, timeout_s=timeout_s, token=token)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._caller = Caller(http, self._counts, url=url, backoff_s=backoff_s,
                              backoff_max_s=backoff_max_s)
        self._mb = Mailbox()
        self._sender = Sender(
            self._mb, self._caller,
            run_body={"name": run_name, "project": project, "config": config, "tags": tags,
                      "run_id": run_id or uuid.uuid4().hex},
            attach=run_id is not None,
            spool=Spool(self.spool_path) if self.spool_path is not None else None,
            interval_s=interval_s, poll_s=poll_s, max_points=self.max_points,
            max_batch_points=max(1, min(int(max_batch_points), self.max_points)),
            compact=compact, on_recommendation=on_recommendation, on_round=on_round)
        self._thread = threading.Thread(target=self._sender.run, name="rhythmd-sender",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- training-thread API
    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk (never blocks). Past ``max_points`` unsent points in the hand-over
        queue (sender stuck), the oldest chunks are dropped unless a spool is configured."""
        mb = self._mb
        mb.inbound.append(chunk)
        mb.produced += chunk.points
        if self.spool_path is None:
            while mb.produced - mb.dropped_early - mb.consumed > self.max_points:
                try:
                    old = mb.inbound.popleft()
                except IndexError:
                    break
                mb.dropped_early += old.points

    def ack(self, rec_id: str, body: dict[str, Any]) -> None:
        """Queue an acknowledgement for ``POST .../recommendations/{rec_id}/ack``."""
        self._mb.acks.append((rec_id, body))

    def report(self, create: dict[str, Any], ack: dict[str, Any]) -> None:
        """Queue a change the client made on its own: ``POST .../recommendations`` with
        ``create``, then acknowledge it with ``ack`` (never blocks)."""
        self._mb.reports.append((create, ack))

    def take_recommendations(self) -> list[dict[str, Any]]:
        """Pop the recommendations received so far (oldest first)."""
        self._mb.has_recs = False
        recs = self._mb.recs
        out = []
        while recs:
            out.append(recs.popleft())
        return out

    def attach(self, run_id: str) -> None:
        """Send everything from now on to the existing run ``run_id`` (a resumed job's run)
        instead of this transport's own; takes effect at the sender's next round."""
        self._mb.attach_to = run_id
        self._mb.wake.set()

    def wake(self) -> None:
        """Ask the sender to run a round now (e.g. after an event worth reporting quickly)."""
        self._mb.wake.set()

    def close(self, *, status: str = "finished", step: int | None = None,
              timeout_s: float = 5.0) -> dict[str, int]:
        """Flush (up to ``timeout_s``), spool or drop what is left, finish the run, stop."""
        if self._mb.finish is None:
            self._mb.close_deadline = time.monotonic() + max(0.0, timeout_s)
            self._mb.finish = (status, step)
        self._mb.wake.set()
        self._thread.join(timeout_s + 2 * self.timeout_s + 1.0)
        return self.stats

    # ---------------------------------------------------------------- state, read anywhere
    @property
    def stats(self) -> dict[str, int]:
        """Counters: points ``sent``/``dropped``/``spooled``/``buffered``, requests
        ``retried``/``errors``, ``batches``, ``recommendations`` received, ..."""
        mb = self._mb
        out = dict(self._counts)
        out["dropped"] += mb.dropped_early
        out["buffered"] = self._sender.pending_points + max(
            0, mb.produced - mb.dropped_early - mb.consumed)
        return out

    @property
    def run_id(self) -> str:
        """The run's id (the daemon's answer to ``POST /v1/runs`` once it came)."""
        return self._mb.attach_to or self._sender.run_id

    @property
    def has_recs(self) -> bool:
        """Whether recommendations wait in :meth:`take_recommendations`."""
        return self._mb.has_recs

    @property
    def daemon_up(self) -> bool | None:
        """Whether the last request got an answer (None: none was made yet)."""
        return self._caller.daemon_up

    @property
    def last_error(self) -> str | None:
        """The last failed request, in words."""
        return self._caller.last_error

    @property
    def loss_finite(self) -> bool | None:
        """Whether the loss values last read on the sender thread were all finite."""
        return self._mb.loss_finite

    @property
    def blowup_bound(self) -> float | None:
        """The daemon's blow-up bound (absolute loss), when it sent one."""
        return self._mb.blowup_bound

    @property
    def watch_loss(self) -> float | None:
        """Bound (absolute loss) the sender checks tensor losses against; None: no check."""
        return self._mb.watch_loss

    @watch_loss.setter
    def watch_loss(self, bound: float | None) -> None:
        self._mb.watch_loss = bound

    @property
    def bad_loss(self) -> tuple[int, int] | None:
        """(branch, step) of the first loss found beyond :attr:`watch_loss`; set it to
        ``None`` once handled."""
        return self._mb.bad_loss

    @bad_loss.setter
    def bad_loss(self, value: tuple[int, int] | None) -> None:
        self._mb.bad_loss = value

    @property
    def backoff_s(self) -> float:
        """First retry delay, seconds."""
        return self._caller.backoff_s

    @backoff_s.setter
    def backoff_s(self, value: float) -> None:
        self._caller.backoff_s = value

    @property
    def backoff_max_s(self) -> float:
        """Largest retry delay, seconds."""
        return self._caller.backoff_max_s

    @backoff_max_s.setter
    def backoff_max_s(self, value: float) -> None:
        self._caller.backoff_max_s = value
