"""Fits of the decaying schedules in log(lr): exponential, cosine, polynomial, linear to a
floor; the best of them over a stretch of knots."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize_scalar

from .schedule_fit_base import EXACT, _log, _Main, _rms
from .types import ScheduleSegment


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
