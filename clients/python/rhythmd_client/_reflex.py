"""The hook's local reflex: answer a blown-up loss at once, before the daemon can.

A loss that is not finite, or above the blow-up bound (absolute loss), makes the hook restore
the newest snapshot whose weights were healthy, cut the LR (a relative factor per attempt) and
re-warm, then report what it did to the daemon (author :data:`REFLEX_AUTHOR`). Units: steps
count optimizer steps; LR factors are relative to the LR at the moment of application.
:class:`ReflexMixin` is part of :class:`~rhythmd_client.hook.RhythmHook` and works on its
state; it reads the loss only, never gradients.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

log = logging.getLogger("rhythmd_client")

NO_BOUND = sys.float_info.max  # "not -inf < loss <= bound" then catches NaN and +-inf only

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


class ReflexMixin:
    """The reflex part of :class:`~rhythmd_client.hook.RhythmHook` (its state lives there)."""

    _bound: float
    _bad: int | None
    _flag: bool

    @staticmethod
    def _reflex_settings(reflex: bool | dict[str, Any]) -> dict[str, Any] | None:
        """Validated reflex settings (``reflex`` as given to the hook); None: off."""
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
            "" if self._bound == NO_BOUND else f" or above the blow-up bound {self._bound:.6g}")
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
