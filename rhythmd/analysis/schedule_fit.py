"""Name the ``torch.optim.lr_scheduler`` schedule behind the knots of an lr stream.

Knots are exact (step, lr) samples of the stream (see ``schedule.ScheduleTracker``), so the
scheduler that produced them fits them to float rounding while the wrong ones do not. Each
candidate is fitted in log(lr) (linear least squares where it can be, scipy
``minimize_scalar``/``least_squares``/``brentq`` where it cannot) and the simplest one within 2x
of the best RMS log residual, or under ``EXACT``, wins. Step quantities (``T_max``,
``step_size``, ``milestones``, ``total_iters``, ...) count optimizer steps from the scheduler's
start, i.e. from the first lr sample (or, inside a ``SequentialLR``, from its milestone);
``*_lr`` and ``eta_min`` are absolute LRs; ``*_factor`` and ``gamma`` are relative factors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq, least_squares, minimize_scalar

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


# ---------------------------------------------------------------------------- decays
def _fit_exponential(t: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any], float]:
    a = np.vstack([np.ones_like(t), t]).T
    c, *_ = np.linalg.lstsq(a, y, rcond=None)
    return _rms(a @ c - y), {"gamma": float(math.exp(c[1]))}, float(math.exp(c[0]))


def _cos_lsq(c: np.ndarray, lr: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """lr ~ eta + amp c by least squares in relative error: (rms log, eta >= 0, amp > 0)."""
    m = np.vstack([np.ones_like(c), c]).T / lr[:, None]
    (eta, amp), *_ = np.linalg.lstsq(m, np.ones_like(c), rcond=None)
    if amp <= 0:
        return None
    eta = max(float(eta), 0.0)
    return _rms(_log(eta + amp * c) - y), eta, float(amp)


def _cos_profile(t: np.ndarray, lr: np.ndarray, y: np.ndarray, tm: float,
                 ) -> tuple[float, float, float]:
    """Best (rms log, eta, amp) of the cosine with period parameter ``tm``: eta and amp by
    least squares in relative error, or eta = 0 with amp exact in log."""
    c = 0.5 * (1.0 + np.cos(np.pi * t / tm))
    best = _cos_lsq(c, lr, y) or (math.inf, 0.0, 0.0)
    if c.min() > 0:  # eta_min = 0: log lr = log amp + log c, linear in log amp
        la = float(np.mean(y - np.log(c)))
        r0 = _rms(la + np.log(c) - y)
        if r0 < best[0]:
            best = (r0, 0.0, math.exp(la))
    return best


def _fit_cosine(t: np.ndarray, lr: np.ndarray, hint: dict[str, Any] | None = None,
                ) -> tuple[float, dict[str, Any], float]:
    """lr = eta + (B - eta)(1 + cos(pi t / T))/2: profile over T on a grid (or around
    ``hint``, a previous fit's params), refined by ``minimize_scalar`` and (without a hint)
    ``least_squares``."""
    y = _log(lr)
    span = max(float(t[-1]), 1.0)
    grid = np.concatenate([np.geomspace(span / 2.2, span * 60, 40),  # and ends just past
                           span + np.geomspace(0.3, span, 30)])  # the last point (eta ~ 0)
    if hint:
        grid = float(hint["T_max"]) * np.array([0.98, 1.0, 1.02])
    grid = np.sort(grid)
    prof = [_cos_profile(t, lr, y, float(tm))[0] for tm in grid]
    i = int(np.argmin(prof))
    if not math.isfinite(prof[i]):
        return math.inf, {}, math.nan
    lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    tm = float(grid[i])
    if hi > lo:
        opt = minimize_scalar(lambda v: _cos_profile(t, lr, y, v)[0], bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-10 * hi})
        if opt.fun < prof[i]:
            tm = float(opt.x)
    rms, eta, amp = _cos_profile(t, lr, y, tm)
    if rms < 1e-9 or hint:  # exact already, or a quick refit inside a search
        return rms, {"T_max": tm, "eta_min": eta}, eta + amp

    def res(p: np.ndarray) -> np.ndarray:
        return _log(p[0] + p[1] * 0.5 * (1.0 + np.cos(np.pi * t / p[2]))) - y

    scale = float(lr.max())
    fit = least_squares(
        res, [eta, amp, tm], bounds=([0.0, 0.0, 1e-6], [np.inf, np.inf, np.inf]),
        x_scale=[scale, scale, tm], xtol=1e-12, ftol=1e-12, max_nfev=60,
    )
    if _rms(fit.fun) < rms:
        rms, (eta, amp, tm) = _rms(fit.fun), (float(v) for v in fit.x)
    return rms, {"T_max": tm, "eta_min": eta}, eta + amp


def _fit_poly(t: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any], float]:
    """lr = B (1 - t/T)^p for T beyond the last point: profile over T, then least_squares."""
    tl = float(t[-1])
    best: tuple[float, float, float, float] | None = None
    for d in np.geomspace(0.3, 100 * max(tl, 1.0), 64):
        x = np.log1p(-t / (tl + d))
        a = np.vstack([np.ones_like(t), x]).T
        c, *_ = np.linalg.lstsq(a, y, rcond=None)
        if c[1] <= 0:
            continue
        r = _rms(a @ c - y)
        if best is None or r < best[0]:
            best = (r, float(c[0]), float(c[1]), float(math.log(d)))
    if best is None:
        return math.inf, {}, math.nan

    def res(p: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * np.log1p(-t / (tl + math.exp(p[2]))) - y

    fit = least_squares(res, best[1:], xtol=1e-12, ftol=1e-12)
    lb, pw, ld = (float(v) for v in fit.x)
    if pw <= 0:
        return math.inf, {}, math.nan
    return _rms(fit.fun), {"total_iters": tl + math.exp(ld), "power": pw}, math.exp(lb)


def _fit_linear_floor(t: np.ndarray, lr: np.ndarray) -> tuple[float, dict[str, Any], float]:
    """LinearLR decay: lr = B (1 - (1 - f) min(t, T)/T), f the end factor; needs a flat tail."""
    flat = np.flatnonzero(np.abs(lr / lr[-1] - 1) <= 1e-6)
    ft = int(flat[0]) if flat.size else len(lr) - 1
    if ft < 2 or ft >= len(lr) - 1:
        return math.inf, {}, math.nan
    td, ld = t[:ft], lr[:ft]
    m = np.vstack([np.ones_like(td), td]).T / ld[:, None]
    (b, s), *_ = np.linalg.lstsq(m, np.ones_like(td), rcond=None)
    if b <= 0 or s >= 0:
        return math.inf, {}, math.nan
    end = float(lr[-1])
    tm = (end - b) / s
    pred = b + s * np.minimum(t, tm)
    return _rms(_log(pred) - _log(lr)), {"end_factor": end / b, "total_iters": tm}, float(b)


def _decay(t: np.ndarray, lr: np.ndarray, t0: float, only: str = "",
           hint: dict[str, Any] | None = None) -> _Main:
    """Best decay model (or model ``only``) for points at steps ``t`` (absolute) of a
    scheduler started at t0; simpler models first, each kept if within 2x of the best."""
    x = t - t0
    y = _log(lr)
    fits: list[tuple[str, float, dict[str, Any], float]] = []
    models = {
        "exponential": lambda: _fit_exponential(x, y),
        "linear_decay": lambda: _fit_linear_floor(x, lr),
        "cosine": lambda: _fit_cosine(x, lr, hint),
        "poly": lambda: _fit_poly(x, y),
    }
    for name, fit in models.items():
        if (only and name != only) or (name in ("cosine", "poly") and len(x) < 3):
            continue
        r, p, b = fit()
        if math.isfinite(r) and p:
            fits.append((name, r, p, b))
    if not fits:
        r, p, b = _fit_exponential(x, y)
        fits.append(("exponential", r, p, b))
    best = min(f[1] for f in fits)
    name, rms, params, base = next(f for f in fits if f[1] <= max(2 * best, EXACT))
    end = t[-1]
    if name == "exponential":
        sched = "ExponentialLR"
        phases = [(t0, math.inf, "decay")]
        seg_p = {"gamma_per_step": params["gamma"]}
    elif name == "cosine":
        sched = "CosineAnnealingLR"
        tm = params["T_max"]
        phases = [(t0, t0 + tm, "decay"), (t0 + tm, math.inf, "unknown")]
        seg_p = dict(params)
    elif name == "poly":
        sched = "PolynomialLR"
        tm = params["total_iters"]
        phases = [(t0, t0 + tm, "decay"), (t0 + tm, math.inf, "constant")]
        seg_p = dict(params)
    else:
        sched = "LinearLR"
        tm = params["total_iters"]
        params = {"start_factor": 1.0, **params}
        phases = [(t0, t0 + tm, "decay"), (t0 + tm, math.inf, "constant")]
        seg_p = dict(params)
        end = min(end, t0 + tm)
    params = {k: _round_steps(k, v) for k, v in params.items()}
    seg_p = {k: _round_steps(k, v) for k, v in seg_p.items()}
    segs = [ScheduleSegment(name, int(t[0]), int(end), float(lr[0]),
                            float(lr[t <= end][-1]), {**seg_p, "scheduler": sched})]
    if end < t[-1]:
        segs.append(ScheduleSegment("constant", int(end), int(t[-1]), float(lr[-1]),
                                    float(lr[-1])))
    return _Main(sched, {"base_lr": base, **params}, rms, base, segs, phases, name)


def _round_steps(key: str, v: Any) -> Any:
    if key in ("T_max", "total_iters", "step_size", "T_0") and isinstance(v, float):
        return round(v) if math.isfinite(v) else v
    return v


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


# --------------------------------------------------------------------------- warmups
def _ramp_linear(t: np.ndarray, lr: np.ndarray) -> tuple[float, float, float]:
    """Weighted least squares lr = a + b t on the rising knots: (rms log, a, b)."""
    m = np.vstack([np.ones_like(t), t]).T / lr[:, None]
    (a, b), *_ = np.linalg.lstsq(m, np.ones_like(t), rcond=None)
    pred = a + b * t
    return _rms(_log(pred) - _log(lr)), float(a), float(b)


def _ramp_cos(t: np.ndarray, lr: np.ndarray) -> tuple[float, float, float, float]:
    """OneCycleLR cos warmup lr = a + (B - a)(1 - cos(pi t/W))/2: (rms log, a, B, W)."""
    y = _log(lr)

    def res(p: np.ndarray) -> np.ndarray:
        return _log(p[0] + (p[1] - p[0]) * 0.5 * (1 - np.cos(np.pi * np.minimum(t / p[2], 1)))) - y

    w0 = max(float(t[-1]), 1.0)
    fit = least_squares(res, [float(lr[0]), float(lr[-1]), w0],
                        bounds=([0, 0, 1e-6], [np.inf, np.inf, np.inf]),
                        x_scale=[float(lr[-1]), float(lr[-1]), w0], xtol=1e-12, ftol=1e-12)
    return _rms(fit.fun), float(fit.x[0]), float(fit.x[1]), float(fit.x[2])


def identify(knots: list[list[float]], hole: bool, tol: float) -> Identification:
    """Name the scheduler behind ``knots`` ([step, lr] or [step, lr, sample ordinal]; with
    ``hole``, knots between the first and the second were dropped); ``unknown`` when the
    best model misses the knots by more than ``tol``/4 (RMS, log)."""
    if not knots:
        return Identification("unknown", {}, [])
    ident = _identify(knots, hole, tol, float(knots[0][0]))
    # sparse logging may start after the scheduler: other starts if this does not fit; if it
    # does, the stream's step 0 still wins when it fits as well (lr logged from step k on)
    starts = _starts(knots)
    if ident.fit_rms_log <= EXACT:
        starts = [c for c in starts if c == 0]
    for c in starts:
        alt = _identify(knots, hole, tol, c)
        if alt.scheduler != "unknown" and alt.fit_rms_log <= EXACT and (
                c == 0 or not alt.fit_rms_log >= ident.fit_rms_log):
            alt.params["start_step"] = round(c)
            ident = alt
            if c == 0:
                break
    if ident.scheduler == "unknown" or not ident.fit_rms_log <= tol / 4:
        t = np.array([k[0] for k in knots], dtype=float)
        lr = np.array([k[1] for k in knots], dtype=float)
        o = np.array([k[2] if len(k) > 2 else math.nan for k in knots], dtype=float)
        if len(t) > 2 and _peaks(_log(lr), tol).size >= 2:  # steep troughs may pass for cuts
            cyc = _cyclic(t, lr, float(t[0]))
            if cyc is not None and cyc.fit_rms_log <= EXACT:
                return cyc
        if ident.scheduler != "unknown":
            return _unknown(t, lr, find_jumps(t, _log(lr), o, tol), tol)
    return ident


def _starts(knots: list[list[float]]) -> list[float]:
    """Candidate scheduler starts before the first lr point of a sparsely logged stream:
    step 0 when the first point lies within two logging intervals of it, and one interval
    before the first point."""
    t0, k1 = float(knots[0][0]), knots[-1]
    if len(knots) < 2 or len(k1) < 3 or len(knots[0]) < 3 or k1[2] <= knots[0][2]:
        return []
    gap = (float(k1[0]) - t0) / (k1[2] - knots[0][2])  # mean steps between lr points
    if gap < 1.5:
        return []
    cands = [0.0] if 0 < t0 <= 2 * gap + 1 else []
    return [*cands, *(float(c) for c in {round(t0 - gap)} if c < t0 and c not in cands)]


def _identify(knots: list[list[float]], hole: bool, tol: float, start: float,
              ) -> Identification:
    """``identify`` for a scheduler whose step 0 is the stream's step ``start``."""
    t = np.array([k[0] for k in knots], dtype=float)
    lr = np.array([k[1] for k in knots], dtype=float)
    o = np.array([k[2] if len(k) > 2 else math.nan for k in knots], dtype=float)
    y = _log(lr)
    t_first = start
    if len(t) == 1 or float(np.ptp(y)) <= 2 * tol:
        lv = float(np.median(lr))
        seg = ScheduleSegment("constant", int(t[0]), int(t[-1]), float(lr[0]), float(lr[-1]))
        return Identification("constant", {"lr": lv}, [seg], [(t_first, math.inf, "constant")],
                              _rms(y - math.log(lv)))
    jumps = find_jumps(t, y, o, tol)
    if not jumps and _peaks(y, tol).size >= 2:
        cyc = _cyclic(t, lr, start)
        if cyc is not None and cyc.fit_rms_log <= EXACT:
            return cyc
    e0 = jumps[0] if jumps else len(t) - 1
    ipk = int(np.argmax(y[: e0 + 1] >= float(np.max(y[: e0 + 1])) - 1e-5))
    rising = ipk > 0 and y[1] > y[0] and y[ipk] - y[0] > 2 * tol
    if not rising:
        main = _main(t, lr, jumps, t_first, tol, hole=hole)
        if main is None:
            return _unknown(t, lr, jumps, tol)
        return Identification(main.scheduler, main.params, main.segments, main.phases, main.rms)
    return _with_warmup(t, lr, jumps, ipk, tol, start)


def _with_warmup(t: np.ndarray, lr: np.ndarray, jumps: list[int], ipk: int,
                 tol: float, start: float) -> Identification:
    """A rising start (LinearLR or OneCycleLR ramp) and what follows its peak."""
    t_first = start
    x = t - t_first
    n_lin = ipk if ipk >= 3 else ipk + 1  # the peak knot may already sit on the plateau
    rms_lin, a, b = _ramp_linear(x[:n_lin], lr[:n_lin])
    rms_cos, a_c, peak_c, w_c = (math.inf, 0.0, 0.0, 0.0)
    if ipk >= 3 and rms_lin > EXACT:  # the peak knot may be past the peak: left out
        n_cos = ipk if ipk >= 4 else ipk + 1
        rms_cos, a_c, peak_c, w_c = _ramp_cos(x[:n_cos], lr[:n_cos])
    cos_shape = rms_cos < rms_lin and rms_lin > EXACT
    in_progress = ipk == len(t) - 1
    if in_progress:  # still rising: the peak is not known yet
        if cos_shape:
            params = {"initial_lr": a_c, "max_lr": peak_c, "warmup_steps": round(w_c),
                      "anneal_strategy": "cos"}
            name = "OneCycleLR"
        else:
            params = {"start_lr": a, "slope_per_step": b}
            name = "LinearLR"
        seg = _seg("warmup", t, lr, 0, ipk, shape="cos" if cos_shape else "linear",
                   warmup_steps=int(t[ipk] - start), peak_lr=float(lr[ipk]), scheduler=name)
        return Identification(name, params, [seg], [(t_first, math.inf, "warmup")],
                              min(rms_lin, rms_cos))
    rest = [j - ipk for j in jumps]

    def main_at(w: float, only: str = "", hint: dict[str, Any] | None = None) -> _Main | None:
        keep = t >= t_first + w - 1e-9
        keep[:ipk] = False
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            idx = np.array([len(t) - 1])
        off = int(idx[0])
        js = [j + ipk - off for j in rest if j + ipk - off >= 0]
        return _main(t[idx], lr[idx], js, t_first + w, tol, only, hint)

    hold: tuple[float, _Main] | None = None  # (hold end, main after it)

    def ramp_res(m_start: float, peak: float = math.inf) -> np.ndarray:
        """Log residuals of the knots before the main part (from m_start) on the ramp."""
        pre = t < t_first + m_start - 1e-9
        pre[:ipk] = True
        if cos_shape:
            xs = np.minimum(x[pre] / w_c, 1)
            pred = a_c + (peak_c - a_c) * 0.5 * (1 - np.cos(np.pi * xs))
        else:
            pred = np.minimum(a + b * x[pre], peak)
        return _log(pred) - _log(lr[pre])

    if cos_shape:
        w = w_c
        main = main_at(w)
    else:
        w0 = (float(lr[ipk]) - a) / b if b > 0 else float(x[ipk])
        hi = float(x[min(ipk + 1, len(x) - 1)])
        w, main = _meet(main_at, lambda v: a + b * v, w0, float(x[ipk - 1]), hi)
        if main is not None and b > 0 and not main.decay:
            w, main = _meet(main_at, lambda v: a + b * v, (main.base - a) / b, w0, w0)
    if (main is None or main.rms > EXACT) and not jumps and ipk + 1 < len(t):
        # OneCycleLR(three_phase=True): back down to the start, then an anneal
        if cos_shape:
            three = _three_phase(t, lr, w_c, peak_c, a_c, "cos", start)
        elif b > 0:  # the knot after the peak is on the line back down (slope -b)
            w3 = (float(lr[ipk + 1]) - a + b * float(x[ipk + 1])) / (2 * b)
            three = _three_phase(t, lr, w3, a + b * w3, a, "linear", start)
        else:
            three = None
        if three is not None:
            return three
    if not cos_shape and ipk + 1 < len(t) and (
            main is None or main.rms > EXACT
            or float(np.max(np.abs(ramp_res(w)), initial=0)) > EXACT):
        # warmup, hold at the peak (ConstantLR), then a decay from the hold's end
        level = float(lr[ipk])
        h, m = _meet(main_at, lambda v: level, float(x[ipk + 1]), float(x[ipk]),
                     float(x[ipk + 1]))
        if m is not None and m.decay and b > 0:
            hold = (h, m)
            w = float(round((level - a) / b))
    if main is None and hold is None:
        return _unknown(t, lr, jumps, tol)
    peak = peak_c if cos_shape else (lr[ipk] if hold else main.base)
    w_steps = round(w)
    ramp = {"start_factor": max(0.0, (a_c / peak_c) if cos_shape else a / peak) + 0.0,
            "total_iters": w_steps}  # (+ 0.0: no -0.0 from a ramp that starts at 0)
    wseg = _seg("warmup", t, lr, 0, ipk, shape="cos" if cos_shape else "linear",
                warmup_steps=w_steps, peak_lr=peak,
                scheduler="OneCycleLR" if cos_shape else "LinearLR")
    wphase = (float(t_first), t_first + w, "warmup")
    # every knot counts: the ones before the main part against the ramp (and the hold)
    r_pre = ramp_res(hold[0] if hold else w, peak)
    if hold:
        main = hold[1]
    assert main is not None
    rms = math.sqrt((float(r_pre @ r_pre) + main.rms**2 * (len(t) - r_pre.size)) / len(t))
    if r_pre.size and float(np.max(np.abs(r_pre))) > tol / 2:  # a knot off the ramp
        return _unknown(t, lr, jumps, tol)
    if hold:
        h_steps = round(hold[0])
        children = [{"scheduler": "LinearLR", "params": {"base_lr": peak, **ramp}},
                    {"scheduler": "ConstantLR", "params": {"factor": 1.0}},
                    {"scheduler": main.scheduler, "params": main.params}]
        hseg = ScheduleSegment("constant", int(start + w), int(start + h_steps), peak, peak)
        params = {"schedulers": children, "milestones": [w_steps, h_steps],
                  "warmup_steps": w_steps}
        phases = [wphase, (t_first + w, t_first + hold[0], "constant"),
                  *[(max(p0, t_first + hold[0]), p1, ph) for p0, p1, ph in main.phases]]
        return Identification("SequentialLR", params, [wseg, hseg, *main.segments], phases,
                              rms)
    if cos_shape or (main.decay in ("poly", "linear_decay") and _one_cycle_linear(w, main)):
        return _one_cycle(t, lr, main, wseg, wphase, w, peak, a_c if cos_shape else a,
                          "cos" if cos_shape else "linear", rms, start)
    if main.scheduler == "constant":
        params = {"base_lr": peak, **ramp, "end_factor": 1.0}
        return Identification("LinearLR", params, [wseg, *main.segments],
                              [wphase, (t_first + w, math.inf, "constant")], rms)
    children = [{"scheduler": "LinearLR", "params": {"base_lr": peak, **ramp}},
                {"scheduler": main.scheduler, "params": main.params}]
    params = {"schedulers": children, "milestones": [w_steps], "warmup_steps": w_steps}
    phases = [wphase, *[(max(p0, t_first + w), p1, ph) for p0, p1, ph in main.phases]]
    return Identification("SequentialLR", params, [wseg, *main.segments], phases, rms)


def _meet(main_at: Callable[..., _Main | None], level: Callable[[float], float], w0: float,
          lo: float, hi: float) -> tuple[float, _Main | None]:
    """Where a level (ramp or hold, a function of the step) meets what follows: the start
    w in [lo, hi] at which the fitted main part starts at ``level(w)`` (brentq from w0), then
    the better whole step around it (main fit plus its mismatch with the level)."""
    main = main_at(w0)
    only = main.decay if main is not None else ""
    hint = main.params if main is not None else None
    w = w0
    if main is not None and only and hi > lo:

        def gap(v: float) -> float:
            m = main_at(v, only, hint)
            return math.log(max(level(v), 1e-300)) - math.log(m.base) if m else math.nan

        try:
            g_lo, g_hi = gap(lo), gap(hi)
            if g_lo * g_hi < 0:
                w = brentq(gap, lo, hi, xtol=0.1)
        except (ValueError, ZeroDivisionError):
            pass
    scored = []
    for c in {float(math.floor(w)), float(math.ceil(w))}:
        m = main_at(c, only)
        if m is not None:
            miss = abs(math.log(max(level(c), 1e-300)) - math.log(m.base))
            scored.append((m.rms + miss, c, m))
    if not scored:
        return w, None
    _, w, main = min(scored, key=lambda z: z[0])
    return w, main


def _one_cycle_linear(w: float, main: _Main) -> bool:
    """A linear warmup + linear anneal is OneCycleLR when the warmup is >= 15 % of it."""
    tm = main.params.get("total_iters")
    return isinstance(tm, (int, float)) and w >= 0.15 * (w + tm) and (
        main.decay != "poly" or abs(main.params.get("power", 0) - 1) < 0.02)


def _one_cycle(t: np.ndarray, lr: np.ndarray, main: _Main, wseg: ScheduleSegment,
               wphase: tuple[float, float, str], w: float, peak: float, initial: float,
               strategy: str, rms: float, start: float) -> Identification:
    if main.decay == "cosine":
        anneal, final = float(main.params["T_max"]), float(main.params["eta_min"])
    elif main.decay in ("poly", "linear_decay"):
        anneal = float(main.params["total_iters"])
        final = peak * float(main.params.get("end_factor", 0.0))
    else:
        anneal, final = math.nan, math.nan
    total = w + anneal + 1
    if math.isfinite(total) and t[-1] >= start + round(total) - 1.5:  # the last step is seen
        final = float(lr[-1])
    params = {
        "max_lr": peak,
        "total_steps": round(total) if math.isfinite(total) else None,
        "pct_start": (w + 1) / total if math.isfinite(total) else None,
        "warmup_steps": round(w),
        "anneal_strategy": strategy,
        "initial_lr": initial,
        "final_lr": final,
        "div_factor": peak / initial if initial > 0 else None,
        "final_div_factor": initial / final if final > 0 else None,
        "three_phase": False,
    }
    for s in main.segments:
        s.params["scheduler"] = "OneCycleLR"
    wseg.params["scheduler"] = "OneCycleLR"
    t0 = start + w
    phases = [wphase, (t0, t0 + anneal + 1, "decay"), (t0 + anneal + 1, math.inf, "unknown")]
    return Identification("OneCycleLR", params, [wseg, *main.segments], phases, rms)


def _three_phase(t: np.ndarray, lr: np.ndarray, w: float, peak: float, initial: float,
                 strategy: str, start: float) -> Identification | None:
    """OneCycleLR(three_phase=True): after the ramp (to ``peak`` at step w), back to
    ``initial`` at 2w, then an anneal (cos: fitted cosine; linear: a line to ~0)."""
    x = t - start

    def ann(start: float, end: float, pct: np.ndarray) -> np.ndarray:
        if strategy == "cos":
            return end + (start - end) / 2 * (np.cos(np.pi * pct) + 1)
        return (end - start) * pct + start

    m2 = (x > w) & (x <= 2 * w)
    m3 = x > 2 * w
    if m3.sum() < 3:
        return None
    r2 = _log(ann(peak, initial, (x[m2] - w) / w)) - _log(lr[m2])
    x3, l3 = x[m3] - 2 * w, lr[m3]
    if strategy == "cos":
        r3, p3, _ = _fit_cosine(x3, l3)
        if not p3:
            return None
        anneal, final = float(p3["T_max"]), float(p3["eta_min"])
    else:  # lr = initial + s x3 down to initial / final_div_factor (~0)
        s3 = float(np.sum((l3 - initial) * x3 / l3**2) / np.sum(x3**2 / l3**2))
        if s3 >= 0:
            return None
        r3 = _rms(_log(initial + s3 * x3) - _log(l3))
        anneal = -initial / s3
        final = float(l3[-1]) if x3[-1] >= anneal - 1.5 else 0.0
    rms = math.sqrt((float(r2 @ r2) + r3**2 * int(m3.sum())) / max(int((m2 | m3).sum()), 1))
    if rms > EXACT:
        return None
    total = 2 * w + anneal + 1
    params = {
        "max_lr": peak, "total_steps": round(total), "pct_start": (w + 1) / total,
        "warmup_steps": round(w), "anneal_strategy": strategy, "initial_lr": initial,
        "final_lr": final, "div_factor": peak / initial if initial > 0 else None,
        "final_div_factor": initial / final if final > 0 else None, "three_phase": True,
    }
    t0 = start
    i2 = int(np.searchsorted(x, 2 * w, side="right"))
    ipk = int(np.searchsorted(x, w, side="right")) - 1
    segs = [_seg("warmup", t, lr, 0, max(ipk, 0), shape=strategy, warmup_steps=round(w),
                 peak_lr=peak, scheduler="OneCycleLR"),
            _seg("decay", t, lr, max(ipk, 0), max(i2 - 1, 0), scheduler="OneCycleLR"),
            _seg("cosine" if strategy == "cos" else "linear_decay", t, lr, max(i2 - 1, 0),
                 len(t) - 1, scheduler="OneCycleLR")]
    phases = [(t0, t0 + w, "warmup"), (t0 + w, t0 + total, "decay"),
              (t0 + total, math.inf, "unknown")]
    return Identification("OneCycleLR", params, segs, phases, rms)


# ---------------------------------------------------------------------------- cyclic
def _peaks(y: np.ndarray, tol: float) -> np.ndarray:
    """Knots where the lr turns from rising to falling (moves under 2 tol are ignored)."""
    d = np.diff(y)
    sig = np.flatnonzero(np.abs(d) > 2 * tol)
    if sig.size < 2:
        return np.array([], dtype=int)
    s = np.sign(d[sig])
    turn = np.flatnonzero((s[:-1] > 0) & (s[1:] < 0))
    return sig[turn] + 1


def _tri(i: np.ndarray, up: float, period: float) -> tuple[np.ndarray, np.ndarray]:
    """CyclicLR's triangle (0 at the cycle start, 1 after ``up`` steps) and cycle number."""
    cyc = np.floor(1 + i / period)
    x = 1 + i / period - cyc
    r = up / period
    return np.where(x <= r, x / r, (x - 1) / (r - 1)), cyc


def _cyclic(t: np.ndarray, lr: np.ndarray, start: float) -> Identification | None:
    """CyclicLR (triangular, triangular2, exp_range): integer step sizes searched around the
    spacing of the observed peaks; base and amplitude by least squares."""
    y = _log(lr)
    pk = _peaks(y, 0.0)
    i = t - start
    if pk.size < 2:
        return None
    p0 = float(np.median(np.diff(i[pk])))
    u0 = float(np.median(i[pk] % p0))  # peaks may be in later cycles (or one off, at a hole)
    if p0 < 2 or u0 <= 0:
        return None
    best: tuple[float, int, int, str, float, float, float] | None = None
    # exp_range: gamma per step from the decay of the peak heights above the floor
    hp = lr[pk] - float(lr.min())
    g0 = 1.0
    if (hp > 0).all():
        g0 = min(1.0, max(0.9, math.exp(float(np.median(np.diff(np.log(hp)) / np.diff(i[pk]))))))

    def score(up: int, per: int) -> None:
        nonlocal best
        if not 0 < up < per:
            return
        h, cyc = _tri(i, float(up), float(per))
        for mode, sc in (("triangular", 1.0), ("triangular2", 0.5 ** (cyc - 1)),
                         ("exp_range", g0**i)):
            f = _cos_lsq(h * sc, lr, y)  # lr ~ base + amp * scale * h
            if f is not None and (best is None or f[0] < best[0]):
                best = (f[0], up, per, mode, f[1], f[2], g0)

    cs = max(1, math.ceil((0.03 * p0 + 3) / 8))  # coarse grid step, then every step
    for up in range(round(u0) - 8 * cs, round(u0) + 8 * cs + 1, cs):
        for per in range(round(p0) - 8 * cs, round(p0) + 8 * cs + 1, cs):
            score(up, per)
    if best is None:
        return None
    step = cs
    while step > 1:  # refine: a window of +-step around the best, 4x finer each round
        fine = max(1, step // 4)
        b_up, b_per = best[1], best[2]
        for up in range(b_up - step, b_up + step + 1, fine):
            for per in range(b_per - step, b_per + step + 1, fine):
                score(up, per)
        step = fine
    assert best is not None
    rms, up, per, mode, base, amp, gamma = best
    if mode == "exp_range":  # refine gamma (the amplitude decays by gamma per step)
        h, _ = _tri(i, float(up), float(per))

        def prof(g: float) -> float:
            f = _cos_lsq(h * g**i, lr, y)
            return f[0] if f else math.inf

        opt = minimize_scalar(prof, bounds=(max(0.9, g0 - 0.01), min(1.0, g0 + 0.01)),
                              method="bounded", options={"xatol": 1e-12})
        f = _cos_lsq(h * float(opt.x) ** i, lr, y)
        if f is not None and f[0] < rms:
            rms, base, amp, gamma = f[0], f[1], f[2], float(opt.x)
    params = {"base_lr": base, "max_lr": base + amp, "step_size_up": up,
              "step_size_down": per - up, "mode": mode}
    if mode == "exp_range":
        params["gamma"] = gamma
    segs = [_seg("increase" if d > 0 else "decay" if d < 0 else "constant", t, lr, a, b,
                 scheduler="CyclicLR") for a, b, d in _monotone_runs(y, 0, len(t) - 1, 0.0)]
    return Identification("CyclicLR", params, segs, [], rms,
                          cycle=(start, float(up), float(per)))


# ---------------------------------------------------------------------------- fallback
def _unknown(t: np.ndarray, lr: np.ndarray, jumps: list[int], tol: float) -> Identification:
    """No torch scheduler fits: monotone pieces named by direction; phases from them."""
    y = _log(lr)
    segs: list[ScheduleSegment] = []
    bounds = [-1, *jumps, len(t) - 1]
    for i in range(len(bounds) - 1):
        a, b = bounds[i] + 1, bounds[i + 1]
        runs = _monotone_runs(y, a, b, tol)
        for ra, rb, d in runs:
            kind = "constant" if d == 0 else ("warmup" if d > 0 and not segs else
                                              "increase" if d > 0 else "decay")
            segs.append(_seg(kind, t, lr, ra, rb))
        if i < len(jumps):
            j = jumps[i]
            segs.append(ScheduleSegment("step", int(t[j + 1]), int(t[j + 1]), float(lr[j]),
                                        float(lr[j + 1]), {"gamma": float(lr[j + 1] / lr[j])}))
    phases = [(float(s.start_step), float(s.end_step) + 1,
               {"warmup": "warmup", "constant": "constant", "decay": "decay"}.get(s.kind,
                                                                                "unknown"))
              for s in segs if s.kind != "step"]
    return Identification("unknown", {}, segs, phases, math.nan)


def _monotone_runs(y: np.ndarray, a: int, b: int, tol: float) -> list[tuple[int, int, int]]:
    if a == b:
        return [(a, b, 0)]
    runs: list[tuple[int, int, int]] = []
    for i in range(a, b):
        dl = y[i + 1] - y[i]
        d = 0 if abs(dl) <= 2 * tol else (1 if dl > 0 else -1)
        if runs and runs[-1][2] == d:
            runs[-1] = (runs[-1][0], i + 1, d)
        else:
            runs.append((i, i + 1, d))
    return runs
