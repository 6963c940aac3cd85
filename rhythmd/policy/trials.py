"""Guarded changes: judge an applied LR change against what would have happened without it.

Every LR-changing action is an experiment. Once an effect window has passed, the monitored
metric after the change is compared with the projection of its trajectory before the change
(a Theil–Sen line over the pre-change window, on the series' relative view) and that
trajectory's noise. A change is *worse* when the metric sits, by its median over the effect
window, more than ``z`` noise sigmas (and at least ``min_rel``) above the projection; the
policy then reverts it. Pure: arrays in, a verdict out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rhythmd.analysis import stats

TRIAL_ACTIONS = ("reduce_lr", "increase_lr", "warmup", "set_schedule")


@dataclass
class TrialVerdict:
    """The outcome of one change: ``worse`` (revert it), ``kept`` or ``undecided``."""

    verdict: str
    change_step: int
    window_steps: int
    observed_minus_projected: float  # median excess over the projection (relative units)
    noise: float  # noise sigma of the pre-change trajectory (relative units)
    pre_points: int
    post_points: int

    def describe(self) -> str:
        return (f"{self.observed_minus_projected:+.1%} vs the projection of its pre-change "
                f"trend over {self.window_steps} steps (noise {self.noise:.1%})")


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
    slope, _, _ = stats.theil_sen(s[pre], y[pre], 0.90)
    slope = min(slope, 0.0)  # a rising pre-change trend is not projected to keep rising
    anchor = stats.median((y[pre] - slope * s[pre]).tolist())
    resid = y[pre] - (anchor + slope * s[pre])
    noise = max(stats.robust_sigma(resid), stats.diff_sigma(y[pre].tolist()))
    excess = stats.median((y[post] - (anchor + slope * s[post])).tolist())
    bar = max(z * noise, min_rel)
    verdict = "worse" if excess > bar else ("kept" if excess <= 0.5 * bar else "undecided")
    return TrialVerdict(verdict, int(change_step), int(window_steps), float(excess),
                        float(noise) if math.isfinite(noise) else math.nan,
                        int(pre.sum()), int(post.sum()))
