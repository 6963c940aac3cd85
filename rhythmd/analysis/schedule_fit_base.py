"""What the schedule fits share: the result type, the main-schedule record, tolerances and
small helpers (residuals, logs, segments, jumps)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import ScheduleSegment

EXACT = 2e-4  # RMS log residual under which a model counts as the schedule (float32, noise)
# A jump may span this many lr samples: with uneven logging the swing filter's cone can take
# in one or two samples after a cut (a long gap before it, a short one after)
JUMP_SAMPLES = 3
PHASES = ("warmup", "constant", "decay", "unknown")  # what ``phase_at`` returns


@dataclass
class Identification:
    """A named schedule: torch class, its parameters, typed segments and phases by step."""

    scheduler: str  # torch class name, "constant" or "unknown"
    params: dict[str, Any]
    segments: list[ScheduleSegment]
    phases: list[tuple[float, float, str]] = field(default_factory=list)  # [from, to) steps
    fit_rms_log: float = math.nan  # RMS log residual of the model at the knots
    cycle: tuple[float, float, float] | None = None  # CyclicLR: (start, step_size_up, period)

    def phase_at(self, step: float) -> str:
        """``warmup``, ``constant``, ``decay`` or ``unknown`` at ``step`` (extrapolated past
        the last lr point from the identified scheduler)."""
        if self.cycle is not None:
            start, up, period = self.cycle
            if step < start:
                return "unknown"
            return "warmup" if (step - start) % period < up else "decay"
        for a, b, ph in self.phases:
            if a <= step < b:
                return ph
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "params": self.params,
            "segments": [s.to_dict() for s in self.segments],
            "fit_rms_log": self.fit_rms_log,
        }


@dataclass
class _Main:
    """The schedule after the warmup (or the whole run without one)."""

    scheduler: str
    params: dict[str, Any]
    rms: float
    base: float  # lr at the scheduler's start
    segments: list[ScheduleSegment]
    phases: list[tuple[float, float, str]]
    decay: str = ""  # exponential, linear_decay, cosine or poly; "" for the other schedules


# ------------------------------------------------------------------------------ helpers
def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(r * r))) if r.size else 0.0


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 1e-300))


def _seg(kind: str, t: np.ndarray, lr: np.ndarray, i0: int, i1: int,
         **params: Any) -> ScheduleSegment:
    return ScheduleSegment(kind, int(t[i0]), int(t[i1]), float(lr[i0]), float(lr[i1]), params)


def find_jumps(t: np.ndarray, y: np.ndarray, o: np.ndarray, tol: float) -> list[int]:
    """Indices i where knots i -> i+1 are at most ``JUMP_SAMPLES`` lr samples apart
    (ordinals ``o``; without them, one step apart) and log lr changes by more than 3 ``tol``
    and 4x what the neighbouring pieces moving the same way would explain over that gap."""
    dl = np.diff(y)
    dv = np.diff(np.exp(y))
    gap = np.maximum(np.diff(t), 1.0)
    do = np.diff(o)
    adj = np.where(np.isnan(do), np.diff(t) <= 1, do <= JUMP_SAMPLES)
    out = []
    for i in range(len(dl)):
        if not adj[i] or abs(dl[i]) <= 3 * tol:
            continue
        if all(_sudden(d, i, gap) for d in (dl, dv)):  # in log lr and in lr
            out.append(i)
    return out


def _sudden(d: np.ndarray, i: int, gap: np.ndarray) -> bool:
    """Change ``d[i]`` is over 4x what the neighbouring pieces moving the same way would
    give over its gap."""
    near = 0.0
    for j in (i - 1, i + 1):
        if 0 <= j < len(d) and np.sign(d[j]) == np.sign(d[i]):
            near = max(near, abs(float(d[j] / gap[j])))
    return abs(float(d[i])) > 4 * near * gap[i]
