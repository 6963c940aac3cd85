"""Fits of the schedules with jumps: step/multi-step decays, warm restarts, and the main
schedule after a warmup."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .schedule_decays import _cos_lsq, _decay
from .schedule_fit_base import _log, _Main, _rms, _seg
from .types import ScheduleSegment


# ---------------------------------------------------------------------- step schedules
def _steps(t: np.ndarray, lr: np.ndarray, pieces: list[tuple[int, int]], t0: float,
           hole: bool = False) -> _Main:
    """Flat pieces separated by cuts: StepLR (equal gammas, a step size every cut fits) or
    MultiStepLR (also what ReduceLROnPlateau cuts look like). With ``hole``, the first
    boundary is a gap in the knots, not a cut."""
    levels = [float(np.median(lr[a : b + 1])) for a, b in pieces]
    first = 1 if hole else 0
    cut_at = range(first, len(pieces) - 1)  # boundaries that are cuts
    gammas = [levels[i + 1] / levels[i] for i in cut_at]
    after = [pieces[i + 1][0] for i in cut_at]  # first knot after each cut
    before = [pieces[i][1] for i in cut_at]  # last knot before each cut
    milestones = [round(t[j] - t0) for j in after]
    g = float(np.median(gammas))
    same = all(abs(x / g - 1) <= 1e-3 for x in gammas)
    step_size: int | None = None
    start = t0
    if same and len(gammas) >= 2 and not hole:
        lo, hi = -math.inf, math.inf  # cut j at t0 + j*S, after knot `before` and by `after`
        for j, (a, b) in enumerate(zip(before, after, strict=True), start=1):
            lo = max(lo, (t[a] - t0) / j)
            hi = min(hi, (t[b] - t0) / j)
        n_cuts = len(after)  # and no cut missing before the last point
        cand = [s for s in range(math.floor(lo) + 1, math.floor(hi) + 1)
                if s > 0 and t0 + (n_cuts + 1) * s > t[-1]]
        if cand:  # sparse logging: prefer cuts on a logged step (logging every k | size)
            step_size = cand[-1]
    if step_size is None and same and len(gammas) >= (2 if hole else 3):
        # the first lr point (or the first kept knot) may come after the scheduler's start
        step_size, start = _step_offset(t, before, after, t0)  # cuts at c + j*S
    rms = _rms(np.concatenate([_log(lr[a : b + 1]) - math.log(v)
                               for (a, b), v in zip(pieces, levels, strict=True)]))
    segs: list[ScheduleSegment] = []
    cuts = [int(t[j]) for j in after]
    for i, (a, b) in enumerate(pieces):
        segs.append(ScheduleSegment("constant", int(t[a]), int(t[b]), levels[i], levels[i]))
        if i >= first and i - first < len(gammas):
            k = i - first
            segs.append(ScheduleSegment("step", cuts[k], cuts[k], levels[i], levels[i + 1],
                                        {"gamma": gammas[k], "milestones": cuts,
                                         "gamma_median": g}))
    for sg in segs:
        sg.params["scheduler"] = "MultiStepLR" if step_size is None else "StepLR"
    if step_size is not None:
        params: dict[str, Any] = {"base_lr": levels[0], "step_size": step_size, "gamma": g}
        if start != t0:
            params["start_step"] = start
        return _Main("StepLR", params, rms, levels[0], segs, [(t0, math.inf, "decay")])
    params = {"base_lr": levels[0], "milestones": milestones, "gamma": g}
    if not same:
        params["gammas"] = gammas
    params["milestone_steps"] = cuts
    if hole:  # cuts before the kept knots are not listed
        params["milestones_listed_from_step"] = int(t[1])
    return _Main("MultiStepLR", params, rms, levels[0], segs, [(t0, math.inf, "constant")])


def _step_offset(t: np.ndarray, before: list[int], after: list[int], t0: float,
                 ) -> tuple[int | None, float]:
    """StepLR started at an unseen step c in (t0 - S, t0]: (S, c) with every cut j at
    c + j*S between its two knots, or (None, t0)."""
    n = len(after)
    est = (t[after[-1]] - t[after[0]]) / (n - 1)
    slack = max(float(t[b] - t[a]) for a, b in zip(before, after, strict=True)) + 1
    for s in sorted(range(max(1, math.floor(est - slack)), math.ceil(est + slack) + 1),
                    key=lambda v: abs(v - est)):
        q = (t[after[0]] - t0) / s
        for j1 in sorted({max(1, math.floor(q)), max(1, math.ceil(q))}):  # first cut's number
            lo, hi = t0 - s, t0
            for k, (a, b) in enumerate(zip(before, after, strict=True)):
                lo = max(lo, t[a] - (j1 + k) * s)
                hi = min(hi, t[b] - (j1 + k) * s)
            cs = [c for c in range(math.floor(lo) + 1, math.floor(hi) + 1)
                  if c + (j1 + n) * s > t[-1]]  # no cut missing before the last point
            if cs:
                return s, cs[(len(cs) - 1) // 2]  # the middle of the starts that fit
    return None, t0


def _restarts(t: np.ndarray, lr: np.ndarray, pieces: list[tuple[int, int]], t0: float,
              hole: bool = False) -> _Main | None:
    """CosineAnnealingWarmRestarts: integer T_0 and T_mult consistent with every observed
    restart (and no further one before the last point); base and eta_min by least squares.
    With ``hole`` (the first boundary is a gap in the knots), T_mult = 1 and T_0 from the
    spacing of the observed restarts."""
    first = 1 if hole else 0
    after = [pieces[i + 1][0] for i in range(first, len(pieces) - 1)]
    before = [pieces[i][1] for i in range(first, len(pieces) - 1)]
    x = t - t0
    y = _log(lr)
    best: tuple[float, int, int, float, float] | None = None
    if hole:
        if len(after) < 2:
            return None
        est = (x[after[-1]] - x[after[0]]) / (len(after) - 1)
        slack = max(float(x[b] - x[a]) for a, b in zip(before, after, strict=True)) + 1
        cands = range(max(1, math.floor(est - slack)), math.ceil(est + slack) + 1)
        mults = range(1, 2)
    else:
        cands = range(max(1, math.floor(x[before[0]]) + 1), math.floor(x[after[0]]) + 1)
        mults = range(1, 9)
    if len(cands) > 2000:
        return None
    for t_mult in mults:
        for t_0 in cands:
            starts = [0.0]
            period = float(t_0)
            while starts[-1] + period <= x[-1]:
                starts.append(starts[-1] + period)
                period *= t_mult
            seen = [s for s in starts[1:] if s > x[first]]  # restarts after the hole
            if len(seen) != len(after) or not all(
                    x[a] < s <= x[b] for a, b, s in zip(before, after, seen, strict=True)):
                continue
            idx = np.searchsorted(np.array(starts), x, side="right") - 1
            tcur = x - np.array(starts)[idx]
            ti = t_0 * float(t_mult) ** idx
            f = _cos_lsq(0.5 * (1 + np.cos(np.pi * tcur / ti)), lr, y)
            if f is not None and (best is None or f[0] < best[0] - 1e-12):
                best = (f[0], t_0, t_mult, f[1], f[1] + f[2])
    if best is None:
        return None
    rms, t_0, t_mult, eta, base = best
    restarts = [int(t[j]) for j in after]
    segs = []
    for a, b in pieces[first:]:
        cycle = sum(1 for r in restarts if r <= t[a]) + (1 if hole else 0)
        segs.append(_seg("cosine", t, lr, a, b, T_max=int(t_0 * t_mult**cycle), eta_min=eta,
                         restarts=restarts, scheduler="CosineAnnealingWarmRestarts"))
    params = {"base_lr": base, "T_0": t_0, "T_mult": t_mult, "eta_min": eta}
    return _Main("CosineAnnealingWarmRestarts", params, rms, base, segs,
                 [(t0, math.inf, "decay")])


def _main(t: np.ndarray, lr: np.ndarray, jumps: list[int], t0: float, tol: float,
          only: str = "", hint: dict[str, Any] | None = None, hole: bool = False,
          ) -> _Main | None:
    """Identify the schedule of points ``t, lr`` (jumps after the given knot indices; with
    ``hole``, the knots between the first and the second were dropped)."""
    y = _log(lr)
    hole = hole and bool(jumps) and jumps[0] > 0
    bounds = [-1, *([0] if hole else []), *jumps, len(t) - 1]
    pieces = [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1)]
    flat = [float(np.ptp(y[a : b + 1])) <= 2 * tol for a, b in pieces]
    if not jumps:
        if flat[0]:
            lv = float(np.median(lr))
            return _Main("constant", {"lr": lv}, _rms(y - math.log(lv)), lv,
                         [ScheduleSegment("constant", int(t[0]), int(t[-1]), float(lr[0]),
                                          float(lr[-1]))], [(t0, math.inf, "constant")])
        return _decay(t, lr, t0, only, hint)
    ups = [y[j + 1] > y[j] for j in jumps]
    if all(flat):
        if not any(ups):
            return _steps(t, lr, pieces, t0, hole)
        if len(jumps) == 1 and not hole:
            lv = float(np.median(lr[pieces[1][0] :]))
            f = float(np.median(lr[: pieces[0][1] + 1])) / lv
            seg = [_seg("constant", t, lr, a, b) for a, b in pieces]
            it = round(t[pieces[1][0]] - t0)
            return _Main("ConstantLR", {"base_lr": lv, "factor": f, "total_iters": it}, 0.0,
                         lv * f, seg, [(t0, math.inf, "constant")])
        return None
    if all(ups):
        return _restarts(t, lr, pieces, t0, hole)
    return None
