"""In-memory rollback snapshots of model, optimizer and scheduler state.

Units: ``step`` counts optimizer steps; ``max_bytes`` bounds the host memory (bytes) held by
snapshot tensors. A snapshot copies model and optimizer state dicts to CPU; on CUDA that copy
synchronises the device, which is acceptable only here (every ``every_steps`` steps), never in
the per-step hot path. Scheduler state is tiny and is deep-copied where it lives.

The module imports without torch; torch is only touched through the objects passed in.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .apply import RecommendationRejected

__all__ = ["Snapshot", "SnapshotKeeper"]

_MAX_USER_STEPS = 10_000


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _nbytes(obj: Any) -> int:
    """Bytes of tensor data reachable from a (nested) state dict; shared storage counts twice."""
    if _is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _copy_cpu(obj: Any) -> Any:
    """Deep copy with every tensor detached and copied to CPU (a fresh buffer even on CPU)."""
    if _is_tensor(obj):
        t = obj.detach()
        return t.clone() if t.device.type == "cpu" else t.to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _copy_cpu(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_copy_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_cpu(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class Snapshot:
    """One restorable state at ``step`` (after that step's optimizer and scheduler steps)."""

    step: int
    nbytes: int = 0
    seq: int = 0
    model: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: Any = None
    controller: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SnapshotKeeper:
    """Keeps recent healthy snapshots within ``max_bytes`` and restores them for rollback.

    With ``save_fn``/``load_fn`` (callables taking the step) the user owns storage and this
    class only remembers which steps were saved. ``controller`` (an ``LRController``) has its
    host-side state saved and restored with each snapshot; ``LRController(snapshots=...)``
    attaches itself.
    """

    def __init__(
        self,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        *,
        max_bytes: int = 512 * 2**20,
        every_steps: int = 100,
        save_fn: Callable[[int], Any] | None = None,
        load_fn: Callable[[int], Any] | None = None,
        controller: Any = None,
    ) -> None:
        if every_steps < 1:
            raise ValueError("every_steps must be >= 1")
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if (save_fn is None) != (load_fn is None):
            raise ValueError("give both save_fn and load_fn, or neither")
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_bytes = max_bytes
        self.every_steps = every_steps
        self.save_fn = save_fn
        self.load_fn = load_fn
        self.controller = controller
        self._snaps: list[Snapshot] = []  # ascending by step
        self._last_taken: int | None = None
        self._seq = 0
        self.skipped: Counter[str] = Counter()

    # ------------------------------------------------------------------ queries

    @property
    def steps(self) -> list[int]:
        """Steps of the snapshots held, oldest first."""
        return [s.step for s in self._snaps]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held by all snapshots."""
        return sum(s.nbytes for s in self._snaps)

    @property
    def last_seq(self) -> int | None:
        """Sequence number of the newest snapshot held (unique per keeper), or None."""
        return self._snaps[-1].seq if self._snaps else None

    def holds(self, step: int, seq: int | None = None) -> bool:
        """Whether a snapshot labelled exactly ``step`` (and, if given, numbered ``seq``) is
        held."""
        return any(s.step == step and (seq is None or s.seq == seq) for s in self._snaps)

    # ------------------------------------------------------------------ taking

    def maybe_snapshot(self, step: int, healthy: bool = True) -> bool:
        """Take a snapshot if ``healthy`` and ``every_steps`` have passed since the last one.

        Call at a step boundary, after optimizer.step()/scheduler.step(); the copy is complete
        when this returns. Returns True when a snapshot was taken.
        """
        if not healthy:
            self.skipped["unhealthy"] += 1
            return False
        if self._last_taken is not None and step - self._last_taken < self.every_steps:
            return False
        return self.snapshot(step)

    def snapshot(self, step: int) -> bool:
        """Take a snapshot now; False (and a counted reason) if it cannot be kept."""
        ctrl = self.controller.state_dict() if self.controller is not None else None
        if self.save_fn is not None:
            self.save_fn(step)
            self._drop_after(step - 1)
            self._seq += 1
            self._snaps.append(Snapshot(step=step, seq=self._seq, controller=ctrl))
            del self._snaps[:-_MAX_USER_STEPS]
            self._last_taken = step
            return True
        model_sd = self.model.state_dict() if self.model is not None else None
        opt_sd = self.optimizer.state_dict() if self.optimizer is not None else None
        size = _nbytes(model_sd) + _nbytes(opt_sd)
        if size > self.max_bytes:
            self.skipped["too_large"] += 1
            self._last_taken = step  # do not retry the copy at every step
            return False
        self._drop_after(step - 1)
        # Evict oldest first so that peak host memory stays within max_bytes.
        while self._snaps and self.nbytes + size > self.max_bytes:
            self._snaps.pop(0)
            self.skipped["evicted"] += 1
        self._seq += 1
        snap = Snapshot(
            step=step,
            nbytes=size,
            seq=self._seq,
            model=_copy_cpu(model_sd) if model_sd is not None else None,
            optimizer=_copy_cpu(opt_sd) if opt_sd is not None else None,
            scheduler=self._scheduler_state(),
            controller=ctrl,
        )
        self._snaps.append(snap)
        self._last_taken = step
        return True

    def _scheduler_state(self) -> Any:
        if self.scheduler is None:
            return None
        if isinstance(self.scheduler, (list, tuple)):
            return [copy.deepcopy(s.state_dict()) for s in self.scheduler]
        return copy.deepcopy(self.scheduler.state_dict())

    # ------------------------------------------------------------------ restoring

    def mark_unhealthy_after(self, step: int) -> None:
        """Drop snapshots taken after ``step`` (training was already bad then)."""
        self._drop_after(step)
        if self._last_taken is not None and self._last_taken > step:
            self._last_taken = self._snaps[-1].step if self._snaps else None

    def _drop_after(self, step: int) -> None:
        self._snaps = [s for s in self._snaps if s.step <= step]

    def restore(self, to_step: int, seq: int | None = None) -> int:
        """Restore the newest snapshot at or before ``to_step`` (with ``seq``: exactly that
        snapshot, labelled ``to_step``); return its step."""
        if seq is None:
            cands = [s for s in self._snaps if s.step <= to_step]
        else:
            cands = [s for s in self._snaps if s.step == to_step and s.seq == seq]
        if not cands:
            raise RecommendationRejected(f"no snapshot at or before step {to_step}")
        snap = cands[-1]
        if self.load_fn is not None:
            self.load_fn(snap.step)
        else:
            if snap.model is not None:
                self.model.load_state_dict(_copy_cpu(snap.model))
            if snap.optimizer is not None:
                self._load_optimizer(_copy_cpu(snap.optimizer))
            if snap.scheduler is not None:
                if isinstance(self.scheduler, (list, tuple)):
                    for s, sd in zip(self.scheduler, snap.scheduler, strict=True):
                        s.load_state_dict(copy.deepcopy(sd))
                else:
                    self.scheduler.load_state_dict(copy.deepcopy(snap.scheduler))
        if self.controller is not None:
            if snap.controller is not None:
                self.controller.load_state_dict(copy.deepcopy(snap.controller))
            else:
                self.controller.sync_host_lrs()
        # Later snapshots belong to the abandoned branch.
        self._drop_after(snap.step)
        self._last_taken = snap.step
        return snap.step

    def _load_optimizer(self, sd: dict[str, Any]) -> None:
        """load_state_dict that keeps tensor hyperparameters (lr...) as the same objects.

        Fused/capturable optimizers, torch.compile and CUDA graphs hold references to the
        group's LR tensor, so its value is copied into the existing tensor.
        """
        opt = self.optimizer
        keep = [
            {k: v for k, v in g.items() if k != "params" and _is_tensor(v)}
            for g in opt.param_groups
        ]
        opt.load_state_dict(sd)
        for g, old in zip(opt.param_groups, keep, strict=True):
            for k, t in old.items():
                new = g.get(k)
                if new is t:
                    continue
                if _is_tensor(new):
                    t.copy_(new)
                elif new is not None:
                    t.fill_(new)
                g[k] = t
