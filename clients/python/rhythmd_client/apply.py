"""Apply daemon recommendations to a live torch optimizer and its LR scheduler.

Units: ``step`` counts optimizer steps; every LR is an absolute learning rate; every
``*factor`` is a multiplier relative to a param group's LR at the moment of application.
Semantics of each action are documented in ``docs/recommendations.md``.

Design in one paragraph: a factor change is written *into the user's scheduler in place*
(``base_lrs``, ``max_lrs``, ``eta_min``, OneCycle's per-group ``initial_lr``/``max_lr``/
``min_lr`` and the param groups' ``lr``/``initial_lr``) so that the scheduler the user keeps
stepping produces ``factor x`` its original trajectory, whether it is chainable (recursive,
reads ``group["lr"]``) or closed-form (recomputes from ``base_lrs``). Warmup ramps are a
sequence of such in-place rescales, one per step in :meth:`LRController.on_step`.
``set_schedule`` installs an override that :meth:`LRController.on_step` writes after the
user's ``scheduler.step()``. Tensor LRs are changed with ``mul_``/``fill_``, never replaced.

The module imports without torch; torch is only touched through the objects passed in.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rhythmd_client._lr_params import (
    RecommendationRejected,
    bounds,
    cut_factors,
    hi_of,
    integer,
    lo_of,
    num,
    raise_factors,
)
from rhythmd_client._lr_records import (
    advance_ramps,
    copy_change,
    copy_override,
    copy_ramp,
    factors_note,
    new_ramp,
    ramp_value,
)
from rhythmd_client._lr_tensors import is_device_tensor, mul_key, mul_list, read_host, set_val
from rhythmd_client._schedule_override import override_values, parse_schedule
from rhythmd_client._schedulers import model_node, reset_plateau, scheduler_nodes
from rhythmd_client.actions import ACTION_NAMES, LR_CHANGES

__all__ = ["LR_CHANGES", "Applied", "LRController", "RecommendationRejected"]

_MAX_RAMPS = 16
_MAX_CHANGES = 64
_UNCHANGED_TOL = 1e-12


@dataclass
class Applied:
    """Outcome of an applied recommendation: host-side absolute LRs per param group."""

    step: int
    lr_before: list[float]
    lr_after: list[float]
    note: str = ""
    restored: bool = False
    """True when model/optimizer/scheduler were restored to a snapshot at ``step``."""


class LRController:
    """Applies LR recommendations to ``optimizer`` and the user's ``scheduler`` in place.

    ``scheduler`` may be None, one scheduler, or a list of schedulers stepped by the user on
    the same optimizer. ``min_lr``/``max_lr`` (absolute LRs, float or per-group list) bound
    every LR this controller sets. ``snapshots`` (a ``SnapshotKeeper``) enables ``rollback``.
    """

    def __init__(
        self,
        optimizer: Any,
        scheduler: Any = None,
        *,
        min_lr: float | list[float] | None = None,
        max_lr: float | list[float] | None = None,
        snapshots: Any = None,
    ) -> None:
        self.optimizer = optimizer
        if scheduler is None:
            self._roots: list[Any] = []
        elif isinstance(scheduler, (list, tuple)):
            self._roots = list(scheduler)
        else:
            self._roots = [scheduler]
        n = len(optimizer.param_groups)
        try:
            self._min = bounds(min_lr, n, "min_lr")
            self._max = bounds(max_lr, n, "max_lr")
        except RecommendationRejected as e:
            raise ValueError(e.reason) from None
        lo, hi = lo_of(self._min, n=n), hi_of(self._max, n=n)
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise ValueError("min_lr exceeds max_lr")
        self._step = 0
        self._cooldown_until = -1
        self._ramps: list[dict[str, Any]] = []
        self._override: dict[str, Any] | None = None
        self._changes: list[dict[str, Any]] = []  # change points, oldest first
        self._ramp_seq = 0
        self._restored = False
        self.snapshot_errors = 0
        self.stop_requested = False
        self.snapshots = snapshots
        if snapshots is not None and getattr(snapshots, "controller", None) is None:
            snapshots.controller = self
        # Host-side LR copies. Reading a device-tensor LR here, once, is the only sync.
        self._host = [float(g["lr"]) for g in optimizer.param_groups]
        self._exact = True
        self._has_device = any(is_device_tensor(g["lr"]) for g in optimizer.param_groups)
        self._mirror: dict[int, list[float]] = {}
        self._mirror_ref: dict[int, Any] = {}
        if self._has_device:
            for node in scheduler_nodes(self._roots):
                base = getattr(node, "base_lrs", None)
                if isinstance(base, list):
                    self._mirror[id(node)] = [float(b) for b in base]
                    self._mirror_ref[id(node)] = base

    # ------------------------------------------------------------------ public API

    def current_lrs(self) -> list[float]:
        """Host-side copies of each param group's absolute LR (no device sync)."""
        return list(self._host)

    @property
    def active(self) -> bool:
        """True while a warmup ramp or a set_schedule override needs ``on_step`` every step.

        When False, skipping ``on_step`` changes no LR; host copies of device-tensor LRs are
        then refreshed by the next ``on_step`` call.
        """
        return bool(self._ramps) or self._override is not None

    @property
    def lrs_exact(self) -> bool:
        """False when a device-tensor LR could not be modelled on the host since the last sync."""
        return self._exact

    def sync_host_lrs(self) -> list[float]:
        """Re-read every group's LR (syncs on device tensors: call only at flush points)."""
        self._host = [float(g["lr"]) for g in self.optimizer.param_groups]
        self._exact = True
        for node in scheduler_nodes(self._roots):
            if id(node) in self._mirror or (self._has_device and hasattr(node, "base_lrs")):
                self._mirror[id(node)] = [float(b) for b in node.base_lrs]
                self._mirror_ref[id(node)] = node.base_lrs
        return list(self._host)

    def apply(self, action: str, params: dict[str, Any], step: int,
              change_id: str | None = None, snapshot: bool = True) -> Applied:
        """Apply one recommendation at a step boundary (after the user's scheduler.step()).

        With ``change_id`` (the recommendation's id), an action in :data:`LR_CHANGES` is
        recorded as a change point that ``revert`` can undo: the LR state before it, and, when
        a snapshot keeper is attached and ``snapshot`` is True, a snapshot labelled ``step``
        taken before the change (forced, whatever the keeper's ``every_steps``).
        """
        if not isinstance(params, dict):
            raise RecommendationRejected("params must be a dict")
        if isinstance(step, bool) or not isinstance(step, int):
            raise RecommendationRejected(f"step must be an integer, got {step!r}")
        if action not in ACTION_NAMES:
            raise RecommendationRejected(f"unknown action {action!r}")
        handler = getattr(self, f"_{action}")
        before = list(self._host)
        record = None
        if change_id is not None and action in LR_CHANGES:
            record = self._change_point(str(change_id), action, step, snapshot)
        self._restored = False
        ramps_before = {r.get("id") for r in self._ramps}
        out_step, note = handler(params, step)
        if record is not None:
            after = list(self._host)
            record["fs"] = [a / b if b > 0 else 1.0 for a, b in zip(after, before, strict=True)]
            new = [r for r in self._ramps if r.get("id") not in ramps_before]
            if new:
                record["ramp"] = new[-1]["id"]
                record["peak"] = list(new[-1]["peak"])
            self._changes.append(record)
            del self._changes[:-_MAX_CHANGES]
        return Applied(step=out_step, lr_before=before, lr_after=list(self._host), note=note,
                       restored=self._restored)

    @property
    def changes(self) -> list[dict[str, Any]]:
        """Recorded change points, oldest first (copies): ``id``, ``action``, ``step``,
        ``lrs`` (absolute LRs before), ``snap`` (snapshot number or None)."""
        return [copy_change(c) for c in self._changes]

    def _change_point(self, change_id: str, action: str, step: int,
                      snapshot: bool) -> dict[str, Any]:
        """The LR state before a change at ``step``; a forced snapshot when one can be kept.

        A second change at the same step gets no snapshot of its own: the one labelled
        ``step`` holds the state before the first, and must stay so.
        """
        seq = None
        keeper = self.snapshots
        earlier = any(c["step"] == step for c in self._changes)
        if snapshot and keeper is not None and not earlier:
            try:
                if keeper.holds(step):  # taken at this boundary, before any change
                    seq = keeper.last_seq if keeper.steps[-1] == step else None
                elif keeper.snapshot(step):
                    seq = keeper.last_seq
            except Exception:  # no snapshot: the change stays revertible on the LR only
                self.snapshot_errors += 1
        return {"id": change_id, "action": action, "step": step, "lrs": list(self._host),
                "snap": seq, "cooldown_until": self._cooldown_until,
                "override": copy_override(self._override), "fs": None, "ramp": None,
                "peak": None}

    def on_step(self, step: int) -> None:
        """Advance warmup ramps and the set_schedule override to ``step``.

        Call after the user's optimizer.step() and scheduler.step(). O(param groups); no
        device sync: tensors are only changed with ``mul_``/``fill_`` from host floats.
        """
        dt = step - self._step
        self._step = step
        if dt > 0 and self._ramps:
            total, self._ramps = advance_ramps(self._ramps, dt, len(self._host))
            self._rescale(total, refresh=False)
        if self._override is not None:
            self._write_override(step)
        else:
            self._refresh_host()

    def state_dict(self) -> dict[str, Any]:
        """Host-only, JSON-friendly state of the controller (not of the optimizer)."""
        nodes = scheduler_nodes(self._roots)
        return {
            "version": 1,
            "step": self._step,
            "cooldown_until": self._cooldown_until,
            "ramps": [copy_ramp(r) for r in self._ramps],
            "override": copy_override(self._override),
            "changes": [copy_change(c) for c in self._changes],
            "ramp_seq": self._ramp_seq,
            "host": list(self._host),
            "exact": self._exact,
            "mirror": [list(self._mirror[id(s)]) if id(s) in self._mirror else None for s in nodes],
            "stop_requested": self.stop_requested,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; call after the optimizer/scheduler are restored."""
        if d.get("version") != 1:
            raise ValueError(f"unsupported LRController state version {d.get('version')!r}")
        self._step = int(d["step"])
        self._cooldown_until = int(d["cooldown_until"])
        self._ramps = [copy_ramp(r) for r in d["ramps"]]
        self._override = copy_override(d["override"])
        self._changes = [copy_change(c) for c in d.get("changes", [])]
        self._ramp_seq = max(self._ramp_seq, int(d.get("ramp_seq", 0)))
        self._host = [float(x) for x in d["host"]]
        self._exact = bool(d["exact"])
        self.stop_requested = bool(d.get("stop_requested", False))
        self._mirror, self._mirror_ref = {}, {}
        for node, m in zip(scheduler_nodes(self._roots), d.get("mirror", []), strict=False):
            if m is not None:
                self._mirror[id(node)] = [float(x) for x in m]
                self._mirror_ref[id(node)] = getattr(node, "base_lrs", None)
        self._refresh_host(keep_device=True)

    # ------------------------------------------------------------------ actions

    def _reduce_lr(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        f = num(params, "factor")
        if not 0.0 < f < 1.0:
            raise RecommendationRejected(f"reduce_lr factor must be in (0, 1), got {f}")
        cooldown = integer(params, "cooldown", 0)
        if step < self._cooldown_until:
            raise RecommendationRejected(f"reduce_lr in cooldown until step {self._cooldown_until}")
        n = len(self._host)
        fs = cut_factors(self._host, f,
                         lo_of(self._min, bounds(params.get("min_lr"), n, "min_lr"), n=n))
        if all(abs(x - 1.0) <= _UNCHANGED_TOL for x in fs):
            raise RecommendationRejected("every param group is already at min_lr")
        self._rescale(fs)
        reset_plateau(self._roots, cut=True)
        self._cooldown_until = step + cooldown
        return step, factors_note(fs)

    def _increase_lr(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        f = num(params, "factor")
        if not f > 1.0:
            raise RecommendationRejected(f"increase_lr factor must be > 1, got {f}")
        n = len(self._host)
        fs = raise_factors(self._host, f,
                           hi_of(self._max, bounds(params.get("max_lr"), n, "max_lr"), n=n))
        if all(abs(x - 1.0) <= _UNCHANGED_TOL for x in fs):
            raise RecommendationRejected("every param group is already at max_lr (or at 0)")
        self._rescale(fs)
        reset_plateau(self._roots, cut=False)
        return step, factors_note(fs)

    def _warmup(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        steps = integer(params, "warmup_steps", lo=1)
        start = num(params, "start_factor", 0.1)
        peak = num(params, "peak_factor", 1.0)
        if start <= 0 or peak <= 0:
            raise RecommendationRejected("warmup start_factor and peak_factor must be > 0")
        self._add_ramp(steps, start, peak)
        return step, f"warmup over {steps} steps from x{start:g} to x{peak:g}"

    def _set_schedule(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        self._override, note = parse_schedule(params, step, list(self._host),
                                              lo_of(self._min, n=len(self._host)))
        self._write_override(step)
        return step, note

    def _rollback(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        to_step = integer(params, "to_step", lo=-1)  # -1: the initial weights
        lr_factor = num(params, "lr_factor", 1.0)
        if not 0.0 < lr_factor <= 1.0:
            raise RecommendationRejected(f"rollback lr_factor must be in (0, 1], got {lr_factor}")
        warm = integer(params, "warmup_steps", 0)
        warm_start = num(params, "warmup_start_factor", 0.1)
        if warm_start <= 0:
            raise RecommendationRejected("warmup_start_factor must be > 0")
        if self.snapshots is None:
            raise RecommendationRejected("no snapshot keeper attached; cannot roll back")
        restored = self.snapshots.restore(to_step)  # restores this controller's state too
        self._restored = True
        self._step = restored
        self._cooldown_until = -1
        note = f"restored step {restored}"
        if lr_factor < 1.0:
            fs = cut_factors(self._host, lr_factor, lo_of(self._min, n=len(self._host)))
            self._rescale(fs)
            note += "; " + factors_note(fs)
        reset_plateau(self._roots, cut=True)
        if warm > 0:
            self._add_ramp(warm, warm_start, 1.0)
            note += f"; warmup over {warm} steps from x{warm_start:g}"
        return restored, note

    def _revert(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        to_step = integer(params, "to_step", lo=-1)
        cid = params.get("change_id")
        if not isinstance(cid, str) or not cid:
            raise RecommendationRejected(f"parameter 'change_id' must be a non-empty string, "
                                         f"got {cid!r}")
        rec = next((c for c in reversed(self._changes) if c["id"] == cid), None)
        if rec is None:
            raise RecommendationRejected(f"no record of change {cid!r}")
        if rec["step"] != to_step:
            raise RecommendationRejected(
                f"change {cid!r} was applied at step {rec['step']}, not {to_step}")
        what = f"{rec['action']} {cid} of step {to_step}"
        keeper = self.snapshots
        if keeper is not None and rec["snap"] is not None and keeper.holds(to_step, rec["snap"]):
            restored = keeper.restore(to_step, seq=rec["snap"])  # controller state too
            self._restored = True
            self._step = restored
            return restored, f"reverted {what}: restored the snapshot taken before it"
        self._changes.remove(rec)
        return step, f"lr_only: reverted {what}; " + self._undo_lr(rec)

    def _undo_lr(self, rec: dict[str, Any]) -> str:
        """Undo a recorded change's effect on the LR only (no rewind); returns a note."""
        action = rec["action"]
        if action in ("reduce_lr", "increase_lr"):
            inv = [1.0 / f if f > 0 else 1.0 for f in rec["fs"] or [1.0] * len(self._host)]
            self._rescale(inv)
            if action == "reduce_lr":
                self._cooldown_until = int(rec["cooldown_until"])
            reset_plateau(self._roots, cut=False)
            return factors_note(inv)
        if action == "warmup":
            ramp = next((r for r in self._ramps if r.get("id") == rec["ramp"]), None)
            n = len(self._host)
            if ramp is not None:
                inv = [1.0 / ramp_value(ramp, i, ramp["k"]) for i in range(n)]
                self._ramps.remove(ramp)
            else:  # finished: what stays of it is its peak factor
                inv = [1.0 / p if p > 0 else 1.0 for p in rec["peak"] or [1.0] * n]
            self._rescale(inv)
            return ("ramp cancelled; " if ramp is not None else "ramp had ended; ") \
                + factors_note(inv)
        # set_schedule: back to the override before it (usually none) and the LRs of then
        self._override = copy_override(rec["override"])
        if self._override is not None:
            self._write_override(self._step)
            return "schedule override dropped; the previous one resumes"
        self._write_lrs([float(x) for x in rec["lrs"]])
        return "schedule override dropped; LRs back to those at the change"

    def _stop(self, params: dict[str, Any], step: int) -> tuple[int, str]:
        self.stop_requested = True
        return step, "stop"

    # ------------------------------------------------------------------ machinery

    def _add_ramp(self, steps: int, start: float, peak: float) -> None:
        if len(self._ramps) >= _MAX_RAMPS:
            raise RecommendationRejected(f"too many concurrent warmups ({_MAX_RAMPS})")
        n = len(self._host)
        self._ramp_seq += 1
        ramp = new_ramp(self._ramp_seq, steps, self._host, start, peak, lo_of(self._min, n=n),
                        hi_of(self._max, n=n))
        self._rescale(ramp["start"])
        self._ramps.append(ramp)

    def _rescale(self, fs: list[float], refresh: bool = True) -> None:
        """Multiply every group's LR trajectory by ``fs[i]`` from now on, in place."""
        if all(f == 1.0 for f in fs):
            if refresh:
                self._refresh_host()
            return
        groups = self.optimizer.param_groups
        nodes = [] if self._override is not None else scheduler_nodes(self._roots)
        lr_mod = sys.modules.get("torch.optim.lr_scheduler")
        onecycle = lr_mod is not None and any(isinstance(s, lr_mod.OneCycleLR) for s in nodes)
        for g, f in zip(groups, fs, strict=True):
            if f == 1.0:
                continue
            mul_key(g, "lr", f)
            if self._override is None and "initial_lr" in g:
                mul_key(g, "initial_lr", f)
            if onecycle:
                for key in ("max_lr", "min_lr"):
                    if key in g:
                        mul_key(g, key, f)
        if self._override is not None:
            ov = self._override
            ov["base"] = [b * f for b, f in zip(ov["base"], fs, strict=True)]
            if "eta" in ov:
                ov["eta"] = [e * f for e, f in zip(ov["eta"], fs, strict=True)]
        seen: set[int] = set()
        for s in nodes:
            for attr in ("base_lrs", "max_lrs", "_last_lr"):
                lst = getattr(s, attr, None)
                if isinstance(lst, list) and id(lst) not in seen:
                    seen.add(id(lst))
                    mul_list(lst, fs)
            if id(s) in self._mirror:
                self._mirror[id(s)] = [b * f for b, f in zip(self._mirror[id(s)], fs, strict=False)]
            if isinstance(getattr(s, "eta_min", None), (int, float)) and s.eta_min:
                # Shared scalar: exact when all groups move by the same factor.
                s.eta_min = s.eta_min * (sum(fs) / len(fs))
        self._host = [h * f for h, f in zip(self._host, fs, strict=True)]
        if refresh or self._override is None:
            self._refresh_host(keep_device=True)

    def _write_override(self, step: int) -> None:
        assert self._override is not None
        n = len(self._host)
        self._write_lrs(override_values(self._override, step, lo_of(self._min, n=n),
                                        hi_of(self._max, n=n)))

    def _write_lrs(self, vals: list[float]) -> None:
        """Set every group's LR (and the schedulers' ``_last_lr``) to ``vals``, in place."""
        for g, v in zip(self.optimizer.param_groups, vals, strict=True):
            set_val(g, "lr", v)
        seen: set[int] = set()
        for s in scheduler_nodes(self._roots):
            lst = getattr(s, "_last_lr", None)
            if isinstance(lst, list) and id(lst) not in seen and len(lst) == len(vals):
                seen.add(id(lst))
                for i, v in enumerate(vals):
                    set_val(lst, i, v)
        self._host = vals
        self._exact = True

    def _refresh_host(self, keep_device: bool = False) -> None:
        """Update host copies: read floats/CPU tensors; model device tensors, never read them."""
        model: list[float] | None = None
        modelled = False
        for i, g in enumerate(self.optimizer.param_groups):
            v = read_host(g["lr"])
            if v is not None:
                self._host[i] = v
                continue
            if keep_device:
                continue
            if not modelled:
                model, modelled = self._model_lrs(), True
            if model is not None:
                self._host[i] = model[i]
            else:
                self._exact = False

    def _model_lrs(self) -> list[float] | None:
        """Host model of the user's scheduler output (for device-tensor LRs), or None."""
        if not self._roots:
            return list(self._host)
        if len(self._roots) != 1:
            return None
        return model_node(self._roots[0], self._mirror, self._mirror_ref)
