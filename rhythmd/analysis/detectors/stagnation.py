"""Late stagnation and slow progress of the monitored metric (per evaluation block)."""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import stats
from ..types import AnalysisConfig
from .base import Signal, signal
from .series import EvalSeries, SeriesDetector


class StagnationDetector(SeriesDetector):
    """Late stagnation and slow progress of the monitored metric.

    The window is the last ``stag_window_frac`` of the budget (of twice the elapsed steps
    without one), in steps, and at least ``stag_min_evals`` points of the block series, so the
    verdict does not depend on how often the run evaluates. "Relative" is relative to the level
    of a positive metric, and to the progress made so far for a signed one (see
    :class:`EvalSeries`), so a metric scaled by any factor, or a score and its complement, get
    the same verdicts.

    Stagnant: over the window the best-so-far (3-point median) improved by less than
    ``stag_min_gain``, and either the Mann–Kendall test finds no significant decrease
    (p > ``stag_alpha``) or the Theil–Sen slope projects less than ``stag_proj_gain`` over the
    remaining budget. Slow progress: significantly improving, but projected to gain less than
    ``slow_min_total_gain`` of its start by the end of the budget, or still falling at its
    earlier steady rate with a small total log gain (a too-small LR).
    """

    def __init__(self, cfg: AnalysisConfig, metric: str, mode: str) -> None:
        super().__init__(cfg, metric, mode)
        self.last_improve_step: int | None = None
        self.ref_best = math.inf
        self.active = False
        self.open_best = math.inf
        self.slow_active = False
        self.slow_off = 0
        self.regime_step: int | None = None  # first eval after the LR last rose by > 1.5x
        self.regime_lr: float | None = None  # LR at the previous eval
        self.collapsed = False  # the metric fell back to its starting level (a divergence)

    def _window(self, step: int) -> int:
        """Number of points in the window ending at the newest point."""
        cfg, ser = self.cfg, self.series
        span = cfg.stag_window_frac * (cfg.total_steps or 2 * step)
        n_in = _count_at_least(ser.s, step - span)
        return min(max(n_in, cfg.stag_min_evals), len(ser.s) - 1)

    def update(self, step: int, value: float, ctx: dict[str, Any]) -> list[Signal]:
        if not math.isfinite(value):
            return []
        cfg = self.cfg
        ser = self.series
        if not ser.add(step, self.orientation.orient(value)):
            return []
        lr = ctx.get("lr")
        if isinstance(lr, float) and math.isfinite(lr) and lr > 0:
            if self.regime_lr is not None and lr > 1.5 * self.regime_lr:
                self.regime_step = int(step)  # a raise (or a warmup): a new progress regime
            self.regime_lr = lr
        v3 = stats.median(ser.v[-3:])
        collapse = [] if ctx.get("has_train_loss") else self._collapse(step, v3)
        if collapse:
            return collapse
        tol = cfg.stag_min_gain * ser.scale(ser.v[-3:])
        if not math.isfinite(self.ref_best) or v3 < self.ref_best - tol:
            self.ref_best = v3
            self.last_improve_step = int(step)
        if len(ser.v) < cfg.stag_min_evals + 1 or ctx.get("in_warmup"):
            return []
        w = self._window(step)
        we = ctx.get("warmup_end_step")
        if we is not None and ser.s[-max(w // 2, 1)] < we:  # at least half the window after it
            return []
        win = _Window(ser, w, step, cfg.total_steps)
        level, remaining = win.level, win.remaining
        win_gain = (ser.best[-w - 1] - ser.best[-1]) / level
        out: list[Signal] = []
        flat_since = self.last_improve_step if self.last_improve_step is not None else ser.s[0]
        total = cfg.total_steps
        if self.active:
            ev = self._evidence(win, win_gain, flat_since, ctx)
            if v3 < self.open_best - max(2 * cfg.stag_min_gain * level, 2 * win.noise * level):
                self.active = False
                out.append(signal("close", "stagnation", self.metric, step, step, "warning", 1.0,
                                  ev, f"{self.metric} improving again at step {step}"))
            else:  # still flat: refresh duration and rate (coalesced to one event per feed)
                frac = (step - flat_since) / total if total else 0.0
                out.append(signal(
                    "update", "stagnation", self.metric, step, flat_since,
                    "high" if frac > 0.3 else "warning", 0.5, ev,
                    f"{self.metric} flat for {step - flat_since} steps (MK p={win.p_dec:.2f}, "
                    f"{-win.slope * 1000 / level:+.2%} per 1k steps, projected "
                    f"{win.proj_gain:.2%} over the remaining {remaining})"))
        elif win_gain < cfg.stag_min_gain and (
            win.p_dec > cfg.stag_alpha or win.proj_gain < cfg.stag_proj_gain
        ):  # stagnant
            ev = self._evidence(win, win_gain, flat_since, ctx)
            p_dec, proj_gain = win.p_dec, win.proj_gain
            self.active, self.open_best = True, ser.best_v
            frac = (step - flat_since) / total if total else 0.0
            sev = "high" if frac > 0.3 else "warning"
            if ctx.get("lr_constant_since") is not None:
                ev["lr_constant_since_step"] = ctx["lr_constant_since"]
                if ev["lr_decay_in_window"] < 0.1:
                    ev["schedule_hint"] = ("lr unchanged while flat: an lr decay/milestone is "
                                           "due (milestone too late)")
            msg = (f"{self.metric} flat for {step - flat_since} steps (gain {win_gain:.2%} over "
                   f"{w} points, MK p={p_dec:.2f}, projected {proj_gain:.2%} over the remaining "
                   f"{remaining} steps)")
            conf = 0.5 + 0.5 * min(1.0, p_dec / 0.5) if p_dec > cfg.stag_alpha else 0.6
            out.append(signal("open", "stagnation", self.metric, step, flat_since, sev, conf,
                              ev, msg))
            if self.slow_active:
                self.slow_active = False
                out.append(signal("close", "slow_progress", self.metric, step, step, "warning",
                                  1.0, {}, "superseded by stagnation"))
        out.extend(self._slow(step, v3, win,
                              lambda: self._evidence(win, win_gain, flat_since, ctx)))
        return out

    def _evidence(self, win: _Window, win_gain: float, flat_since: int,
                  ctx: dict[str, Any]) -> dict[str, Any]:
        """The evidence of a stagnation signal (built once per evaluation, when one is sent)."""
        if win.ev is not None:
            return win.ev
        ser = self.series
        step, level = win.step, win.level
        # from the run's own start: after a rollback to the initial weights, a model stuck
        # at the untrained level has gained nothing, whatever its re-warm did first
        origin = ser.origin3 if math.isfinite(ser.origin3) else ser.first3
        start = ctx.get("train_start_loss")  # the train loss's robust first level: a better
        if ctx.get("monitors_train") and isinstance(start, float) and math.isfinite(start):
            origin = start  # anchor than blocks that may already hold a first blow-up
        start_scale = ser.scale([origin]) if ser.positive else level
        gain_from_start = (origin - ser.best_v) / start_scale if start_scale > 0 else 0.0
        to_metric = self.orientation.to_metric
        sign = 1.0 if self.mode == "min" else -1.0
        s0, s1 = win.ends
        win.ev = {
            "window_evals": win.w,
            "window_steps": int(s1 - s0),
            "kendall_tau": win.mk[0],
            "mk_p_decrease": win.p_dec,
            "theil_sen_slope_per_step": sign * win.slope,
            "rel_slope_per_1k_steps": -win.slope * 1000 / level,
            "projected_rel_gain_remaining": win.proj_gain,
            "remaining_steps": int(win.remaining),
            "window_rel_gain": win_gain,
            "rel_noise": win.noise,
            "rel_gain_from_start": gain_from_start,
            "best_value": to_metric(ser.best_v),
            "start_value": to_metric(ser.first_v),
            "mode": self.mode,
            "flat_since_step": int(flat_since),
            "flat_for_steps": int(step - flat_since),
            "lr_decay_in_window": _lr_decay(ctx, int(s0)),
        }
        return win.ev

    def _collapse(self, step: int, v3: float) -> list[Signal]:
        """A metric that had learned (its best at least ``collapse_min_progress`` below its
        start, relative) and is back within 10 % of that progress from its start for two
        points: a divergence seen on the evaluation metric, for runs that send no train loss
        (e.g. accuracy falling to chance in a run that logs only accuracy; with a train loss
        the divergence detector watches the run itself)."""
        ser, cfg = self.series, self.cfg
        if not math.isfinite(ser.first3) or ser.n < 4:
            return []
        progress = ser.first3 - ser.best_v
        rel = progress / ser.scale([ser.first3]) if ser.positive else \
            progress / ser.scale(ser.v)
        back = ser.first3 - 0.1 * progress
        lost = ser.v[-1] >= back and ser.v[-2] >= back
        if not self.collapsed and rel >= cfg.collapse_min_progress and lost:
            self.collapsed = True
            self.active = False
            to_metric = self.orientation.to_metric
            ev = {"cause": "collapse", "test": "collapse", "recovered": False,
                  "start_value": to_metric(ser.first3), "best_value": to_metric(ser.best_v),
                  "value": to_metric(ser.v[-1]), "rel_progress_lost": 1.0, "near_warmup": False}
            return [signal("open", "divergence", self.metric, step, ser.s[-2], "high", 0.9, ev,
                           f"{self.metric} collapsed back to its starting level "
                           f"({to_metric(ser.v[-1]):.4g}; best {to_metric(ser.best_v):.4g}) at "
                           f"step {step}")]
        if self.collapsed and v3 < ser.first3 - 0.5 * progress:
            self.collapsed = False
            return [signal("close", "divergence", self.metric, step, step, "high", 1.0,
                           {"recovered_at_step": int(step), "recovered": True},
                           f"{self.metric} recovered from its collapse at step {step}")]
        return []

    def _steadiness(self, remaining: int) -> tuple[float, float]:
        """``stats.rate_steadiness`` over the points of the current LR regime."""
        return stats.rate_steadiness(self.series.s, self.series.v, self.regime_step,
                                     self.cfg.stag_window_evals, remaining)

    def _slow(self, step: int, v3: float, win: _Window,
              evidence: Callable[[], dict[str, Any]]) -> list[Signal]:
        cfg, ser = self.cfg, self.series
        total = cfg.total_steps
        if not total or self.active or ser.first_step is None:
            return []
        judged = step >= cfg.slow_min_fraction * total and win.p_dec <= cfg.stag_alpha
        if not judged:  # not slow: nothing below reads the statistics
            return self._slow_off(step)
        p_dec, remaining = win.p_dec, win.remaining
        start = ser.first_v
        ref = ser.scale([start]) if ser.positive else ser.scale(ser.v)
        proj_end = v3 + min(win.slope, 0.0) * remaining
        gain = (start - proj_end) / ref
        ratio, log_gain = self._steadiness(remaining)
        done = math.log(start / v3) if ser.positive and v3 > 0 and start > 0 else math.inf
        # (a loss's rule: a score's complement has no floor to fall towards at a steady log
        # rate; an accuracy climbing steadily under its schedule is not a too-small LR)
        steady = (not self.orientation.bound
                  and cfg.slow_steady_ratio <= ratio <= cfg.slow_steady_max_ratio
                  and log_gain >= cfg.slow_steady_log_gain
                  and done + log_gain <= cfg.slow_max_total_log_gain)
        if not (gain < cfg.slow_min_total_gain or steady):
            return self._slow_off(step)
        e = dict(evidence(), projected_total_rel_gain=gain, steady_rate_ratio=ratio,
                 projected_log_gain_remaining=log_gain)
        if not self.slow_active:
            self.slow_active, self.slow_off = True, 0
            return [signal("open", "slow_progress", self.metric, step, int(ser.first_step),
                           "warning", 1 - p_dec, e,
                           f"{self.metric} improving too slowly: projected {gain:.1%} total gain "
                           f"by step {total} (lr likely too small)")]
        # still too slow: refresh the evidence, so a change that did not help can be
        # followed by another (the policy waits a detection window between them)
        self.slow_off = 0
        return [signal("update", "slow_progress", self.metric, step, int(ser.first_step),
                       "warning", 1 - p_dec, e,
                       f"{self.metric} still improving too slowly: projected {gain:.1%} "
                       f"total gain by step {total} (lr likely too small)")]

    def _slow_off(self, step: int) -> list[Signal]:
        """A point that is not too slow: an open slow progress closes at the second in a row."""
        if not self.slow_active:
            return []
        self.slow_off += 1
        if self.slow_off < 2:
            return []
        self.slow_active = False
        return [signal("close", "slow_progress", self.metric, step, step, "warning", 1.0, {},
                       f"{self.metric} progress rate recovered")]


def _count_at_least(steps: list[int], start: float) -> int:
    """How many of ``steps`` are ``>= start``: by bisection when the split it finds holds
    (always for ascending steps), else by counting."""
    i = bisect.bisect_left(steps, start)
    if (i == 0 or max(steps[:i]) < start) and (i == len(steps) or min(steps[i:]) >= start):
        return len(steps) - i
    return sum(map(operator.le, itertools.repeat(start, len(steps)), steps))


class _Window:
    """The window of one evaluation and its statistics, each computed on first use: most
    evaluations read only a few of them, and the evidence only when a signal is sent."""

    __slots__ = ("_mk", "_noise", "_slope", "ev", "level", "remaining", "s", "step", "v", "w")

    def __init__(self, ser: EvalSeries, w: int, step: int, total: int | None) -> None:
        self.w, self.step = w, step
        self.s, self.v = ser.s[-w:], ser.v[-w:]
        self.level = ser.scale(self.v)
        # remaining budget (steps); without a declared budget assume the run doubles
        self.remaining = max(total - step, 0) if total else max(step - ser.s[0], 1)
        self.ev: dict[str, Any] | None = None
        self._mk: tuple[float, float, float] | None = None
        self._slope: float | None = None
        self._noise: float | None = None

    @property
    def ends(self) -> tuple[float, float]:
        """The window's first and last steps, as floats."""
        return float(self.s[0]), float(self.s[-1])

    @property
    def mk(self) -> tuple[float, float, float]:
        """Mann–Kendall (tau, p_decreasing, p_increasing)."""
        if self._mk is None:
            self._mk = stats.mann_kendall(np.asarray(self.v, float))
        return self._mk

    @property
    def p_dec(self) -> float:
        return self.mk[1]

    @property
    def slope(self) -> float:
        """Theil–Sen slope (per step)."""
        if self._slope is None:
            self._slope = stats.theil_sen(np.asarray(self.s, float), np.asarray(self.v, float),
                                          0.90)[0]
        return self._slope

    @property
    def proj_gain(self) -> float:
        return max(0.0, -self.slope) * self.remaining / self.level

    @property
    def noise(self) -> float:
        if self._noise is None:
            self._noise = stats.diff_sigma(self.v) / self.level
        return self._noise


def _lr_decay(ctx: dict[str, Any], since_step: int) -> float:
    """Relative fall of the LR since ``since_step`` (0 when unknown or not falling)."""
    lr_at = ctx.get("lr_at")
    lr = ctx.get("lr")
    if lr_at is None or not isinstance(lr, float) or not math.isfinite(lr):
        return 0.0
    before = lr_at(since_step)
    if before is None or not math.isfinite(before) or before <= 0:
        return 0.0
    return max(0.0, 1.0 - lr / before)
