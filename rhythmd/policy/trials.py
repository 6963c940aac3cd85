"""Guarded changes: judge an applied LR change against what would have happened without it.

Every LR-changing action is an experiment. Once an effect window has passed, the monitored
metric over that window (its median, on the series' relative view) is compared with the pre-change
window (as long) and its noise. A change is *worse* when the metric ends more than ``z`` noise
sigmas (and at least ``min_rel``) above the level it had reached when the change came, and
*better* when it ends that far below the projection of the steepest trend the pre-change
window allows (a Theil–Sen line against log(step), its 90 % bound); the policy reverts a
worse change and cuts again only after one that was better. Conservative both ways: a
decelerating curve makes any extrapolated trend too optimistic. Pure: arrays in, a verdict out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rhythmd.analysis import stats

TRIAL_ACTIONS = ("reduce_lr", "increase_lr", "warmup", "set_schedule")


@dataclass
class TrialVerdict:
    """The outcome of one change: ``worse`` (revert it), ``better`` (it helped beyond the
    noise), or ``neutral`` (no measurable effect either way)."""

    verdict: str
    change_step: int
    window_steps: int
    observed_minus_projected: float  # median excess over the pre-change level (relative)
    noise: float  # noise sigma of the pre-change trajectory (relative units)
    pre_points: int
    post_points: int

    def describe(self) -> str:
        return (f"{self.observed_minus_projected:+.1%} vs its level when the change came, over "
                f"the {self.window_steps} steps after it (noise {self.noise:.1%})")


def judge(steps: list[int] | np.ndarray, values: list[float] | np.ndarray, change_step: int,
          window_steps: int, *, z: float = 2.0, min_rel: float = 0.02,
          min_points: int = 4) -> TrialVerdict | None:
    """Judge the change applied at ``change_step`` from the monitored series ``(steps,
    values)``, oriented so lower is better. The pre-change window is the ``window_steps``
    before the change, the effect window the ``window_steps`` after it. None until the effect
    window is complete, or when either window has fewer than ``min_points`` points."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    if s.size == 0 or s[-1] < change_step + window_steps:
        return None
    pre = (s > change_step - window_steps) & (s <= change_step)
    post = (s > change_step) & (s <= change_step + window_steps)
    if pre.sum() < min_points or post.sum() < min_points:
        return None
    y = np.log(v) if bool(np.all(v > 0)) else v / max(stats.array_median(np.abs(v)), 1e-300)
    # trend against log(step): training curves decelerate (a power law is a line there), so a
    # change that did nothing is not judged worse than a straight extrapolation of its past
    x = np.log(np.maximum(s, 1.0))
    slope, lo, _ = stats.theil_sen(x[pre], y[pre], 0.90)

    def excess_at(k: float) -> tuple[float, float]:
        k = min(k, 0.0) if math.isfinite(k) else 0.0  # a rising trend is not projected on
        anchor = stats.median((y[pre] - k * x[pre]).tolist())
        resid = y[pre] - (anchor + k * x[pre])
        return (stats.median((y[post] - (anchor + k * x[post])).tolist()),
                stats.robust_sigma(resid))

    _, spread = excess_at(slope)
    noise = max(spread, stats.diff_sigma(y[pre].tolist()))
    bar = max(z * noise, min_rel)
    # conservative both ways: worse only against the level the metric had reached when the
    # change came (the last third of the pre-change window: a decelerating curve makes any
    # extrapolated trend too optimistic), better only against the steepest trend the
    # pre-change window allows (the 90 % bound of the slope)
    level = stats.median(y[pre][-max(2, int(pre.sum()) // 3):].tolist())
    excess = stats.median((y[post] - level).tolist())
    worse = excess > bar
    better = excess_at(lo)[0] < -bar
    verdict = "worse" if worse else ("better" if better else "neutral")
    return TrialVerdict(verdict, int(change_step), int(window_steps), float(excess),
                        float(noise) if math.isfinite(noise) else math.nan,
                        int(pre.sum()), int(post.sum()))
