"""``RhythmHook``: stream loss/LR from a training loop and apply the daemon's LR advice.

Hot path (:meth:`RhythmHook.step`): a handful of stores into preallocated lists (the loss is
kept as the object you passed, a float or a tensor on any device), one host-side read of the
first param group's LR, one ``time.time()``. Every ``flush_every`` calls the kept values are
handed to the sender thread in one piece; tensors are stacked and copied to the host
asynchronously (see :mod:`rhythmd_client._buffer`). Nothing here waits for the network or
reads a device tensor. Units: ``step`` counts optimizer steps; LRs are absolute; times are
seconds.

Rollback: when the daemon's ``rollback`` is applied, model/optimizer/scheduler are restored
to a snapshot taken at step ``r`` and the run continues on a new branch from ``r + 1``. The
loop learns this through :meth:`RhythmHook.steps` (which yields ``r + 1`` next), or through
:attr:`RhythmHook.rolled_back_to` (``r`` right after the ``hook.step`` call that rolled back,
``None`` otherwise) / :attr:`RhythmHook.resume_step` (``r + 1``). A ``revert`` that restores
the snapshot taken before a change at step ``s`` continues the same way from ``s + 1``.

Local reflex (apply mode, on by default): a loss that is not finite, or above the blow-up
bound, makes the hook restore the last healthy snapshot, cut the LR and re-warm at once,
then report what it did to the daemon; see :class:`RhythmHook` (``reflex``).

The class is assembled from one module per concern: :mod:`._reflex` (the reflex),
:mod:`._advice` (taking the daemon's advice, DDP rounds), :mod:`._snapshots` (controller and
snapshots), :mod:`._resume` (``state_dict``/``load_state_dict``), :mod:`._ring` (hand-overs)
and :mod:`._settings` (URL, token and mode from arguments or ``RHYTHMD_*``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rhythmd_client._advice import AdviceMixin
from rhythmd_client._reflex import NO_BOUND, ReflexMixin
from rhythmd_client._resume import ResumeMixin
from rhythmd_client._ring import extra_series, ring_series
from rhythmd_client._settings import resolve
from rhythmd_client._snapshots import SnapshotMixin
from rhythmd_client.actions import ACTION_NAMES
from rhythmd_client.transport import Chunk, Transport

log = logging.getLogger("rhythmd_client")

_time = time.time
_NEVER = 2**63


def _noop(*args: Any, **kwargs: Any) -> None:
    """What :meth:`RhythmHook.step` and :meth:`RhythmHook.log` are in disabled mode."""


def _controller_active(ctrl: Any) -> bool:
    """Whether the controller needs ``on_step`` at every step (a warmup ramp or a schedule
    override is running). Calling it only then saves ~1 µs per step when idle."""
    active = getattr(ctrl, "active", None)
    if isinstance(active, bool):
        return active
    return bool(getattr(ctrl, "_ramps", True)) or getattr(ctrl, "_override", None) is not None


class RhythmHook(ReflexMixin, AdviceMixin, ResumeMixin, SnapshotMixin):
    """Streams metrics to a rhythmd daemon and applies its recommendations at step boundaries.

    Args:
        url: daemon base URL; default ``$RHYTHMD_URL``, else ``http://127.0.0.1:8000``.
        run_name, project, config, tags: run metadata; ``run_id`` attaches to an existing run.
        optimizer, scheduler: enable the ``lr`` series and applying LR changes.
        model: enables in-memory rollback snapshots (with ``optimizer``).
        mode: ``"apply"`` (apply allowed actions), ``"advise"`` (log them, change nothing,
            ack as rejected with reason "advise mode") or ``"disabled"`` (a no-op: no thread,
            no network, the optimizer is never touched); default ``$RHYTHMD_MODE``, else
            ``"apply"``. An argument always wins over its environment variable.
        allow: actions that may be applied; default every action of
            :data:`~rhythmd_client.actions.ACTIONS`. Apply mode is the opt-in: LR changes stay
            inside ``min_lr``/``max_lr``, ``rollback`` is rejected without ``model=`` (no
            snapshots), and ``stop`` only raises ``should_stop``, which the loop reads.
        min_lr, max_lr: absolute LR bounds for every change (float or per-group list).
        flush_every: calls between hand-overs to the sender (K); the sender also asks for a
            hand-over every ``interval_s`` so slow loops report promptly.
        interval_s, timeout_s, max_buffer_points, max_batch_points, spool_path, poll_s:
            see :class:`~rhythmd_client.transport.Transport`.
        snapshot_every: steps between rollback snapshots; snapshot_max_bytes: their budget.
        rank, world_size, process_group: DDP; detected from ``torch.distributed`` when
            initialised. Only ``stream_rank`` talks to the daemon. Every ``ddp_sync_every``
            steps (default 64) all ranks enter one small broadcast; all ranks must
            pass the same step numbers (they do in DDP).
        close_timeout_s: how long :meth:`close` may wait for the last batches.
        token: bearer token for a daemon with ``RHYTHMD_AUTH=required`` (an ``ingest`` token
            of the run's project); default ``$RHYTHMD_TOKEN``, else none.
        reflex: the local reflex (apply mode only, needs ``optimizer``; off under DDP):
            ``True`` (default settings, :data:`REFLEX_DEFAULTS`), ``False``, or a dict that
            overrides some settings. It reads the loss only, never gradients. It restores
            only if ``allow`` has ``rollback`` and re-warms only if it has ``warmup``.
    """

    def __init__(
        self, url: str | None = None, run_name: str | None = None,
        project: str | None = None, *, optimizer: Any = None, scheduler: Any = None,
        model: Any = None, mode: str | None = None, allow: Iterable[str] | None = None,
        min_lr: float | list[float] | None = None, max_lr: float | list[float] | None = None,
        run_id: str | None = None, config: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None, flush_every: int = 128, interval_s: float = 0.25,
        timeout_s: float = 5.0, max_buffer_points: int = 1_000_000,
        max_batch_points: int = 50_000, spool_path: str | None = None, poll_s: float = 2.0,
        snapshot_every: int = 100, snapshot_max_bytes: int = 512 * 2**20,
        rank: int | None = None, world_size: int | None = None, process_group: Any = None,
        ddp_sync: bool = True, ddp_sync_every: int | None = None, stream_rank: int = 0,
        close_timeout_s: float = 5.0,
        compact: bool = True,
        token: str | None = None,
        reflex: bool | dict[str, Any] = True,
    ) -> None:
        url, token, mode = resolve(url, token, mode)
        self.mode = mode
        self.disabled = mode == "disabled"
        if self.disabled:  # instance attributes shadow the methods: nothing is recorded
            self.step = self.log = _noop  # type: ignore[method-assign]
        self.allow = frozenset(ACTION_NAMES if allow is None else allow)
        unknown = self.allow - ACTION_NAMES
        if unknown:
            raise ValueError(f"unknown actions in allow: {sorted(unknown)}")
        self.optimizer = optimizer
        self.close_timeout_s = close_timeout_s
        self.should_stop = False
        self.rolled_back_to: int | None = None
        self.reflexes: list[dict[str, Any]] = []  # what the reflex did, oldest first
        self.resume_step: int | None = None
        self.branch = 0
        self.branch_start: int | None = None
        self.applied: list[dict[str, Any]] = []
        self._counts = {"recs_applied": 0, "recs_rejected": 0, "internal_errors": 0,
                        "lost_points": 0, "reflexes": 0}
        self._logged: set[str] = set()
        self._closed = False
        self._last_step: int | None = None
        self._rollbacks = 0

        self.rank, self.world_size = self._detect_rank(rank, world_size)
        self.stream_rank = stream_rank
        self.streaming = self.rank == stream_rank
        self._ddp = None
        if self.world_size > 1 and ddp_sync and not self.disabled:
            self._ddp = self._make_ddp(process_group)

        # preallocated ring (K slots); the hot path only stores into it
        self._cap = max(1, int(flush_every))
        self._i = 0
        self._steps: list[Any] = [0] * self._cap
        self._walls: list[Any] = [0.0] * self._cap
        self._loss: list[Any] = [None] * self._cap
        self._gn: list[Any] = [None] * self._cap
        self._lrs: list[Any] = [None] * self._cap
        self._nones: list[Any] = [None] * self._cap
        self._extra: list[tuple[str, int, Any, float]] = []

        self._ctrl: Any = None
        self._keeper: Any = None
        self._pg0: dict[str, Any] | None = None
        if optimizer is not None and not self.disabled:
            self._setup_controller(optimizer, scheduler, model, min_lr, max_lr,
                                   snapshot_every, snapshot_max_bytes)
            self._pg0 = optimizer.param_groups[0]
        self._snap_every = max(1, int(snapshot_every))
        self._next_snap = 0 if self._keeper is not None else _NEVER
        if self._keeper is not None:
            # The untrained model, labelled step -1 (before the first step): a rollback can
            # restart from it when the very first updates broke the model (e.g. Adam at a
            # far-too-large LR), which no later snapshot could undo.
            try:
                self._keeper.snapshot(-1)
                self._check_too_large()
            except Exception as exc:
                self._internal("initial snapshot", exc)
        self._sync_every = max(1, int(ddp_sync_every or 64))
        self._next_sync = 0 if self._ddp is not None else _NEVER
        self._next_due = min(self._next_snap, self._next_sync)
        self._ctrl_active = False
        self._flag = False
        self._want_flush = False

        self._rx = self._reflex_settings(reflex)
        self._reflex_on = (mode == "apply" and self._rx is not None and self._ctrl is not None
                           and self._ddp is None)
        self._user_bound = self._rx["blowup_bound"] if self._rx is not None else None
        self._bound = self._user_bound if self._user_bound is not None else NO_BOUND
        self._bad: int | None = None  # step of a loss the reflex must answer
        # the loss each snapshot's weights produced (at the next step; None: not readable
        # without a sync), and the first one: the reflex restores only snapshots whose loss
        # was finite, within the bound and not far above the first
        self._judge: int | None = None  # the initial weights: judged at the first step
        if self._reflex_on and self._keeper is not None and self._keeper.steps == [-1]:
            self._judge = -1
        self._snap_loss: dict[int, float | None] = {}
        self._first_loss: float | None = None
        self._episode: list[dict[str, int]] = []  # reflexes since the run was last healthy
        self._windows: list[tuple[int, int]] = []  # (lo, hi]: steps a reflex answered

        self._tr: Transport | None = None
        if self.streaming and not self.disabled:
            self._tr = Transport(
                url, run_name=run_name or "run", project=project, config=config, tags=tags,
                run_id=run_id, interval_s=interval_s, timeout_s=timeout_s,
                max_points=max_buffer_points, max_batch_points=max_batch_points,
                spool_path=spool_path, poll_s=poll_s, compact=compact,
                token=token,
                on_recommendation=None if self._ddp is not None else self._on_recs,
                on_round=self._on_round)
            if self._reflex_on:
                self._tr.watch_loss = self._bound
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ setup
    # ------------------------------------------------------------------ hot path
    def step(self, step: int, loss: Any = None, grad_norm: Any = None) -> None:
        """Record one optimizer step (call after ``optimizer.step()``/``scheduler.step()``).

        ``loss``/``grad_norm``: float or tensor (any device, kept as-is, read later without a
        sync); non-finite values are recorded as data. Never raises, never blocks.
        """
        try:
            i = self._i
            self._steps[i] = step
            self._loss[i] = loss
            self._gn[i] = grad_norm
            self._walls[i] = _time()
            pg = self._pg0
            if pg is not None:
                lr = pg["lr"]
                self._lrs[i] = lr if type(lr) is float else self._slow_lr()
            if self._reflex_on and loss is not None:
                if type(loss) is float:
                    if not -math.inf < loss <= self._bound:
                        self._trip(step)
                else:
                    self._check_loss(step, loss)
            i += 1
            self._i = i
            if i == self._cap or self._flag or step >= self._next_due:
                self._boundary(step, loss)
        except Exception as exc:
            self._internal("step", exc)
            if self._i >= self._cap:  # a failed hand-over: reuse the ring, lose its values
                self._i = 0
                self._counts["lost_points"] += self._cap

    def _slow_lr(self) -> float | None:
        """LR when the group holds a tensor or int: the controller's host copy (no sync)."""
        lr = self._pg0["lr"] if self._pg0 is not None else None
        if isinstance(lr, (int, float)):
            return float(lr)
        if self._ctrl is not None:
            if not self._ctrl_active:
                self._ctrl.on_step(self._last_step if self._last_step is not None else 0)
            return self._ctrl.current_lrs()[0]
        return None

    # ------------------------------------------------------------------ step boundary
    def _boundary(self, step: int, loss: Any) -> None:
        self._last_step = step
        if self._judge is not None:  # this loss was computed on the snapshot's weights
            self._judge_snapshot(self._judge, loss)
        self.rolled_back_to = None
        ctrl = self._ctrl
        if ctrl is not None and self._ctrl_active:
            ctrl.on_step(step)
        if self._i >= self._cap or self._want_flush:
            self._want_flush = False
            self._flush()
        tr = self._tr
        if self._reflex_on:
            if tr is not None:
                bound = self._user_bound if self._user_bound is not None else tr.blowup_bound
                self._bound = NO_BOUND if bound is None else bound
                tr.watch_loss = self._bound
                seen = tr.bad_loss
                if seen is not None:
                    tr.bad_loss = None
                    if seen[0] == self.branch and (self._bad is None or seen[1] < self._bad):
                        self._bad = seen[1]
            if self._bad is not None:
                bad, self._bad = self._bad, None
                try:
                    self._reflex(bad, step)
                except Exception as exc:
                    self._internal("reflex", exc)
        decisions: list[dict[str, Any]] | None = None
        if self._ddp is not None:
            if step >= self._next_sync:
                self._next_sync = (step // self._sync_every + 1) * self._sync_every
                decisions = self._ddp_round(step)
        elif self._tr is not None and self._tr.has_recs:
            decisions = self._tr.take_recommendations()
        if decisions:
            if self._i:
                self._flush()
            for rec in decisions:
                self._handle(rec, step, agreed=self._ddp is not None, loss=loss)
        if step >= self._next_snap and self._keeper is not None and self.rolled_back_to is None:
            self._snapshot(step, loss)  # (not right after a rollback: the state is step r's)
        if ctrl is not None:
            self._ctrl_active = _controller_active(ctrl)
        keeper = self._keeper
        if (self._reflex_on and keeper is not None and keeper.steps
                and keeper.steps[-1] == step and self.rolled_back_to is None):
            self._judge = step  # taken at this boundary: judge it at the next call
        self._next_due = min(self._next_snap, self._next_sync)
        recs = self._ddp is None and tr is not None and (tr.has_recs or tr.bad_loss is not None)
        self._flag = (self._want_flush or self._ctrl_active or recs
                      or self.rolled_back_to is not None or self._judge is not None)

    def _on_recs(self) -> None:
        """Sender thread: recommendations are waiting; look at them at the next boundary."""
        self._flag = True

    def _on_round(self) -> None:
        """Sender thread, every round: hand over what the ring holds at the next step, so slow
        loops report within ~``interval_s`` instead of every ``flush_every`` steps."""
        if self._i:
            self._want_flush = True
            self._flag = True

    def _flush(self) -> None:
        """Hand the ring's values and logged metrics to the sender (see :mod:`._ring`)."""
        n = self._i
        if n == 0 and not self._extra:
            return
        self._i = 0
        if n:
            self._last_step = self._steps[n - 1]
        if self._tr is None or self._closed:
            if n:
                self._loss[:] = self._gn[:] = self._nones
            self._extra.clear()
            return
        series = ring_series(n, self._steps, self._walls, [("loss", self._loss),
                             ("grad_norm", self._gn)], self._lrs if self._pg0 is not None
                             else None, self._nones) if n else []
        if self._extra:
            series.extend(extra_series(self._extra))
            self._extra = []
        if series:
            self._tr.submit(Chunk(self.branch, self.branch_start, series))

    # ------------------------------------------------------------------ other public API
    def log(self, data: Mapping[str, Any] | int | None = None, step: int | None = None,
            **metrics: Any) -> None:
        """Record extra metrics (floats or tensors, e.g. validation loss and accuracy).

        ``hook.log({"val/loss": v, "val/acc": a}, step=s)`` as in W&B or MLflow, or the
        keyword form ``hook.log(s, val_loss=v)``. Without a step, the metrics are logged at
        the last step recorded by :meth:`step` (0 before any). Never raises.
        """
        try:
            if isinstance(data, Mapping):
                metrics = {**data, **metrics}
            elif data is not None:
                step = data  # the keyword form: the step is the first argument
            if step is None:
                step = self._recorded_step()
            wall = _time()
            for name, value in metrics.items():
                self._extra.append((str(name), int(step), float(value)
                                    if isinstance(value, bool) else value, wall))
            if self._tr is not None:
                self._tr.submit(Chunk(self.branch, self.branch_start,
                                      extra_series(self._extra)))
            self._extra = []
        except Exception as exc:
            self._internal("log", exc)

    def _recorded_step(self) -> int:
        """The step of the newest :meth:`step` call (0 before the first)."""
        if self._i:
            return int(self._steps[self._i - 1])
        return int(self._last_step) if self._last_step is not None else 0

    def steps(self, stop: int, start: int = 0) -> Iterator[int]:
        """Yield step numbers ``start..stop-1``; after a rollback to ``r`` continue at
        ``r + 1``; end early when :attr:`should_stop` is set."""
        step = start
        while step < stop and not self.should_stop:
            seen = self._rollbacks
            yield step
            if self._rollbacks != seen and self.resume_step is not None:
                step = self.resume_step
            else:
                step += 1

    @property
    def run_id(self) -> str | None:
        """The daemon's run id (generated client-side unless given)."""
        return self._tr.run_id if self._tr is not None else None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``sent``/``dropped``/``spooled``/``buffered`` (points), ``retried``/
        ``errors`` (requests and internal errors), ``recs_applied``/``recs_rejected``."""
        out = dict(self._tr.stats) if self._tr is not None else {
            "sent": 0, "dropped": 0, "retried": 0, "errors": 0, "spooled": 0}
        out["recs_applied"] = self._counts["recs_applied"]
        out["recs_rejected"] = self._counts["recs_rejected"]
        out["reflexes"] = self._counts["reflexes"]
        out["internal_errors"] = out.get("internal_errors", 0) + self._counts["internal_errors"]
        out["errors"] += self._counts["internal_errors"]
        out["dropped"] += self._counts["lost_points"]
        return out

    def flush(self) -> None:
        """Hand everything recorded so far to the sender now (off the hot path)."""
        try:
            if self._ddp is None:
                self._flush()
            if self._tr is not None:
                self._tr.wake()
        except Exception as exc:
            self._internal("flush", exc)

    def close(self, status: str | None = None) -> dict[str, int]:
        """Flush, wait up to ``close_timeout_s`` for delivery, finish the run, log counters."""
        if self._closed:
            return self.stats
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit)
        try:
            self._flush()
        except Exception as exc:
            self._internal("close", exc)
        self._closed = True  # later steps are counted nowhere and sent nowhere
        try:
            if self._ddp is not None:
                self._ddp.finish()
        except Exception as exc:
            self._internal("close", exc)
        if status is None:
            status = "stopped" if self.should_stop else "finished"
        if self._tr is not None:
            try:
                self._tr.close(status=status, step=self._last_step,
                               timeout_s=self.close_timeout_s)
            except Exception as exc:
                self._internal("close", exc)
        stats = self.stats
        if self.streaming:  # louder when something was lost or went wrong
            level = logging.WARNING if stats["dropped"] or stats["errors"] else logging.INFO
            log.log(level, "rhythmd_client closed: %s",
                    ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
        return stats

    def _atexit(self) -> None:
        self.close()

    def __enter__(self) -> RhythmHook:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close("stopped" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def _internal(self, where: str, exc: BaseException) -> None:
        """Count an internal error; log it once per place and type. Never re-raises."""
        try:
            self._counts["internal_errors"] += 1
            key = f"{where}:{type(exc).__name__}"
            if key not in self._logged:
                self._logged.add(key)
                log.error("rhythmd_client internal error in %s (logged once; training "
                          "continues)", where, exc_info=exc)
        except Exception:
            pass
