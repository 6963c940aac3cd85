"""Cyclic schedules (CyclicLR triangles) and the fallback description of an unknown one."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from .schedule_decays import _cos_lsq
from .schedule_fit_base import Identification, _log, _seg
from .types import ScheduleSegment


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
