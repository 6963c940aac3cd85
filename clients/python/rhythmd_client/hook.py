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
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rhythmd_client._buffer import freeze
from rhythmd_client.transport import Chunk, Transport

log = logging.getLogger("rhythmd_client")

ACTIONS = frozenset({"reduce_lr", "warmup", "set_schedule", "increase_lr", "rollback", "revert",
                     "stop"})
"""Every action the daemon may recommend. All are allowed by default in ``mode="apply"``:
choosing apply mode is the opt-in, LR changes stay inside ``min_lr``/``max_lr``, ``rollback``
is rejected anyway without ``model=`` (no snapshots), and ``stop`` only raises
``should_stop``, which the loop reads."""

_time = time.time
_NEVER = 2**63
_NO_BOUND = sys.float_info.max  # "not -inf < loss <= bound" then catches NaN and +-inf only
_LR_CHANGES = frozenset({"reduce_lr", "increase_lr", "warmup", "set_schedule"})
_SUPERSEDABLE = frozenset({"rollback", "warmup"})
REFLEX_AUTHOR = "rhythmd-client/reflex"
REFLEX_TRUST_FACTOR = 4.0
"""A snapshot whose weights gave a loss above this many times the run's first loss is not
restored by the reflex: it was taken during the blow-up (finite, but already diverged)."""
REFLEX_DEFAULTS: dict[str, Any] = {
    "lr_factor": 0.1, "warmup_steps": 20, "warmup_start_factor": 0.1, "blowup_bound": None,
    "max_attempts": 4, "healthy_steps": 200,
}
"""Local reflex settings: ``lr_factor`` (relative LR cut per attempt, 0 < f <= 1),
``warmup_steps`` (steps of the linear re-warm; 0: none) from ``warmup_start_factor`` (relative),
``blowup_bound`` (absolute loss above which the reflex fires; default: the daemon's, else only
non-finite losses), ``max_attempts`` (reflexes per episode; then the daemon decides),
``healthy_steps`` (steps without a reflex that end an episode)."""
_NONE_ONLY = {type(None)}
_FLOAT_ONLY = {float}


def _pack(code: str, values: list[Any]) -> Any:
    """``array(code, values)``, or a list copy when the values do not fit (odd types)."""
    try:
        return array.array(code, values)
    except (TypeError, OverflowError, ValueError):
        return list(values)


def _controller_active(ctrl: Any) -> bool:
    """Whether the controller needs ``on_step`` at every step (a warmup ramp or a schedule
    override is running). Calling it only then saves ~1 µs per step when idle."""
    active = getattr(ctrl, "active", None)
    if isinstance(active, bool):
        return active
    return bool(getattr(ctrl, "_ramps", True)) or getattr(ctrl, "_override", None) is not None


