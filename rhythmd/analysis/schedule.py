"""Incremental LR-schedule identification from the lr stream (per step).

The stream is compressed online into knots of a piecewise-linear approximation of
log(lr) (swing filter, relative tolerance ``tol``), so memory is bounded by the number of
shape changes, not by run length (and by ``max_knots``). ``identify()``/``describe()`` name
the ``torch.optim.lr_scheduler`` class behind the knots with its parameters
(``schedule_fit``), ``phase(step)`` says whether the schedule is warming up, constant or
decaying there, and ``segments()`` gives its typed pieces.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import numpy as np

from .schedule_fit import Identification, identify
from .schedule_fit_base import JUMP_SAMPLES
from .types import ScheduleSegment, _plain

_TINY = 1e-300
_FEW = 128  # update_many: below this many points the scalar loop beats numpy's call overhead


class ScheduleTracker:
    """Tracks the lr stream: live warmup flags, knots of the log-lr polyline, and the
    scheduler identified from them."""

    def __init__(self, tol: float = 0.01, max_knots: int = 512) -> None:
        self.tol = tol
        self.max_knots = max_knots
        self.knots: list[list[float]] = []  # [step, lr, sample ordinal] (closed knots)
        self.seg_start: list[float] | None = None  # [step, log lr]
        self.lo = -math.inf
        self.hi = math.inf
        self.last: list[float] | None = None  # [step, lr] of the last accepted point
        self.first_lr = math.nan
        self.max_lr = -math.inf
        self.rising = False  # lr increased at the last change
        self.warmup_end_step: int | None = None
        self.warmup_start_lr = math.nan
        self.seen_non_rise = False
        self.last_change_step: int | None = None
        self.n = 0
        self.thinned_to: float | None = None  # knots before this step have been thinned

    # -- streaming -------------------------------------------------------------------
    def update(self, step: int, lr: float) -> None:
        """Add one lr point (steps strictly increasing; non-finite, <= 0 or absurd (> 1e100,
        < 1e-100) lr values are ignored)."""
        if not math.isfinite(lr) or not 1e-100 < lr < 1e100:
            return
        self.n += 1
        if self.last is None:
            self.first_lr = lr
            self.warmup_start_lr = lr
        else:
            prev = self.last[1]
            if abs(lr - prev) > 1e-9 * prev:
                self.last_change_step = int(step)
            if lr > prev * (1 + 1e-9):
                if self.warmup_end_step is None and not self.seen_non_rise:
                    self.rising = True
            else:
                if self.rising and self.warmup_end_step is None:
                    self.warmup_end_step = int(self.last[0])
                self.rising = False
                self.seen_non_rise = self.seen_non_rise or self.warmup_end_step is None
        self.max_lr = max(self.max_lr, lr)
        self._swing(float(step), math.log(max(lr, _TINY)), self.n - 1)
        self.last = [float(step), lr]

    def update_many(self, steps: np.ndarray, lrs: np.ndarray) -> None:
        """Bulk ``update`` for points in step order: exactly the state that calling
        ``update`` per point gives (same floats), at a cost of a few numpy passes per batch
        plus one Python step per closed knot."""
        if lrs.size < _FEW:  # a few points (an evaluation's or a per-point step's): no numpy
            self._update_few(steps.tolist(), lrs.tolist())
            return
        ok = (lrs > 1e-100) & (lrs < 1e100)  # (False for NaN)
        if not ok.all():
            steps, lrs = steps[ok], lrs[ok]
        if lrs.size and (self.last is None or self.seg_start is None):
            self.update(int(steps[0]), float(lrs[0]))
            steps, lrs = steps[1:], lrs[1:]
        m = int(lrs.size)
        if m == 0:
            return
        if m < _FEW:  # small batches: the scalar path is cheaper
            self._update_few(steps.tolist(), lrs.tolist())
            return
        assert self.last is not None
        sl = steps.tolist()
        ll = lrs.tolist()
        prev = np.concatenate(([self.last[1]], lrs[:-1]))
        n0 = self.n
        self.n += m
        chg = np.flatnonzero(np.abs(lrs - prev) > 1e-9 * prev)
        if chg.size:
            self.last_change_step = int(sl[int(chg[-1])])
        if self.warmup_end_step is None and not self.seen_non_rise:
            nonrise = np.flatnonzero(~(lrs > prev * (1 + 1e-9)))
            k = int(nonrise[0]) if nonrise.size else m
            if k > 0:
                self.rising = True
            if k < m:  # first non-rise: warmup ends at the previous accepted point
                if self.rising:
                    self.warmup_end_step = int(sl[k - 1]) if k > 0 else int(self.last[0])
                self.rising = False
                self.seen_non_rise = self.seen_non_rise or self.warmup_end_step is None
        self.max_lr = max(self.max_lr, float(lrs.max()))
        self._swing_many(steps.astype(np.float64), sl, ll, n0)

    def _update_few(self, sl: list[int], ll: list[float]) -> None:
        """``update`` per point, its common case in a tight loop (:meth:`_settled_run`)."""
        i, m = 0, len(sl)
        while i < m:
            if (self.last is not None and self.seg_start is not None and not self.rising
                    and (self.warmup_end_step is not None or self.seen_non_rise)):
                i = self._settled_run(sl, ll, i)
                if i == m:
                    break
            self.update(sl[i], ll[i])
            i += 1

    def _settled_run(self, sl: list[int], ll: list[float], i: int) -> int:
        """Points ``i, ...`` while ``update`` would only move the open segment's slope band,
        the counters and the last point (the warmup flags are settled: they no longer
        change); returns the index of the first point it leaves to ``update`` (an lr out of
        range, or one that closes the segment)."""
        assert self.last is not None and self.seg_start is not None
        tol = self.tol
        s0, y0 = self.seg_start
        lo, hi = self.lo, self.hi
        mx = self.max_lr
        j = i
        for st, lr in zip(islice(sl, i, None), islice(ll, i, None), strict=True):
            if not 1e-100 < lr < 1e100:  # (NaN too)
                break
            dx = st - s0
            if dx > 0:
                y = math.log(lr)  # lr > 1e-100: log(max(lr, _TINY)) in update
                a = (y - tol - y0) / dx
                b = (y + tol - y0) / dx
                if not a > lo:  # max(lo, a), min(hi, b) as update takes them
                    a = lo
                if not b < hi:
                    b = hi
                if not a <= b:
                    break
                lo, hi = a, b
            if lr > mx:
                mx = lr
            j += 1
        if j > i:
            for t in range(j - 1, i - 1, -1):  # the last change (usually the last point)
                prev = ll[t - 1] if t > i else self.last[1]
                if abs(ll[t] - prev) > 1e-9 * prev:
                    self.last_change_step = sl[t]
                    break
            self.lo, self.hi, self.max_lr = lo, hi, mx
            self.n += j - i
            self.last = [float(sl[j - 1]), ll[j - 1]]
        return j

    def _swing_many(self, sf: np.ndarray, sl: list[int], ll: list[float], n0: int) -> None:
        """Swing filter over many points (ordinals n0 + 1, ...); one scalar ``_swing`` at
        each closed segment."""
        m = len(ll)
        ys = np.fromiter(map(math.log, ll), float, m)  # math.log: bit-identical to update
        pos, w = 0, max(64, m)  # the window shrinks at each closed segment
        tol = self.tol
        while pos < m:
            assert self.seg_start is not None
            s0, y0 = self.seg_start
            end = min(m, pos + w)
            dx = sf[pos:end] - s0
            if dx[0] <= 0:  # not after the segment start: scalar path decides
                self._swing(float(sl[pos]), float(ys[pos]), n0 + pos)
                self.last = [float(sl[pos]), ll[pos]]
                pos += 1
                continue
            yy = ys[pos:end]
            lo = np.maximum.accumulate((yy - tol - y0) / dx)
            hi = np.minimum.accumulate((yy + tol - y0) / dx)
            np.maximum(lo, self.lo, out=lo)
            np.minimum(hi, self.hi, out=hi)
            bad = np.flatnonzero(lo > hi)
            b = int(bad[0]) if bad.size else end - pos
            if b > 0:
                self.lo, self.hi = float(lo[b - 1]), float(hi[b - 1])
                j = pos + b - 1
                self.last = [float(sl[j]), ll[j]]
            pos += b
            if bad.size:
                self._swing(float(sl[pos]), float(ys[pos]), n0 + pos)
                self.last = [float(sl[pos]), ll[pos]]
                pos += 1
                w = max(64, w // 2)
            else:
                w *= 2

    def _swing(self, s: float, y: float, prev_n: int) -> None:
        """Swing-filter one point (y = log lr); ``prev_n`` is the ordinal of the previous
        accepted point (knots keep their ordinal: the number of lr points between two knots
        is known)."""
        if self.seg_start is None:
            self.seg_start = [s, y]
            self.knots.append([s, math.exp(y), prev_n + 1])
            self.lo, self.hi = -math.inf, math.inf
            return
        s0, y0 = self.seg_start
        dx = s - s0
        if dx <= 0:
            return
        lo = max(self.lo, (y - self.tol - y0) / dx)
        hi = min(self.hi, (y + self.tol - y0) / dx)
        if lo <= hi:
            self.lo, self.hi = lo, hi
            return
        # close the current segment at the previous point
        assert self.last is not None
        ps, plr = self.last
        if ps > s0:
            self.knots.append([ps, plr, prev_n])
            self.seg_start = [ps, math.log(max(plr, _TINY))]
        s0, y0 = self.seg_start
        dx = s - s0
        self.lo = (y - self.tol - y0) / dx
        self.hi = (y + self.tol - y0) / dx
        self._bound()

    def _bound(self) -> None:
        """Thin the older half to every other knot, keeping both knots of each jump (samples
        at most JUMP_SAMPLES apart, more than 3 tol apart in log lr) unless that would keep
        over 3/4 of the half."""
        if len(self.knots) > self.max_knots:
            k = self.knots
            half = len(k) // 2
            keep = set(range(0, half, 2))
            for i in range(half):
                a, b = k[i], k[i + 1]
                if (len(a) > 2 and len(b) > 2 and b[2] - a[2] <= JUMP_SAMPLES
                        and abs(math.log(b[1] / a[1])) > 3 * self.tol):
                    keep.update((i, i + 1))
            if len(keep) > 3 * half // 4:  # too many jumps to keep: every other knot
                keep = set(range(0, half, 2))
            self.knots = [k[i] for i in sorted(keep) if i < half] + k[half:]
            self.thinned_to = k[half][0]

    def truncate(self, before_step: int) -> None:
        """Forget lr points at or after ``before_step`` (rollback); approximate for knots."""
        self._ident = None
        self.knots = [k for k in self.knots if k[0] < before_step]
        if self.last is not None and self.last[0] >= before_step:
            self.last = list(self.knots[-1][:2]) if self.knots else None
            if self.knots and len(self.knots[-1]) > 2:
                self.n = int(self.knots[-1][2])  # the next point follows this knot
        if self.last is None:
            self.seg_start = None
            self.knots = []
        else:
            self.seg_start = [self.last[0], math.log(max(self.last[1], _TINY))]
            if not self.knots or self.knots[-1][0] < self.last[0]:
                self.knots.append([*self.last, self.n])
        self.lo, self.hi = -math.inf, math.inf
        if self.warmup_end_step is not None and self.warmup_end_step >= before_step:
            self.warmup_end_step = None
        if self.last_change_step is not None and self.last_change_step >= before_step:
            self.last_change_step = None
        if self.thinned_to is not None and self.thinned_to >= before_step:
            self.thinned_to = before_step

    def in_warmup(self) -> bool:
        """True while the lr has been rising since the start (linear/any warmup)."""
        return self.rising and self.warmup_end_step is None

    def current_lr(self) -> float:
        return self.last[1] if self.last is not None else math.nan

    def all_knots(self) -> list[list[float]]:
        """The knots plus the last lr point: [step, lr, ordinal of the point]."""
        k = [list(p) for p in self.knots]
        if self.last is not None and (not k or k[-1][0] < self.last[0]):
            k.append([*self.last, self.n])
        return k

    def _fit_knots(self) -> tuple[list[list[float]], bool]:
        """The knots to identify from: all of them, or once the older ones have been thinned
        the first (the scheduler's start) and the unthinned ones, with a hole between."""
        k = self.all_knots()
        if self.thinned_to is None:
            return k, False
        return [k[0], *(p for p in k[1:] if p[0] >= self.thinned_to)], True

    # -- identification --------------------------------------------------------------
    def identify(self, max_stale: float = 0.0) -> Identification:
        """The torch scheduler behind the stream so far. Cached: refitted (about 1 to 100
        ms) at a new lr point, or with ``max_stale`` > 0 only once the stream has grown by
        more than that fraction of its span since the last fit."""
        if self.last is None:
            return Identification("unknown", {}, [])
        key = (len(self.knots), tuple(self.knots[-1]) if self.knots else None)
        cached = getattr(self, "_ident", None)
        if cached is not None:
            last0, first = cached[1], cached[2]
            grown = self.last[0] - last0
            if (grown == 0 and cached[0] == key) or 0 < grown <= max_stale * (last0 - first):
                return cached[3]
        try:
            ident = identify(*self._fit_knots(), self.tol)
        except (ValueError, ArithmeticError, LookupError, np.linalg.LinAlgError):
            ident = Identification("unknown", {}, [])
        first = self.knots[0][0] if self.knots else self.last[0]
        self._ident = (key, self.last[0], first, ident)
        return ident

    def describe(self) -> dict[str, Any]:
        """``{"scheduler": torch class name | "constant" | "unknown", "params": {...},
        "segments": [...], "fit_rms_log": float}``; see ``schedule_fit``."""
        return _plain(self.identify().to_dict())

    def phase(self, step: int | None = None) -> str:
        """``"warmup"``, ``"constant"``, ``"decay"`` or ``"unknown"`` at ``step`` (default: the
        last lr point). ``decay`` means a planned decay of the identified scheduler: cosine,
        linear, polynomial, exponential, a one-cycle anneal, restarts, or a StepLR whose next
        cut is predictable; MultiStepLR/ReduceLROnPlateau cuts count as ``constant``, a
        CyclicLR is ``warmup`` on its rising and ``decay`` on its falling half. Steps
        after the last lr point are extrapolated from the scheduler; ``unknown`` before the
        scheduler's start, without lr points, and where no scheduler fits. The fit behind it
        may lag the stream by 2 % of its span (see ``identify``)."""
        if self.last is None:
            return "unknown"
        s = self.last[0] if step is None else float(step)
        return self.identify(max_stale=0.02).phase_at(s)

    def segments(self) -> list[ScheduleSegment]:
        """Typed schedule segments of the identified scheduler (copies)."""
        return [
            ScheduleSegment(s.kind, s.start_step, s.end_step, s.lr_start, s.lr_end,
                            dict(s.params))
            for s in self.identify().segments
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, list) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self._ident = None
        for k, v in d.items():
            setattr(self, k, v)


def describe(segs: list[ScheduleSegment]) -> str:
    """Short name of a list of segments: the torch scheduler they carry (several:
    'SequentialLR(LinearLR,CosineAnnealingLR)'), else their kinds joined by '+'."""
    names = list(dict.fromkeys(str(s.params["scheduler"]) for s in segs
                               if s.params.get("scheduler")))
    if len(names) == 1:
        return names[0]
    if names:
        return f"SequentialLR({','.join(names)})"
    kinds = [s.kind for s in segs if s.kind != "constant" or len(segs) == 1]
    return "+".join(dict.fromkeys(kinds)) or "constant"
