"""The monitored evaluation series: oriented (lower is better), in step blocks, with its view.

Evaluations closer together than a block (1 % of the budget, or 2 % of the elapsed steps
without one) are merged into their median, so a curve evaluated every step and the same curve
evaluated every 100 steps give the same points: dense evaluations are correlated samples, not
independent evidence. Sparser evaluations are points of their own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import stats
from ..types import AnalysisConfig
from .base import Stateful

BLOCK_MAX_EVALS = 1024  # a block closes after this many evaluations whatever its span


class Orientation(Stateful):
    """Maps a metric to "lower is better" in a way that keeps its invariances.

    A loss is kept as is. A score to maximise with a known bound (values in [0, 1], or in
    [0, 100]) becomes its complement ``bound - value`` (accuracy becomes error rate, so both
    get the same verdicts); an unbounded score is negated. ``to_metric`` maps back.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "min" | "max"
        self.bound: float | None = None

    def orient(self, value: float) -> float:
        if self.mode == "min":
            return value
        if self.bound is None and math.isfinite(value):
            self.bound = 1.0 if 0.0 <= value <= 1.0 else (100.0 if 1.0 < value <= 100.0 else 0.0)
        if self.bound:
            return max(self.bound - value, self.bound * 1e-6)
        return -value

    def to_metric(self, y: float) -> float:
        if self.mode == "min":
            return y
        return self.bound - y if self.bound else -y


class EvalSeries(Stateful):
    """Bounded window of oriented block values of the monitored metric (lower is better)."""

    def __init__(self, cap: int = 64, total_steps: int | None = None) -> None:
        self.cap = cap
        self.total_steps = total_steps
        self.s: list[int] = []  # step of each block's last evaluation
        self.v: list[float] = []  # block medians (oriented)
        self.best: list[float] = []  # best-so-far of the 3-point median after each point
        self.n = 0
        self.first_v = math.nan
        self.first3 = math.nan  # median of the first three points
        self.origin3 = math.nan  # the same for the run's very first points (kept on rollback)
        self.first_step: int | None = None
        self.best_v = math.inf
        self.positive = True  # every value so far > 0: relative (log) view
        self.n_total = 0  # points ever appended (not rewound by a rollback)
        self.blk_s: list[int] = []  # the open block
        self.blk_v: list[float] = []
        self.gap: int | None = None  # steps between the last two evaluations

    def block_steps(self, step: int) -> int:
        """Span of a block starting at ``step`` (steps)."""
        if self.total_steps:
            return max(1, self.total_steps // 100)
        return max(1, step // 50)

    def add(self, step: int, v: float) -> bool:
        """Add one evaluation; True when it closed a block (a point was appended). A block
        closes at the evaluation after which the next one, at the current spacing, would fall
        outside it, so regular evaluations close blocks without delay."""
        blk_s, st = self.blk_s, int(step)
        if blk_s:
            self.gap = st - blk_s[-1]
        elif self.s:
            self.gap = st - self.s[-1]
        blk_s.append(st)
        self.blk_v.append(float(v))
        if v <= 0:
            self.positive = False
        start = blk_s[0]
        span = self.block_steps(start)
        gap = self.gap if self.gap and self.gap > 0 else span
        if step + gap < start + span and len(self.blk_v) < BLOCK_MAX_EVALS:
            return False
        self._append(self.blk_s[-1], stats.median(self.blk_v))
        self.blk_s, self.blk_v = [], []
        return True

    def _append(self, step: int, v: float) -> None:
        self.s.append(int(step))
        self.v.append(float(v))
        v3 = stats.median(self.v[-3:])
        self.best_v = min(self.best_v, v3)
        self.best.append(self.best_v)
        if self.n == 0:
            self.first_v, self.first_step = float(v), int(step)
        if self.n < 3:
            self.first3 = v3
            if not math.isfinite(self.origin3) or self.n_total < 3:
                self.origin3 = v3
        self.n_total += 1
        self.n += 1
        if len(self.s) > 2 * self.cap:
            c = self.cap
            self.s, self.v, self.best = self.s[-c:], self.v[-c:], self.best[-c:]

    def truncate(self, before_step: int) -> None:
        keep = [i for i, s in enumerate(self.s) if s < before_step]
        self.s = [self.s[i] for i in keep]
        self.v = [self.v[i] for i in keep]
        self.best = [self.best[i] for i in keep]
        self.blk_s, self.blk_v = [], []
        if not self.s:
            self.n, self.first_v, self.first_step = 0, math.nan, None
            self.first3 = math.nan
        self.best_v = self.best[-1] if self.best else math.inf

    def scale(self, window: list[float] | np.ndarray) -> float:
        """What "relative" means for this series: the level (median of ``window``) of a
        positive series, else a shift-free scale: the progress made so far (first three points
        to the best), or four noise sigmas if larger."""
        if self.positive:
            return max(stats.abs_median(window), 1e-300)
        prog = self.first3 - self.best_v if math.isfinite(self.first3) else 0.0
        noise = 4.0 * stats.diff_sigma(self.v[-16:])
        tiny = 1e-12 * max((abs(x) for x in self.v[-16:]), default=1.0)
        return max(prog, noise, tiny, 1e-300)

    def view(self, window: np.ndarray) -> np.ndarray:
        """Relative, scale-free view of a window: log of a positive series (differences are
        relative changes), else the values over :meth:`scale`."""
        y = np.asarray(window, dtype=float)
        vals = y.tolist() if y.ndim == 1 else y.ravel().tolist()
        if self.positive and vals and all(map((0.0).__lt__, vals)):
            out = np.log(y)
            if math.inf not in vals:  # finite logs: the clipping below would not change them
                return out
        else:
            out = y / self.scale(y)
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=1e12, neginf=-1e12), -1e12, 1e12)


class SeriesDetector(Stateful):
    """A detector over the monitored series: its orientation and series are part of its state."""

    def __init__(self, cfg: AnalysisConfig, metric: str, mode: str) -> None:
        self.cfg = cfg
        self.metric = metric
        self.mode = mode  # "min" | "max"
        self.orientation = Orientation(mode)
        self.series = EvalSeries(total_steps=cfg.total_steps)

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d["orientation"] = self.orientation.state_dict()
        d["series"] = self.series.state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        d = dict(d)
        self.orientation.load_state_dict(d.pop("orientation", {}))
        self.series.load_state_dict(d.pop("series", {}))
        super().load_state_dict(d)