class RhythmHook:
    """Streams metrics to a rhythmd daemon and applies its recommendations at step boundaries.

    Args:
        url: daemon base URL.
        run_name, project, config, tags: run metadata; ``run_id`` attaches to an existing run.
        optimizer, scheduler: enable the ``lr`` series and applying LR changes.
        model: enables in-memory rollback snapshots (with ``optimizer``).
        mode: ``"apply"`` (apply allowed actions) or ``"advise"`` (log them, change nothing,
            ack as rejected with reason "advise mode").
        allow: actions that may be applied; default :data:`ACTIONS`.
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
            of the run's project); default ``$RHYTHMD_TOKEN``.
        reflex: the local reflex (apply mode only, needs ``optimizer``; off under DDP):
            ``True`` (default settings, :data:`REFLEX_DEFAULTS`), ``False``, or a dict that
            overrides some settings. It reads the loss only, never gradients. It restores
            only if ``allow`` has ``rollback`` and re-warms only if it has ``warmup``.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", run_name: str | None = None,
        project: str | None = None, *, optimizer: Any = None, scheduler: Any = None,
        model: Any = None, mode: str = "apply", allow: Iterable[str] | None = None,
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
        if mode not in ("apply", "advise"):
            raise ValueError(f"mode must be 'apply' or 'advise', got {mode!r}")
        self.mode = mode
        self.allow = frozenset(ACTIONS if allow is None else allow)
        unknown = self.allow - ACTIONS
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
        if self.world_size > 1 and ddp_sync:
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
        if optimizer is not None:
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
        self._bound = self._user_bound if self._user_bound is not None else _NO_BOUND
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
        if self.streaming:
            self._tr = Transport(
                url, run_name=run_name or "run", project=project, config=config, tags=tags,
                run_id=run_id, interval_s=interval_s, timeout_s=timeout_s,
                max_points=max_buffer_points, max_batch_points=max_batch_points,
                spool_path=spool_path, poll_s=poll_s, compact=compact, token=token,
                on_recommendation=None if self._ddp is not None else self._on_recs,
                on_round=self._on_round)
            if self._reflex_on:
                self._tr.watch_loss = self._bound
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _reflex_settings(reflex: bool | dict[str, Any]) -> dict[str, Any] | None:
        if reflex is False or reflex is None:
            return None
        given = {} if reflex is True else dict(reflex)
        unknown = set(given) - set(REFLEX_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown reflex settings: {sorted(unknown)}")
        rx = {**REFLEX_DEFAULTS, **given}
        if not 0.0 < float(rx["lr_factor"]) <= 1.0:
            raise ValueError("reflex lr_factor must be in (0, 1]")
        if float(rx["warmup_start_factor"]) <= 0 or int(rx["warmup_steps"]) < 0:
            raise ValueError("reflex warmup_start_factor must be > 0, warmup_steps >= 0")
        if int(rx["max_attempts"]) < 1 or int(rx["healthy_steps"]) < 1:
            raise ValueError("reflex max_attempts and healthy_steps must be >= 1")
        bound = rx["blowup_bound"]
        if bound is not None and not (isinstance(bound, (int, float)) and math.isfinite(bound)):
            raise ValueError("reflex blowup_bound must be a finite number or None")
        return rx

    @staticmethod
    def _detect_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
        if rank is not None:
            return int(rank), int(world_size or 1)
        torch = sys.modules.get("torch")  # never import torch just to look
        dist = getattr(torch, "distributed", None) if torch is not None else None
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, int(world_size or 1)

    def _make_ddp(self, process_group: Any) -> Any:
        import torch.distributed as dist

        from rhythmd_client._ddp import DecisionSync

        group = process_group
        if group is None and dist.get_backend() != "gloo":
            group = dist.new_group(backend="gloo")  # CPU tensors: no GPU sync to read them
        return DecisionSync(self.rank, group, src=self.stream_rank)  # src: a global rank

    def _setup_controller(self, optimizer: Any, scheduler: Any, model: Any, min_lr: Any,
                          max_lr: Any, snapshot_every: int, snapshot_max_bytes: int) -> None:
        try:
            from rhythmd_client.apply import LRController
        except ImportError as exc:
            self._internal("import apply", exc)
            return
        if model is not None:
            try:
                from rhythmd_client.snapshot import SnapshotKeeper

                self._keeper = SnapshotKeeper(model, optimizer, scheduler,
                                              max_bytes=snapshot_max_bytes,
                                              every_steps=snapshot_every)
            except Exception as exc:
                self._internal("snapshots", exc)
        self._ctrl = LRController(optimizer, scheduler, min_lr=min_lr, max_lr=max_lr,
                                  snapshots=self._keeper)

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

    def _trip(self, step: int) -> None:
        """A loss the reflex must answer at this step's boundary (the same call)."""
        if self._bad is None:
            self._bad = step
        self._flag = True

    def _check_loss(self, step: int, loss: Any) -> None:
        """Loss checks that need no device sync: CPU tensors and other numbers; device
        tensors are checked by the sender when their value reaches the host."""
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(loss, torch.Tensor):
            if not loss.is_cpu:
                return
            try:
                value = loss.item()  # a host read, no device sync
            except RuntimeError:  # not one element: not a loss the reflex can judge
                return
        elif isinstance(loss, (int, float)):
            value = float(loss)
        else:
            return
        if not -math.inf < value <= self._bound:
            self._trip(step)

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
                self._bound = _NO_BOUND if bound is None else bound
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
        """Hand the ring's values to the sender. Plain numbers are copied into ``array``s
        (the cyclic GC never visits their elements) and the ring lists are reused, so a
        hand-over leaves few objects behind to drive the GC's costly full collections; a list
        holding tensors is handed over as a copy and the ring's references are cleared."""
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
        series: list[tuple[str, Any, Any, Any]] = []
        if n:
            full = n == self._cap
            steps = _pack("q", self._steps if full else self._steps[:n])
            walls = _pack("d", self._walls if full else self._walls[:n])
            for name, ring in (("loss", self._loss), ("grad_norm", self._gn)):
                vals = ring if full else ring[:n]
                kinds = set(map(type, vals))  # identity-based: tensor == None would be an op
                if kinds == _NONE_ONLY:
                    continue
                if kinds == _FLOAT_ONLY:
                    series.append((name, steps, array.array("d", vals), walls))
                else:
                    series.append((name, steps, freeze(list(vals)), walls))
                ring[:] = self._nones  # drop the references to tensors now
            if self._pg0 is not None:
                series.append(("lr", steps, _pack("d", self._lrs if full else self._lrs[:n]),
                               walls))
        if self._extra:
            series.extend(self._extra_series())
        if series:
            self._tr.submit(Chunk(self.branch, self.branch_start, series))

    def _extra_series(self) -> list[tuple[str, list[int], Any, list[float]]]:
        by_name: dict[str, tuple[list[int], list[Any], list[float]]] = {}
        for name, step, value, wall in self._extra:
            s = by_name.setdefault(name, ([], [], []))
            s[0].append(step)
            s[1].append(value)
            s[2].append(wall)
        self._extra = []
        return [(name, st, freeze(v), w) for name, (st, v, w) in by_name.items()]

    def _snapshot(self, step: int, loss: Any) -> None:
        self._next_snap = (step // self._snap_every + 1) * self._snap_every
        self._keeper.maybe_snapshot(step, self._healthy(loss))
        self._check_too_large()

    def _check_too_large(self) -> None:
        """Once the state outgrew ``snapshot_max_bytes``, keep no snapshot at all (warn once):
        an old one, such as the initial weights, would undo far more than a rollback means
        to. Rollbacks are then rejected (the daemon falls back to a cut plus re-warm), the
        reflex cuts and re-warms, and reverts undo the LR only."""
        keeper = self._keeper
        if keeper is None or not keeper.skipped["too_large"] or "too_large" in self._logged:
            return
        self._logged.add("too_large")
        keeper.mark_unhealthy_after(-2)  # drops every snapshot
        log.warning("rhythmd: model + optimizer state exceed snapshot_max_bytes (%d bytes); "
                    "no snapshots are kept, so rollbacks are rejected and the daemon falls "
                    "back to a cut plus re-warm", keeper.max_bytes)

    def _healthy(self, loss: Any) -> bool:
        """Whether the state now is worth a snapshot, judged on the host values known."""
        if type(loss) is float and not -math.inf < loss <= self._bound:
            return False
        # last loss values the sender read were not finite
        return not (self._ddp is None and self._tr is not None and self._tr.loss_finite is False)

    # ------------------------------------------------------------------ recommendations
    def _decide(self, rec: dict[str, Any], step: int) -> str | None:
        """Reason to reject ``rec`` at ``step``, or None to apply it."""
        action = rec.get("action")
        if self.mode == "advise":
            return "advise mode"
        if action not in self.allow:
            return f"action {action!r} not allowed by this hook"
        expires = rec.get("expires_at_step")
        if isinstance(expires, int) and expires < step:
            return f"stale: expired at step {expires}, now at step {step}"
        if self._ctrl is None and action != "stop":
            return "no optimizer given to the hook"
        if action == "rollback" and "too_large" in self._logged:
            return "no snapshots: model + optimizer state exceed snapshot_max_bytes"
        issued = rec.get("issued_at_step")
        if action in _SUPERSEDABLE and isinstance(issued, int) and any(
                lo < issued <= hi for lo, hi in self._windows):
            return "superseded by local reflex"
        return None

    def _handle(self, rec: dict[str, Any], step: int, agreed: bool, loss: Any = None) -> None:
        """Apply (or reject) one recommendation at this step boundary; the streaming rank
        acks."""
        rid, action = str(rec.get("id")), str(rec.get("action"))
        params = rec.get("params") or {}
        if not agreed:
            reason = self._decide(rec, step)
            if reason is not None:
                self._reject(rid, action, step, reason, rec)
                return
        lrs = self._lrs_now()
        if action == "stop":
            self.should_stop = True
            self._accept(rid, action, step, lrs, lrs, "stop requested")
            return
        try:
            from rhythmd_client.apply import RecommendationRejected
        except ImportError as exc:
            self._internal("import apply", exc)
            return
        try:
            self._ctrl.on_step(step)  # bring the controller's step/host copies up to date
            if action in _LR_CHANGES:  # a change point: revertible, with a snapshot if kept
                done = self._ctrl.apply(action, params, step, change_id=rid,
                                        snapshot=self._healthy(loss))
                self._after_forced_snapshot(step)
                self._check_too_large()
            else:
                done = self._ctrl.apply(action, params, step)
        except RecommendationRejected as exc:
            self._reject(rid, action, step, exc.reason, rec)
            return
        except Exception as exc:
            self._internal("apply", exc)
            self._reject(rid, action, step, f"internal error: {type(exc).__name__}: {exc}", rec)
            return
        self._pg0 = self.optimizer.param_groups[0]  # load_state_dict replaces the groups
        if done.restored:
            self._new_branch(int(done.step))
        if getattr(self._ctrl, "stop_requested", False):
            self.should_stop = True
        self._accept(rid, action, step, list(done.lr_before), list(done.lr_after), done.note)

    def _new_branch(self, restored: int) -> None:
        """Continue on a new branch after model/optimizer were restored to step ``restored``.

        The daemon's branch view is parent steps < start + new-branch steps >= start, and the
        snapshot holds the state *after* step ``restored``: the new branch starts at the step
        after it, so every step shows exactly once in the latest view."""
        self.branch += 1
        self.branch_start = restored + 1
        self.rolled_back_to = restored
        self.resume_step = restored + 1
        self._rollbacks += 1
        if self._keeper is not None:
            self._next_snap = (restored // self._snap_every + 1) * self._snap_every
        if self._ddp is not None:
            self._next_sync = (restored // self._sync_every + 1) * self._sync_every

    def _after_forced_snapshot(self, step: int) -> None:
        """A change point's snapshot counts as the periodic one: none more at this step."""
        keeper = self._keeper
        if keeper is not None and keeper.steps and keeper.steps[-1] == step:
            self._next_snap = max(self._next_snap,
                                  (step // self._snap_every + 1) * self._snap_every)

    # ------------------------------------------------------------------ local reflex
    def _judge_snapshot(self, snap_step: int, loss: Any) -> None:
        """Keep the loss that the snapshot at ``snap_step`` produced (host values only)."""
        self._judge = None
        value: float | None = None
        if type(loss) is float:
            value = loss
        elif loss is not None:
            torch = sys.modules.get("torch")
            if torch is not None and isinstance(loss, torch.Tensor) and loss.is_cpu \
                    and loss.numel() == 1:
                value = loss.item()
        if value is not None and self._first_loss is None and math.isfinite(value):
            self._first_loss = value
        self._snap_loss[snap_step] = value
        if len(self._snap_loss) > 64 and self._keeper is not None:
            held = set(self._keeper.steps)
            self._snap_loss = {k: v for k, v in self._snap_loss.items() if k in held}

    def _trusted(self, snap_step: int) -> bool:
        """Whether a snapshot's weights were healthy: the loss they produced was finite,
        within the blow-up bound and at most ``REFLEX_TRUST_FACTOR`` times the first loss
        of the run (when positive); unknown (not read yet, or a device tensor): trusted."""
        value = self._snap_loss.get(snap_step)
        if value is None:
            return True
        if not -math.inf < value <= self._bound:
            return False
        first = self._first_loss
        return first is None or first <= 0 or value <= REFLEX_TRUST_FACTOR * first

    def _reflex(self, bad: int, step: int) -> None:
        """Answer a blown-up loss at step ``bad`` now, at the boundary of ``step``: restore
        the newest snapshot that did not produce it, cut the LR, re-warm, report."""
        rx = self._rx
        assert rx is not None and self._ctrl is not None
        if self._episode and step - self._episode[-1]["resume"] > rx["healthy_steps"]:
            self._episode.clear()  # healthy for a while since the last reflex: a new episode
        if len(self._episode) >= rx["max_attempts"]:
            if "reflex:exhausted" not in self._logged:
                self._logged.add("reflex:exhausted")
                log.warning("rhythmd reflex: %d attempts did not cure the run; leaving it "
                            "to the daemon", rx["max_attempts"])
            return
        if self._i:
            self._flush()  # the blown-up values go out on the branch that produced them
        self._ctrl.on_step(step)
        # A snapshot at r holds the weights that produced the loss at r + 1: the one at
        # bad - 1 made the bad loss, so the newest usable one is at or before bad - 2 (the
        # initial weights, step -1, when the very first steps blew up).
        keeper = self._keeper
        held = keeper.steps if keeper is not None and "rollback" in self.allow else []
        usable = [r for r in held if r <= max(bad - 2, -1) and self._trusted(r)]
        restore_to = usable[-1] if usable else None
        attempts = len(self._episode) + 1
        # cuts already in the restored state: those of reflexes that restored an earlier one
        inherent = 0 if restore_to is None else sum(
            1 for e in self._episode if e["cut_after"] < restore_to)
        cut = float(rx["lr_factor"]) ** max(1, attempts - inherent)
        warm, warm_start = int(rx["warmup_steps"]), float(rx["warmup_start_factor"])
        what = f"loss at step {bad} not finite" + (
            "" if self._bound == _NO_BOUND else f" or above the blow-up bound {self._bound:.6g}")
        if restore_to is None and "warmup" not in self.allow:
            return  # the user allowed neither a restore nor a re-warm
        if restore_to is not None:
            action = "rollback"
            params: dict[str, Any] = {"to_step": restore_to, "lr_factor": cut,
                                      "warmup_steps": warm, "warmup_start_factor": warm_start}
            sent = {k: params[k] for k in ("to_step", "lr_factor", "warmup_steps")}
        else:
            action = "warmup"  # no snapshot: cut plus re-warm, as the daemon's fallback
            params = {"warmup_steps": max(1, warm), "start_factor": cut * warm_start,
                      "peak_factor": cut}
            sent = dict(params)
        done = self._ctrl.apply(action, params, step)
        self._pg0 = self.optimizer.param_groups[0]
        restored = int(done.step) if done.restored else None
        if restored is not None:
            self._new_branch(restored)
        # daemon advice issued for the blow-up's steps, or during the re-warm (its latency),
        # answers this blow-up: superseded
        self._windows.append((restored if restored is not None else bad - 1, step + warm))
        del self._windows[:-8]
        # snapshots taken after step "cut_after" carry this cut; the episode runs from "resume"
        self._episode.append({"cut_after": restored if restored is not None else step,
                              "resume": step if restored is None else restored + 1})
        self._counts["reflexes"] += 1
        note = f"local reflex: {what}; {done.note}"
        entry = {"action": action, "params": sent, "bad_step": bad, "step": step,
                 "lr_before": list(done.lr_before), "lr_after": list(done.lr_after),
                 "note": note}
        self.reflexes.append(entry)
        del self.reflexes[:-64]
        log.warning("rhythmd %s", note)
        if self._tr is not None:
            self._tr.report(
                {"action": action, "params": sent, "author": REFLEX_AUTHOR,
                 "reason": f"local reflex: {what}"},
                {"status": "applied", "step": step, "lr_before": list(done.lr_before),
                 "lr_after": list(done.lr_after), "note": note[:2000]})
            self._tr.wake()

    def _lrs_now(self) -> list[float]:
        if self._ctrl is None:
            return []
        try:
            return list(self._ctrl.current_lrs())
        except Exception:
            return []

    def _accept(self, rid: str, action: str, step: int, before: list[float],
                after: list[float], note: str) -> None:
        self._counts["recs_applied"] += 1
        self.applied.append({"id": rid, "action": action, "step": step, "lr_before": before,
                             "lr_after": after, "note": note})
        log.warning("rhythmd applied %s at step %d: %s", action, step, note)
        if self._tr is not None:
            self._tr.ack(rid, {"status": "applied", "step": step, "lr_before": before,
                               "lr_after": after, "note": note})

    def _reject(self, rid: str, action: str, step: int, reason: str,
                rec: dict[str, Any]) -> None:
        self._counts["recs_rejected"] += 1
        lrs = self._lrs_now()
        if reason == "advise mode":
            log.warning("rhythmd recommends %s %s at step %d: %s", action,
                        json.dumps(rec.get("params") or {}), step, rec.get("reason", ""))
        else:
            log.warning("rhythmd recommendation %s (%s) rejected: %s", rid, action, reason)
        if self._tr is not None:
            self._tr.ack(rid, {"status": "rejected", "step": step, "lr_before": lrs,
                               "lr_after": lrs, "note": reason})

    # ------------------------------------------------------------------ DDP
    def _ddp_round(self, step: int) -> list[dict[str, Any]] | None:
        """Every rank, every K steps: apply the streaming rank's previous decision; it
        proposes the next."""
        payload = None
        if self.streaming:
            try:
                payload = self._ddp_decide(step)
            except Exception as exc:  # still enter the collective, with "none"
                self._internal("ddp decide", exc)
                payload = None
        raw = self._ddp.exchange(payload)
        if not raw:
            return None
        return json.loads(raw)

    def _ddp_decide(self, step: int) -> bytes | None:
        """Streaming rank: pick what to apply one round from now; reject the rest."""
        if self._tr is None or not self._tr.has_recs:
            return None
        chosen = []
        for rec in self._tr.take_recommendations():
            reason = self._decide(rec, step)
            if reason is not None:
                self._reject(str(rec.get("id")), str(rec.get("action")), step, reason, rec)
                continue
            chosen.append({"id": rec.get("id"), "action": rec.get("action"),
                           "params": rec.get("params") or {}})
        return json.dumps(chosen).encode() if chosen else None

    # ------------------------------------------------------------------ other public API
    def log(self, step: int, **metrics: Any) -> None:
        """Record extra metrics at ``step`` (e.g. ``val_loss=..``); floats or tensors."""
        try:
            wall = _time()
            for name, value in metrics.items():
                if isinstance(value, bool):
                    value = float(value)
                self._extra.append((name, step, value, wall))
            if self._tr is not None:
                self._tr.submit(Chunk(self.branch, self.branch_start, self._extra_series()))
            else:
                self._extra.clear()
        except Exception as exc:
            self._internal("log", exc)

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
