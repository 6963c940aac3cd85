"""Online detectors. Each consumes one point at a time and returns lifecycle signals.

A signal is a dict ``{"action": "open"|"update"|"close", "kind", "metric", "step",
"onset_step", "severity", "confidence", "evidence", "message"}``; ``RunAnalyzer`` turns
signals into ``Diagnosis`` objects. All state is plain JSON types (``state_dict``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import stats
from .stats import MAD_TO_SIGMA
from .types import AnalysisConfig

Signal = dict[str, Any]


class _Stateful:
    """Attribute-dict persistence; ``cfg`` is not part of the state."""

    cfg: AnalysisConfig

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "cfg":
                continue
            out[k] = (
                [list(x) if isinstance(x, list) else x for x in v]
                if isinstance(v, list)
                else (dict(v) if isinstance(v, dict) else v)
            )
        return out

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if k in self.__dict__:
                setattr(self, k, v)


def _sig(
    action: str,
    kind: str,
    metric: str,
    step: int,
    onset: int,
    severity: str,
    confidence: float,
    evidence: dict[str, Any],
    message: str,
) -> Signal:
    return {
        "action": action,
        "kind": kind,
        "metric": metric,
        "step": int(step),
        "onset_step": int(onset),
        "severity": severity,
        "confidence": float(round(min(max(confidence, 0.0), 1.0), 4)),
        "evidence": evidence,
        "message": message,
    }


class DivergenceDetector(_Stateful):
    """Early divergence of the train loss (per step).

    Works on y = asinh(loss / |first loss|) (log-like, safe for losses <= 0). A blow-up is
    a median-of-5 level that sits ``div_z`` noise sigmas above both the trailing baseline
    (median/MAD of the previous ``div_baseline_steps`` steps) and the starting level, or a
    significant Theil–Sen rise projected to cross that bar within ``div_horizon_steps``.
    A single wild step cannot move a median of 5, so recovered one-step spikes are only
    reported as ``spike``. Non-finite losses open a critical divergence immediately.
    """

    def __init__(self, cfg: AnalysisConfig, metric: str) -> None:
        self.cfg = cfg
        self.metric = metric
        self.scale: float | None = None
        self.y0 = math.nan
        self.init: list[float] = []
        self.sig0_cache = math.nan
        self.ys: list[float] = []
        self.ss: list[int] = []
        self.count = 0
        self.base_med = math.nan
        self.base_sig = math.nan
        self.base_sig_raw = math.nan  # unfloored, for one-step spike z-scores
        self.elev_start: int | None = None
        self.active = False
        self.critical = False
        self.open_base = math.nan
        self.ok_run = 0
        self.severity = ""
        self.spike_open = False
        self.n_nonfinite = 0

    # ------------------------------------------------------------------
    def reset_recent(self, keep_before_step: int) -> None:
        """Drop points at or after ``keep_before_step`` (rollback)."""
        keep = [i for i, s in enumerate(self.ss) if s < keep_before_step]
        self.ys = [self.ys[i] for i in keep]
        self.ss = [self.ss[i] for i in keep]
        self.elev_start = None
        self.active = False
        self.critical = False
        self.ok_run = 0
        self.spike_open = False
        self.base_med = math.nan
        self._refresh_baseline(force=True)

    def _sig0(self) -> float:
        """Noise of the starting level (asinh units) from the first 10 steps, capped."""
        f = self.cfg.div_sigma_floor
        if len(self.init) < 5:
            return 2 * f
        if len(self.init) >= 10 and math.isfinite(self.sig0_cache):
            return self.sig0_cache
        if len(self.init) < 10:  # few points: conservative (spread or step noise, >= 2 floors)
            sd = max(stats.robust_sigma(self.init), stats.diff_sigma(self.init))
            return max(2 * f, min(sd, 0.3))
        v = max(f, min(stats.diff_sigma(self.init), 0.3))  # step noise, robust to a fast trend
        self.sig0_cache = v
        return v

    def _refresh_baseline(self, force: bool = False) -> None:
        b = self.ys[-(self.cfg.div_baseline_steps + 5) : -5]
        if len(b) >= 8:
            self.base_med = stats.median(b)
            self.base_sig_raw = stats.robust_sigma(b)
            self.base_sig = max(self.base_sig_raw, self.cfg.div_sigma_floor)
        else:  # too few points yet: the starting level is the baseline
            self.base_med = math.nan
            self.base_sig = math.nan
            self.base_sig_raw = math.nan

    def _loss(self, y: float) -> float:
        return float(math.sinh(min(y, 700.0)) * (self.scale or 1.0))

    def update(self, step: int, x: float, ctx: dict[str, Any]) -> list[Signal]:
        """Consume the train loss ``x`` at ``step``; ``ctx`` carries the lr phase."""
        cfg = self.cfg
        out: list[Signal] = []
        if not math.isfinite(x):
            self.n_nonfinite += 1
            self.ok_run = 0
            ev = {
                "test": "nonfinite",
                "value": x,
                "nonfinite_count": self.n_nonfinite,
                **_lr_evidence(ctx, step),
            }
            msg = f"{self.metric} is non-finite ({x}) at step {step}"
            if not self.active:
                self.active, self.critical, self.severity = True, True, "critical"
                self.open_base = self.base_med if math.isfinite(self.base_med) else self.y0
                onset = self.elev_start if self.elev_start is not None else step
                out.append(
                    _sig("open", "divergence", self.metric, step, onset, "critical", 1.0, ev, msg)
                )
            elif not self.critical:
                self.critical, self.severity = True, "critical"
                out.append(
                    _sig("update", "divergence", self.metric, step, step, "critical", 1.0, ev, msg)
                )
            return out
        if self.scale is None:
            self.scale = abs(x) if abs(x) > 1e-12 else 1.0
            self.y0 = stats.scaled_asinh(x, self.scale)
        y = stats.scaled_asinh(x, self.scale)
        self.ys.append(y)
        self.ss.append(int(step))
        cap = cfg.div_baseline_steps + cfg.div_trend_steps + 8
        if len(self.ys) > 2 * cap:
            self.ys, self.ss = self.ys[-cap:], self.ss[-cap:]
        if len(self.init) < 10:
            self.init.append(y)
            if len(self.init) >= 5:  # first loss, robustified against a lucky first batch
                self.y0 = min(stats.median(self.init[:5]), self.init[0] + 2 * self._sig0())
        self.count += 1
        last = sorted(self.ys[-5:])
        k = len(last)
        m5 = (
            (last[k // 2] if k % 2 else 0.5 * (last[k // 2 - 1] + last[k // 2]))
            if k >= 3
            else (last[0])
        )
        sig = (
            max(self.base_sig, cfg.div_sigma_floor)
            if math.isfinite(self.base_sig)
            else (self._sig0())
        )
        base = self.base_med if math.isfinite(self.base_med) else self.y0
        elevated = m5 > base + 3 * sig
        if elevated:
            if self.elev_start is None:
                self.elev_start = int(step)
        else:
            self.elev_start = None
        if (
            (self.count % 8 == 0 or not math.isfinite(self.base_med))
            and not self.active
            and (not elevated)
        ):
            self._refresh_baseline()
            if math.isfinite(self.base_med):
                base, sig = self.base_med, max(self.base_sig, cfg.div_sigma_floor)
        bar = self.y0 + cfg.div_z * self._sig0()
        has_base = math.isfinite(self.base_med)
        if self.active:
            return self._track(step, m5, y, sig, ctx)
        test = ""
        ev: dict[str, Any] = {}
        if m5 > bar:
            test = "above_start"
        elif has_base and m5 > base + cfg.div_z_recent * sig:
            test = "level_jump"
        elif elevated and len(self.ys) >= cfg.div_trend_steps:
            n = cfg.div_trend_steps
            slope, lo, _ = stats.theil_sen(
                np.asarray(self.ss[-n:], float), np.asarray(self.ys[-n:]), 0.90
            )
            span = self.ss[-1] - self.ss[-n] if n > 1 else 1
            if (
                lo > 0
                and slope * span > cfg.div_z * sig
                and (bar - m5) / slope <= cfg.div_horizon_steps
            ):
                test = "sustained_rise"
                ev.update(
                    {
                        "theil_sen_slope_per_step": slope,
                        "slope_lo90": lo,
                        "projected_steps_to_bar": (bar - m5) / slope,
                        "window_steps": span,
                    }
                )
        if test:
            z = (m5 - base) / sig
            ratio = self._loss(m5) / self._loss(self.y0) if self._loss(self.y0) else math.inf
            sev = "high" if ratio >= 3 or (test == "level" and ratio >= 2) else "warning"
            ev.update(
                {
                    "test": test,
                    "z_vs_baseline": z,
                    "level_over_start": ratio,
                    "baseline_loss": self._loss(base),
                    "median5_loss": self._loss(m5),
                    "noise_sigma_asinh": sig,
                    "start_loss": self._loss(self.y0),
                    **_lr_evidence(ctx, step),
                }
            )
            self.active, self.severity, self.open_base, self.ok_run = True, sev, base, 0
            onset = self.elev_start if self.elev_start is not None else int(step)
            why = {
                "sustained_rise": "sustained rise",
                "above_start": "above its starting level",
                "level_jump": "level jumped",
            }[test]
            msg = (
                f"{self.metric} blowing up: {why}, median-5 loss {self._loss(m5):.4g} "
                f"({ratio:.2f}x start, z={z:.1f}) at step {step}{_lr_phrase(ev)}"
            )
            out.append(
                _sig(
                    "open",
                    "divergence",
                    self.metric,
                    step,
                    onset,
                    sev,
                    stats.normal_confidence(z - cfg.div_z + 2),
                    ev,
                    msg,
                )
            )
            if self.spike_open:
                self.spike_open = False
                out.append(
                    _sig(
                        "close",
                        "spike",
                        self.metric,
                        step,
                        step,
                        "info",
                        1.0,
                        {},
                        "spike merged into divergence",
                    )
                )
            return out
        # one-step spikes against the recent level and noise
        sig_spike = (
            max(self.base_sig_raw, 0.2 * cfg.div_sigma_floor)
            if math.isfinite(self.base_sig_raw)
            else sig
        )
        zy = (y - base) / sig_spike
        if self.spike_open and zy < 3:
            self.spike_open = False
            out.append(
                _sig(
                    "close",
                    "spike",
                    self.metric,
                    step,
                    step,
                    "info",
                    1.0,
                    {"recovered_at_step": int(step)},
                    "loss spike recovered",
                )
            )
        elif not self.spike_open and zy > cfg.spike_z and len(self.ys) > 20:
            self.spike_open = True
            out.append(
                _sig(
                    "open",
                    "spike",
                    self.metric,
                    step,
                    step,
                    "info",
                    stats.normal_confidence(zy - cfg.spike_z),
                    {"z": zy, "loss": x, "baseline_loss": self._loss(base)},
                    f"one-step {self.metric} spike to {x:.4g} at step {step} "
                    f"(z={zy:.1f}); not a divergence unless it persists",
                )
            )
        return out

    def fast_forward(self, steps: np.ndarray, xs: np.ndarray) -> int:
        """Consume a prefix of finite losses in bulk while nothing can fire; return its length.

        Only runs in the quiet state (no open divergence or spike, start level and trailing
        baseline established, windows full). For each point it computes the exact per-point
        statistics (median-of-5, the baseline refreshed every 8 steps, the start bar, spike
        z-score) and stops before the first point that is elevated, crosses a bar or a spike
        threshold (with a small margin, so the gate is conservative). The state after the
        prefix is exactly the state that ``update`` per point would leave; the caller feeds
        the point at the returned index through ``update``.
        """
        cfg = self.cfg
        nb = cfg.div_baseline_steps
        if (
            self.active
            or self.spike_open
            or self.scale is None
            or len(self.init) < 10
            or not math.isfinite(self.sig0_cache)
            or not math.isfinite(self.base_med)
            or not math.isfinite(self.base_sig)
            or not math.isfinite(self.base_sig_raw)
            or len(self.ys) < nb + 5
            or xs.size == 0
        ):
            return 0
        if xs.size <= 128:  # small batches: scalar loop, no numpy call overhead
            return self._ff_scalar(steps.tolist(), xs.tolist())
        fin = np.isfinite(xs)
        n = int(xs.size) if fin.all() else int(np.argmin(fin))
        if n == 0:
            return 0
        xs = xs[:n]
        z = xs / self.scale if self.scale > 0 else xs
        z = np.clip(z, -stats._BIG, stats._BIG)
        ynew = list(map(math.asinh, z.tolist()))  # math.asinh: bit-identical to update()
        hist = self.ys[-(nb + 4) :]
        o = len(hist)
        f = np.asarray(hist + ynew)
        yv = f[o:]
        m5 = np.sort(sliding_window_view(f[o - 4 :], 5), axis=1)[:, 2]
        floor = cfg.div_sigma_floor
        # baseline refreshes at count % 8 == 0 over ys[-(nb + 5):-5] (same numpy median)
        cnt = self.count + 1 + np.arange(n)
        ref = np.flatnonzero(cnt % 8 == 0)
        bm = np.empty(ref.size + 1)
        braw = np.empty(ref.size + 1)
        bm[0], braw[0] = self.base_med, self.base_sig_raw
        if ref.size:
            win = sliding_window_view(f, nb)[o + ref - (nb + 4)]
            med = np.median(win, axis=1)
            bm[1:] = med
            braw[1:] = MAD_TO_SIGMA * np.median(np.abs(win - med[:, None]), axis=1)
        bsig = np.maximum(braw, floor)
        bsig[0] = self.base_sig
        sig_b = np.maximum(bsig, floor)
        spk_b = np.maximum(braw, 0.2 * floor)
        jj = np.arange(n)
        old = np.searchsorted(ref, jj, side="left")  # baseline in force before point j
        cur = np.searchsorted(ref, jj, side="right")  # after a refresh at j
        bar = self.y0 + cfg.div_z * self.sig0_cache

        def above(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # a > b, conservatively
            return a > b - 1e-9 * (1.0 + np.abs(b))

        flag = above(m5, bm[old] + 3 * sig_b[old])
        flag |= above(m5, np.full(n, bar))
        flag |= above(m5, bm[cur] + cfg.div_z_recent * sig_b[cur])
        flag |= above((yv - bm[cur]) / spk_b[cur], np.full(n, cfg.spike_z))
        hit = np.flatnonzero(flag)
        k = int(hit[0]) if hit.size else n
        if k == 0:
            return 0
        cap = nb + cfg.div_trend_steps + 8
        ys_all = self.ys + ynew[:k]
        ss_all = self.ss + steps[:k].tolist()
        ln = len(self.ys)
        if ln + k > 2 * cap:  # same trimming as per-point appends
            ln = cap + (k - (2 * cap + 1 - ln)) % (cap + 1)
        else:
            ln += k
        self.ys, self.ss = ys_all[-ln:], ss_all[-ln:]
        self.count += k
        self.elev_start = None
        c = int(cur[k - 1])
        if c > 0:
            self.base_med = float(bm[c])
            self.base_sig_raw = float(braw[c])
            self.base_sig = float(bsig[c])
        return k

    def _ff_scalar(self, sl: list[int], xl: list[float]) -> int:
        """``fast_forward`` for a few points (same gate, same floats, pure Python)."""
        cfg = self.cfg
        nb, floor = cfg.div_baseline_steps, cfg.div_sigma_floor
        cap = nb + cfg.div_trend_steps + 8
        bar = self.y0 + cfg.div_z * self.sig0_cache
        scale = self.scale or 1.0
        big = stats._BIG
        for j, (st, x) in enumerate(zip(sl, xl, strict=True)):
            if not math.isfinite(x):
                return j
            z = x / scale
            y = math.asinh(big if z > big else (-big if z < -big else z))
            ys = self.ys
            m5 = sorted([*ys[-4:], y])[2]
            b = self.base_sig
            sig = b if b > floor else floor
            base = self.base_med
            t = base + 3 * sig
            if m5 > t - 1e-9 * (1.0 + abs(t)):
                return j
            cnt = self.count + 1
            raw = self.base_sig_raw
            refresh = cnt % 8 == 0
            if refresh:  # ys[-(nb + 5):-5] once y is appended
                base, raw = stats.median_mad(ys[-(nb + 4) : -4])
                b = raw if raw >= floor else floor
                sig = b if b > floor else floor
            spk = raw if raw > 0.2 * floor else 0.2 * floor
            t = base + cfg.div_z_recent * sig
            zy = (y - base) / spk
            if (
                m5 > bar - 1e-9 * (1.0 + abs(bar))
                or m5 > t - 1e-9 * (1.0 + abs(t))
                or zy > cfg.spike_z - 1e-9 * (1.0 + cfg.spike_z)
            ):
                return j
            ys.append(y)
            self.ss.append(st)
            if len(ys) > 2 * cap:
                self.ys, self.ss = ys[-cap:], self.ss[-cap:]
            self.count = cnt
            self.elev_start = None
            if refresh:
                self.base_med, self.base_sig_raw, self.base_sig = base, raw, b
        return len(xl)

    def _track(
        self, step: int, m5: float, y: float, sig: float, ctx: dict[str, Any]
    ) -> list[Signal]:
        """Update or close an open divergence."""
        if m5 <= self.open_base + 3 * sig:
            self.ok_run += 1
        else:
            self.ok_run = 0
        if self.ok_run >= self.cfg.div_recover_steps:
            self.active = self.critical = False
            self.elev_start = None
            self.ok_run = 0
            self._refresh_baseline(force=True)
            return [
                _sig(
                    "close",
                    "divergence",
                    self.metric,
                    step,
                    step,
                    self.severity,
                    1.0,
                    {"recovered_at_step": int(step), "median5_loss": self._loss(m5)},
                    f"{self.metric} back to its pre-divergence level at step {step}",
                )
            ]
        if self.critical:
            return []
        ratio = self._loss(m5) / self._loss(self.y0) if self._loss(self.y0) else math.inf
        sev = "high" if ratio >= 3 else self.severity
        if sev != self.severity:
            self.severity = sev
            return [
                _sig(
                    "update",
                    "divergence",
                    self.metric,
                    step,
                    step,
                    sev,
                    0.99,
                    {"level_over_start": ratio, "median5_loss": self._loss(m5)},
                    f"{self.metric} at {ratio:.2f}x its starting level at step {step}",
                )
            ]
        return []


def _lr_evidence(ctx: dict[str, Any], step: int) -> dict[str, Any]:
    ev: dict[str, Any] = {}
    if ctx.get("lr") is not None and math.isfinite(ctx.get("lr", math.nan)):
        ev["lr"] = ctx["lr"]
    if ctx.get("in_warmup"):
        ev["loss_rises_while_lr_rises"] = True
    we = ctx.get("warmup_end_step")
    if we is not None:
        ev["warmup_end_step"] = we
        ev["steps_after_warmup_end"] = int(step - we)
        if 0 <= step - we <= max(50, 0.5 * we):
            ev["schedule_hint"] = "right after warmup end: warmup too short or peak lr too high"
    elif ctx.get("in_warmup"):
        ev["schedule_hint"] = "during lr warmup: peak lr likely too high"
    return ev


def _lr_phrase(ev: dict[str, Any]) -> str:
    return f"; {ev['schedule_hint']}" if "schedule_hint" in ev else ""


class EvalSeries(_Stateful):
    """Bounded window of the monitored eval series (direction-adjusted: lower is better)."""

    def __init__(self, cap: int = 64) -> None:
        self.cap = cap
        self.s: list[int] = []
        self.v: list[float] = []  # direction-adjusted raw values
        self.best: list[float] = []  # best-so-far of the 3-eval median after each eval
        self.n = 0
        self.first_v = math.nan
        self.first_step: int | None = None
        self.best_v = math.inf

    def add(self, step: int, v: float) -> None:
        self.s.append(int(step))
        self.v.append(float(v))
        v3 = stats.median(self.v[-3:])
        self.best_v = min(self.best_v, v3)
        self.best.append(self.best_v)
        if self.n == 0:
            self.first_v, self.first_step = float(v), int(step)
        self.n += 1
        if len(self.s) > 2 * self.cap:
            c = self.cap
            self.s, self.v, self.best = self.s[-c:], self.v[-c:], self.best[-c:]

    def truncate(self, before_step: int) -> None:
        keep = [i for i, s in enumerate(self.s) if s < before_step]
        self.s = [self.s[i] for i in keep]
        self.v = [self.v[i] for i in keep]
        self.best = [self.best[i] for i in keep]
        if not self.s:
            self.n, self.first_v, self.first_step = 0, math.nan, None
        self.best_v = self.best[-1] if self.best else math.inf


class StagnationDetector(_Stateful):
    """Late stagnation and slow progress of the monitored metric (per eval).

    Stagnant: over the last ``stag_window_evals`` evals the best-so-far (3-eval median)
    improved by less than ``stag_min_gain`` of the level, and either the Mann–Kendall test
    finds no significant decrease (p > ``stag_alpha``) or the Theil–Sen slope projects less
    than ``stag_proj_gain`` relative gain over the remaining budget (steps). Slow progress:
    significantly improving, but the projected total gain by the end of the budget is below
    ``slow_min_total_gain`` of the starting level (too-small LR).
    """

    def __init__(self, cfg: AnalysisConfig, metric: str, mode: str) -> None:
        self.cfg = cfg
        self.metric = metric
        self.mode = mode
        self.series = EvalSeries()
        self.last_improve_step: int | None = None
        self.ref_best = math.inf
        self.active = False
        self.open_best = math.inf
        self.slow_active = False
        self.slow_off = 0
        self.regime_step: int | None = None  # first eval after the LR last rose by > 1.5x
        self.regime_lr: float | None = None  # LR at the previous eval

    def update(self, step: int, value: float, ctx: dict[str, Any]) -> list[Signal]:
        if not math.isfinite(value):
            return []
        cfg = self.cfg
        y = value if self.mode == "min" else -value
        ser = self.series
        ser.add(step, y)
        lr = ctx.get("lr")
        if isinstance(lr, float) and math.isfinite(lr) and lr > 0:
            if self.regime_lr is not None and lr > 1.5 * self.regime_lr:
                self.regime_step = int(step)  # a raise (or a warmup): a new progress regime
            self.regime_lr = lr
        v3 = stats.median(ser.v[-3:])
        if v3 < self.ref_best - cfg.stag_min_gain * abs(self.ref_best) or not math.isfinite(
            self.ref_best
        ):
            self.ref_best = v3
            self.last_improve_step = int(step)
        w = cfg.stag_window_evals
        if len(ser.v) < w + 1 or ctx.get("in_warmup"):
            return []
        we = ctx.get("warmup_end_step")
        if we is not None and ser.s[-(w // 2)] < we:  # at least half the window post-warmup
            return []
        sw = np.asarray(ser.s[-w:], float)
        yw = np.asarray(ser.v[-w:])
        level = max(abs(stats.median(yw)), 1e-12)
        tau, p_dec, _ = stats.mann_kendall(yw)
        slope, _, _ = stats.theil_sen(sw, yw, 0.90)
        total = cfg.total_steps
        # remaining budget (steps); without a declared budget assume the run doubles
        remaining = max(total - step, 0) if total else max(step - ser.s[0], 1)
        proj_gain = max(0.0, -slope) * remaining / level
        win_gain = (ser.best[-w - 1] - ser.best[-1]) / level
        noise = stats.diff_sigma(yw) / level
        stagnant = win_gain < cfg.stag_min_gain and (
            p_dec > cfg.stag_alpha or proj_gain < cfg.stag_proj_gain
        )
        out: list[Signal] = []
        flat_since = self.last_improve_step if self.last_improve_step is not None else ser.s[0]
        sign = 1.0 if self.mode == "min" else -1.0
        ev = {
            "window_evals": w,
            "window_steps": int(sw[-1] - sw[0]),
            "kendall_tau": tau,
            "mk_p_decrease": p_dec,
            "theil_sen_slope_per_step": sign * slope,
            "rel_slope_per_1k_steps": -slope * 1000 / level,
            "projected_rel_gain_remaining": proj_gain,
            "remaining_steps": int(remaining),
            "window_rel_gain": win_gain,
            "rel_noise": noise,
            "best_value": sign * ser.best_v,
            "start_value": sign * ser.first_v,
            "flat_since_step": int(flat_since),
            "flat_for_steps": int(step - flat_since),
        }
        if self.active:
            if v3 < self.open_best - max(2 * cfg.stag_min_gain * level, 2 * noise * level):
                self.active = False
                out.append(
                    _sig(
                        "close",
                        "stagnation",
                        self.metric,
                        step,
                        step,
                        "warning",
                        1.0,
                        ev,
                        f"{self.metric} improving again at step {step}",
                    )
                )
            else:  # still flat: refresh duration and rate (coalesced to one event per feed)
                frac = (step - flat_since) / total if total else 0.0
                out.append(
                    _sig(
                        "update",
                        "stagnation",
                        self.metric,
                        step,
                        flat_since,
                        "high" if frac > 0.3 else "warning",
                        0.5,
                        ev,
                        f"{self.metric} flat for {step - flat_since} steps (MK p="
                        f"{p_dec:.2f}, {-slope * 1000 / level:+.2%} per 1k steps, "
                        f"projected {proj_gain:.2%} over the remaining {remaining})",
                    )
                )
        elif stagnant:
            self.active, self.open_best = True, ser.best_v
            frac = (step - flat_since) / total if total else 0.0
            sev = "high" if frac > 0.3 else "warning"
            if ctx.get("lr_constant_since") is not None:
                ev["lr_constant_since_step"] = ctx["lr_constant_since"]
                ev["schedule_hint"] = (
                    "lr unchanged while flat: an lr decay/milestone is due (milestone too late)"
                )
            msg = (
                f"{self.metric} flat for {step - flat_since} steps "
                f"(gain {win_gain:.2%} over {w} evals, MK p={p_dec:.2f}, projected "
                f"{proj_gain:.2%} over the remaining {remaining} steps)"
            )
            conf = 0.5 + 0.5 * min(1.0, p_dec / 0.5) if p_dec > cfg.stag_alpha else 0.6
            out.append(
                _sig("open", "stagnation", self.metric, step, flat_since, sev, conf, ev, msg)
            )
            if self.slow_active:
                self.slow_active = False
                out.append(
                    _sig(
                        "close",
                        "slow_progress",
                        self.metric,
                        step,
                        step,
                        "warning",
                        1.0,
                        {},
                        "superseded by stagnation",
                    )
                )
        out.extend(self._slow(step, v3, slope, remaining, p_dec, ev))
        return out

    def _steadiness(self, remaining: int) -> tuple[float, float]:
        """``stats.rate_steadiness`` over the evals of the current LR regime."""
        return stats.rate_steadiness(self.series.s, self.series.v, self.regime_step,
                                     self.cfg.stag_window_evals, remaining)

    def _slow(
        self, step: int, v3: float, slope: float, remaining: int, p_dec: float, ev: dict[str, Any]
    ) -> list[Signal]:
        cfg, ser = self.cfg, self.series
        total = cfg.total_steps
        if not total or self.active or ser.first_step is None:
            return []
        start = ser.first_v
        ref = max(abs(start), 1e-12)
        proj_end = v3 + min(slope, 0.0) * remaining
        gain = (start - proj_end) / ref
        judged = step >= cfg.slow_min_fraction * total and p_dec <= cfg.stag_alpha
        ratio, log_gain = self._steadiness(remaining) if judged else (math.nan, math.nan)
        # steady: still falling at about its earlier rate (much faster means it is recovering
        # from something else, e.g. a too-large LR now decaying)
        steady = (cfg.slow_steady_ratio <= ratio <= cfg.slow_steady_max_ratio
                  and log_gain >= cfg.slow_steady_log_gain)
        slow = judged and (gain < cfg.slow_min_total_gain or steady)
        if slow and not self.slow_active:
            self.slow_active, self.slow_off = True, 0
            e = dict(ev, projected_total_rel_gain=gain, start_value=start,
                     steady_rate_ratio=ratio, projected_log_gain_remaining=log_gain)
            return [
                _sig(
                    "open",
                    "slow_progress",
                    self.metric,
                    step,
                    int(ser.first_step),
                    "warning",
                    1 - p_dec,
                    e,
                    f"{self.metric} improving too slowly: projected {gain:.1%} total gain "
                    f"by step {total} (lr likely too small)",
                )
            ]
        if self.slow_active and not slow:
            self.slow_off += 1
            if self.slow_off >= 2:
                self.slow_active = False
                return [
                    _sig(
                        "close",
                        "slow_progress",
                        self.metric,
                        step,
                        step,
                        "warning",
                        1.0,
                        {},
                        f"{self.metric} progress rate recovered",
                    )
                ]
        elif slow:
            # still too slow: refresh the evidence, so a change that did not help can be
            # followed by another (the policy waits a detection window between them)
            self.slow_off = 0
            e = dict(ev, projected_total_rel_gain=gain, start_value=start,
                     steady_rate_ratio=ratio, projected_log_gain_remaining=log_gain)
            return [
                _sig(
                    "update",
                    "slow_progress",
                    self.metric,
                    step,
                    int(ser.first_step),
                    "warning",
                    1 - p_dec,
                    e,
                    f"{self.metric} still improving too slowly: projected {gain:.1%} total "
                    f"gain by step {total} (lr likely too small)",
                )
            ]
        return []


class OscillationDetector(_Stateful):
    """Validation oscillation (per eval): detrended (Savitzky–Golay quadratic) residual RMS
    of the last ``osc_window_evals`` evals at least ``osc_min_amp`` of the level, together
    with alternation (sign-change rate of differences >= 0.5, negative lag-1 autocorrelation
    of differences, or high-frequency periodogram share). ``evidence.cause``: "lr_too_large"
    when the train loss averaged per eval interval bounces comparably, else "eval_noise".
    """

    def __init__(self, cfg: AnalysisConfig, metric: str, mode: str) -> None:
        self.cfg = cfg
        self.metric = metric
        self.mode = mode
        self.series = EvalSeries()
        self.on = 0
        self.off = 0
        self.active = False
        self.onset: int | None = None

    def update(self, step: int, value: float, ctx: dict[str, Any]) -> list[Signal]:
        if not math.isfinite(value):
            return []
        cfg = self.cfg
        self.series.add(step, value if self.mode == "min" else -value)
        v = self.series.v[-cfg.osc_window_evals :]
        if len(v) < cfg.osc_min_evals:
            return []
        y = _rel_scale(np.asarray(v))
        amp = stats.curvature_sigma(y)
        alt = stats.alternation_stats(y)
        slope, _, _ = stats.theil_sen(np.arange(y.size, dtype=float), y, 0.90)
        drift = abs(slope) * (y.size - 1)  # net trend over the window (relative units)
        alt["drift_over_jitter"] = drift / amp if amp > 0 else math.inf
        bouncy = alt["sign_change_rate"] >= 0.5 and (
            alt["diff_lag1_autocorr"] <= -0.25 or alt["hf_power_share"] >= 0.5
        )
        flagged = amp >= cfg.osc_min_amp and bouncy and drift <= cfg.osc_max_drift_ratio * amp
        out: list[Signal] = []
        if self.active:  # hysteresis: stays open while the jitter stays near the bar
            keep = amp >= cfg.osc_close_ratio * cfg.osc_min_amp
            self.off = 0 if keep else self.off + 1
        elif flagged:
            self.on += 1
            self.off = 0
            if self.onset is None:
                self.onset = self.series.s[-len(v)]
        else:
            self.off += 1
            self.on = 0
            self.onset = None
        if not self.active and self.on >= cfg.osc_open_evals:
            tb = ctx.get("train_blocks") or []
            amp_t = math.nan
            alt_t: dict[str, float] = {}
            if len(tb) >= cfg.osc_min_evals:
                t = np.asarray(tb[-len(v) :], float)
                t = t[np.isfinite(t)]
                if t.size >= 5:
                    amp_t = stats.curvature_sigma(_rel_scale(t))
                    alt_t = stats.alternation_stats(t)
            lr_like = math.isfinite(amp_t) and (
                amp_t >= 0.5 * amp
                or (amp_t >= 0.5 * cfg.osc_min_amp and alt_t.get("diff_lag1_autocorr", 0) <= -0.25)
            )
            cause = "lr_too_large" if lr_like else "eval_noise"
            ev = {
                "cause": cause,
                "rel_jitter": amp,
                "train_rel_jitter": amp_t,
                "window_evals": len(v),
                "window_start_step": self.series.s[-len(v)],
                **alt,
            }
            self.active = True
            why = (
                "train loss bounces too: lr too large"
                if cause == "lr_too_large"
                else "train loss is smooth: likely evaluation noise (small val set)"
            )
            out.append(
                _sig(
                    "open",
                    "oscillation",
                    self.metric,
                    step,
                    self.onset if self.onset is not None else step,
                    "warning" if cause == "eval_noise" else "high",
                    min(0.99, 0.5 + amp / (4 * cfg.osc_min_amp)),
                    ev,
                    f"{self.metric} oscillating ({amp:.1%} relative jitter over "
                    f"{len(v)} evals); {why}",
                )
            )
        elif self.active and self.off >= cfg.osc_close_evals:
            self.active = False
            self.onset = None
            self.on = 0
            out.append(
                _sig(
                    "close",
                    "oscillation",
                    self.metric,
                    step,
                    step,
                    "warning",
                    1.0,
                    {"rel_jitter": amp},
                    f"{self.metric} settled at step {step}",
                )
            )
        return out


def _rel_scale(y: np.ndarray) -> np.ndarray:
    """Relative (scale-free) view of a window: log|y| when all values share a sign and are
    non-zero, else y divided by its median magnitude. Differences read as relative changes."""
    y = np.asarray(y, dtype=float)
    if y.size and (np.all(y > 0) or np.all(y < 0)):
        out = np.log(np.abs(y))
    else:
        out = y / max(stats.array_median(np.abs(y)), 1e-12)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1e12, neginf=-1e12), -1e12, 1e12)
