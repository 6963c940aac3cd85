"""Incremental LR-schedule identification from the lr stream (per step).

The stream is compressed online into knots of a piecewise-linear approximation of
log(lr) (swing filter, relative tolerance ``tol``), so memory is bounded by the number of
shape changes, not by run length. ``segments()`` classifies the knots into typed pieces.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .types import ScheduleSegment

_TINY = 1e-300


class ScheduleTracker:
    """Tracks the lr stream: warmup phase, knots of the log-lr polyline, schedule segments."""

    def __init__(self, tol: float = 0.01, max_knots: int = 512) -> None:
        self.tol = tol
        self.max_knots = max_knots
        self.knots: list[list[float]] = []  # [step, lr] (closed knots)
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
        self._swing(float(step), math.log(max(lr, _TINY)))
        self.last = [float(step), lr]

    def update_many(self, steps: np.ndarray, lrs: np.ndarray) -> None:
        """Bulk ``update`` for points in step order: exactly the state that calling
        ``update`` per point gives (same floats), at a cost of a few numpy passes per batch
        plus one Python step per closed knot."""
        with np.errstate(all="ignore"):
            ok = np.isfinite(lrs) & (lrs > 1e-100) & (lrs < 1e100)
        if not ok.all():
            steps, lrs = steps[ok], lrs[ok]
        if lrs.size and (self.last is None or self.seg_start is None):
            self.update(int(steps[0]), float(lrs[0]))
            steps, lrs = steps[1:], lrs[1:]
        m = int(lrs.size)
        if m == 0:
            return
        if m < 24:  # small batches: the scalar path is cheaper
            for st, lr in zip(steps.tolist(), lrs.tolist(), strict=True):
                self.update(st, lr)
            return
        assert self.last is not None
        sl = steps.tolist()
        ll = lrs.tolist()
        prev = np.empty(m)
        prev[0] = self.last[1]
        prev[1:] = lrs[:-1]
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
        self._swing_many(steps.astype(np.float64), sl, ll)

    def _swing_many(self, sf: np.ndarray, sl: list[int], ll: list[float]) -> None:
        """Swing filter over many points; one scalar ``_swing`` at each closed segment."""
        ys = np.asarray(list(map(math.log, ll)))  # math.log: bit-identical to ``update``
        m = len(ll)
        pos, w = 0, 64
        tol = self.tol
        while pos < m:
            assert self.seg_start is not None
            s0, y0 = self.seg_start
            end = min(m, pos + w)
            dx = sf[pos:end] - s0
            if dx[0] <= 0:  # not after the segment start: scalar path decides
                self._swing(float(sl[pos]), float(ys[pos]))
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
                self._swing(float(sl[pos]), float(ys[pos]))
                self.last = [float(sl[pos]), ll[pos]]
                pos += 1
                w = max(64, w // 2)
            else:
                w *= 2

    def _swing(self, s: float, y: float) -> None:
        if self.seg_start is None:
            self.seg_start = [s, y]
            self.knots.append([s, math.exp(y)])
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
            self.knots.append([ps, plr])
            self.seg_start = [ps, math.log(max(plr, _TINY))]
        s0, y0 = self.seg_start
        dx = s - s0
        self.lo = (y - self.tol - y0) / dx
        self.hi = (y + self.tol - y0) / dx
        self._bound()

    def _bound(self) -> None:
        if len(self.knots) > self.max_knots:
            half = len(self.knots) // 2
            self.knots = self.knots[0:half:2] + self.knots[half:]

    def truncate(self, before_step: int) -> None:
        """Forget lr points at or after ``before_step`` (rollback); approximate for knots."""
        self.knots = [k for k in self.knots if k[0] < before_step]
        if self.last is not None and self.last[0] >= before_step:
            self.last = list(self.knots[-1]) if self.knots else None
        if self.last is None:
            self.seg_start = None
            self.knots = []
        else:
            self.seg_start = [self.last[0], math.log(max(self.last[1], _TINY))]
            if not self.knots or self.knots[-1][0] < self.last[0]:
                self.knots.append(list(self.last))
        self.lo, self.hi = -math.inf, math.inf
        if self.warmup_end_step is not None and self.warmup_end_step >= before_step:
            self.warmup_end_step = None
        if self.last_change_step is not None and self.last_change_step >= before_step:
            self.last_change_step = None

    def in_warmup(self) -> bool:
        """True while the lr has been rising since the start (linear/any warmup)."""
        return self.rising and self.warmup_end_step is None

    def current_lr(self) -> float:
        return self.last[1] if self.last is not None else math.nan

    def all_knots(self) -> list[list[float]]:
        k = [list(p) for p in self.knots]
        if self.last is not None and (not k or k[-1][0] < self.last[0]):
            k.append(list(self.last))
        return k

    # -- classification --------------------------------------------------------------
    def segments(self) -> list[ScheduleSegment]:
        """Typed schedule segments from the knots seen so far."""
        k = self.all_knots()
        if not k:
            return []
        if len(k) == 1:
            return [ScheduleSegment("constant", int(k[0][0]), int(k[0][0]), k[0][1], k[0][1])]
        # split into pieces at jumps (a change within one step larger than 3*tol in log lr)
        pieces: list[list[list[float]]] = [[k[0]]]
        jumps: list[tuple[int, float, float]] = []
        slopes = [_lratio(a[1], b[1]) / max(b[0] - a[0], 1) for a, b in itertools.pairwise(k)]
        for i, (a, b) in enumerate(itertools.pairwise(k)):
            dl = _lratio(a[1], b[1])
            near = max([abs(x) for x in slopes[max(i - 1, 0) : i] + slopes[i + 1 : i + 2]] or [0])
            if b[0] - a[0] <= 1 and abs(dl) > 3 * self.tol and abs(dl) > 4 * near:
                jumps.append((int(b[0]), a[1], b[1]))
                pieces.append([b])
            else:
                pieces[-1].append(b)
        out: list[ScheduleSegment] = []
        for idx, piece in enumerate(pieces):
            out.extend(_classify_piece(piece, self.tol))
            if idx < len(jumps):
                st, a, b = jumps[idx]
                out.append(ScheduleSegment("step", st, st, a, b, {"gamma": b / a}))
        _annotate(out, jumps)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


def _lratio(a: float, b: float) -> float:
    """log(b / a) for positive lr values, safe for extreme ratios."""
    return math.log(max(b, _TINY)) - math.log(max(a, _TINY))


def _classify_piece(p: list[list[float]], tol: float) -> list[ScheduleSegment]:
    """Split a jump-free polyline into monotone runs and name each."""
    if len(p) == 1:
        return [ScheduleSegment("constant", int(p[0][0]), int(p[0][0]), p[0][1], p[0][1])]
    runs: list[list[list[float]]] = [[p[0]]]
    dirs: list[int] = []
    for a, b in itertools.pairwise(p):
        dl = _lratio(a[1], b[1])
        d = 0 if abs(dl) <= 2 * tol else (1 if dl > 0 else -1)
        if dirs and d == dirs[-1]:
            runs[-1].append(b)
        elif not dirs:
            dirs.append(d)
            runs[-1].append(b)
        else:
            runs.append([a, b])
            dirs.append(d)
    segs: list[ScheduleSegment] = []
    for i, (run, d) in enumerate(zip(runs, dirs, strict=False)):
        s0, s1 = int(run[0][0]), int(run[-1][0])
        l0, l1 = run[0][1], run[-1][1]
        if d == 0:
            segs.append(ScheduleSegment("constant", s0, s1, l0, l1))
        elif d > 0:
            kind = "warmup" if i == 0 else "increase"
            shape = _best_shape(run)
            segs.append(
                ScheduleSegment(
                    kind,
                    s0,
                    s1,
                    l0,
                    l1,
                    {"shape": shape[0], "warmup_steps": s1 - s0, "peak_lr": l1},
                )
            )
        else:
            shape, params = _best_shape(run)
            kind = {"linear": "linear_decay", "exponential": "exponential", "cosine": "cosine"}.get(
                shape, "decay"
            )
            segs.append(ScheduleSegment(kind, s0, s1, l0, l1, params))
    # merge neighbouring constants
    merged: list[ScheduleSegment] = []
    for s in segs:
        if merged and merged[-1].kind == s.kind == "constant":
            merged[-1].end_step = s.end_step
            merged[-1].lr_end = s.lr_end
        else:
            merged.append(s)
    return merged


def _best_shape(run: list[list[float]]) -> tuple[str, dict[str, Any]]:
    """Fit linear, exponential and cosine shapes to a monotone run of knots (rel. SSE)."""
    t = np.array([r[0] for r in run], dtype=float)
    lr = np.array([r[1] for r in run], dtype=float)
    if t.size < 3:  # one straight piece of the log-lr polyline: geometric change
        span_steps = max(float(t[-1] - t[0]), 1.0)
        return "exponential", {"gamma_per_step": math.exp(_lratio(lr[0], lr[-1]) / span_steps)}
    s = float(np.max(lr))
    y = lr / s
    x = t - t[0]
    span = float(x[-1]) or 1.0
    fits: dict[str, tuple[float, dict[str, Any]]] = {}
    a = np.vstack([np.ones_like(x), x]).T
    c, *_ = np.linalg.lstsq(a, y, rcond=None)
    fits["linear"] = (float(np.sum((a @ c - y) ** 2)), {"slope_per_step": float(c[1] * s)})
    c2, *_ = np.linalg.lstsq(a, np.log(y), rcond=None)
    fits["exponential"] = (
        float(np.sum((np.exp(a @ c2) - y) ** 2)),
        {"gamma_per_step": float(math.exp(c2[1]))},
    )
    best_cos: tuple[float, dict[str, Any]] = (math.inf, {})
    if y[-1] < y[0]:
        for tm in np.linspace(span, 3 * span, 21):
            basis = np.vstack([np.ones_like(x), (1 + np.cos(math.pi * x / tm)) / 2]).T
            cc, *_ = np.linalg.lstsq(basis, y, rcond=None)
            sse = float(np.sum((basis @ cc - y) ** 2))
            if sse < best_cos[0]:
                best_cos = (sse, {"T_max": float(tm), "eta_min": float(cc[0] * s)})
        fits["cosine"] = best_cos
    name = min(fits, key=lambda n: fits[n][0] * (1.0 if n != "cosine" else 1.5))
    return name, fits[name][1]


def _annotate(segs: list[ScheduleSegment], jumps: list[tuple[int, float, float]]) -> None:
    """Attach run-level hints: MultiStep milestones/gamma, cosine restarts, one-cycle."""
    downs = [j for j in jumps if j[2] < j[1]]
    if downs:
        gammas = [b / a for _, a, b in downs]
        for s in segs:
            if s.kind == "step":
                s.params["milestones"] = [j[0] for j in downs]
                s.params["gamma_median"] = float(np.median(gammas))
    ups = [j for j in jumps if j[2] > j[1]]
    if ups and any(s.kind == "cosine" for s in segs):
        for s in segs:
            if s.kind == "cosine":
                s.params["restarts"] = [j[0] for j in ups]
    kinds = [s.kind for s in segs]
    if (
        len(segs) >= 2
        and kinds[0] == "warmup"
        and segs[-1].kind in ("cosine", "linear_decay")
        and segs[-1].lr_end < segs[0].lr_start
        and (segs[0].end_step - segs[0].start_step)
        >= 0.2 * max(segs[-1].end_step - segs[0].start_step, 1)
    ):  # OneCycle: a long rise (>= 20 % of the span, default 30 %) then anneal below start
        segs[0].params["one_cycle_candidate"] = True


def describe(segs: list[ScheduleSegment]) -> str:
    """Short name of the whole schedule, e.g. 'warmup+cosine' or 'multistep'."""
    kinds = [s.kind for s in segs if s.kind != "constant" or len(segs) == 1]
    if not kinds:
        return "constant"
    if any(s.params.get("one_cycle_candidate") for s in segs):
        return "one_cycle"
    if "step" in kinds:
        return "warmup+multistep" if kinds[0] == "warmup" else "multistep"
    return "+".join(dict.fromkeys(kinds))
