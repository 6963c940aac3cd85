"""The context a detector reads at one point: the LR phase from the schedule tracker."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from .schedule import ScheduleTracker


class LazyContext(dict):  # type: ignore[type-arg]
    """A point's context whose LR-phase entries are filled on the first read.

    ``fill`` feeds the schedule tracker up to the point and adds the entries. Most points
    never have their context read (a train step the divergence detector passes, an
    evaluation that does not close a block), so the LR stream reaches the tracker in longer
    runs; the tracker ends in the same state either way. Entries set directly are eager, and
    reading one does not fill the others.
    """

    __slots__ = ("_fill",)

    def __init__(self, fill: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._fill: Callable[[dict[str, Any]], None] | None = fill

    def _ready(self, key: object) -> None:
        """Fill before reading ``key`` unless it is an eager entry (the two never overlap)."""
        fill = self._fill
        if fill is not None and not dict.__contains__(self, key):
            self._fill = None
            fill(self)

    def get(self, key: Any, default: Any = None) -> Any:
        self._ready(key)
        return dict.get(self, key, default)

    def __getitem__(self, key: Any) -> Any:
        self._ready(key)
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._ready(key)
        return dict.__contains__(self, key)


def lr_phase(s: ScheduleTracker) -> dict[str, Any]:
    """The LR phase at the tracker's last point: lr, warmup flags, constant since when."""
    ctx: dict[str, Any] = {
        "lr": s.current_lr(),
        "in_warmup": s.in_warmup(),
        "warmup_end_step": s.warmup_end_step,
    }
    if s.last is not None:
        ctx["lr_constant_since"] = (
            s.last_change_step
            if s.last_change_step
            else int(s.knots[0][0])
            if s.knots
            else None
        )
    return ctx


def lr_at(s: ScheduleTracker, step: int) -> float | None:
    """The LR at a past ``step`` from the tracker's polyline (None if unknown)."""
    pts = [(float(k[0]), float(k[1])) for k in (*s.knots, *([s.last] if s.last else []))]
    if not pts or step < pts[0][0]:
        return None
    for (s0, l0), (s1, l1) in itertools.pairwise(pts):
        if s0 <= step <= s1:
            if s1 <= s0 or l0 <= 0 or l1 <= 0:
                return float(l1)
            return float(math.exp(math.log(l0) + (math.log(l1) - math.log(l0))
                                  * (step - s0) / (s1 - s0)))
    return float(pts[-1][1])
