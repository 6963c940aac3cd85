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
from typing import Any

import numpy as np
from scipy.optimize import brentq, least_squares

from .schedule_cyclic import _cyclic, _peaks, _unknown
from .schedule_decays import _fit_cosine
from .schedule_fit_base import EXACT, Identification, _log, _Main, _rms, _seg, find_jumps
from .schedule_steps import _main
from .types import ScheduleSegment


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
