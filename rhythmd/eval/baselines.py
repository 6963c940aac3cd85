"""Published rules re-implemented as online detectors (for comparison only).

Each baseline sees the stream in step order: ``train(step, loss)`` per optimizer step and
``val(step, value)`` per evaluation (val loss, lower is better). ``flag`` is the first step
at which it fires (None if never).
"""

from __future__ import annotations

import itertools
import math
from collections import deque


class Baseline:
    kind = ""
    name = ""

    def __init__(self, total_steps: int | None = None) -> None:
        self.flag: int | None = None
        self.total_steps = total_steps
        self.count_from = 0  # flags before this step are not recorded (scoring rule)

    def _fire(self, step: int) -> None:
        if self.flag is None and step >= self.count_from:
            self.flag = int(step)

    def train(self, step: int, x: float) -> None:
        """Consume one train loss (per step)."""

    def val(self, step: int, v: float) -> None:
        """Consume one evaluation of the val loss (per eval)."""


class LightningThreshold(Baseline):
    """Non-finite check plus Lightning-style ``divergence_threshold`` = the first loss."""

    kind, name = "divergence", "nonfinite+lightning(first loss)"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.first: float | None = None

    def train(self, step: int, x: float) -> None:
        if not math.isfinite(x):
            self._fire(step)
            return
        if self.first is None:
            self.first = x
        elif x > self.first:
            self._fire(step)


class KillLossSpike(Baseline):
    """llm-foundry KillLossSpike: window 100, outlier = loss >= 2x window mean, fires after
    more than 4 consecutive outliers (checked once the window is full)."""

    kind, name = "divergence", "llm-foundry KillLossSpike"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.win: deque[float] = deque(maxlen=100)
        self.consec = 0

    def train(self, step: int, x: float) -> None:
        if len(self.win) == self.win.maxlen:
            mean = sum(self.win) / len(self.win)
            if not math.isfinite(x) or x >= 2.0 * mean:
                self.consec += 1
                if self.consec > 4:
                    self._fire(step)
            else:
                self.consec = 0
        if math.isfinite(x):
            self.win.append(x)


class DeepCheckerDivergence(Baseline):
    """TheDeepChecker: loss / min-loss-so-far grows >= 2x at each of the last 5 points."""

    kind, name = "divergence", "TheDeepChecker divergence"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.min_loss = math.inf
        self.ratios: deque[float] = deque(maxlen=6)

    def train(self, step: int, x: float) -> None:
        if not math.isfinite(x):
            return
        if math.isfinite(self.min_loss) and self.min_loss > 0:
            self.ratios.append(x / self.min_loss)
            r = list(self.ratios)
            if len(r) == 6 and all(b >= 2.0 * a for a, b in itertools.pairwise(r)):
                self._fire(step)
        self.min_loss = min(self.min_loss, x)


class RobustFloor(Baseline):
    """The floor rule of the issue: median of the last 5 losses > 2x first loss, or non-finite."""

    kind, name = "divergence", "floor: median5 > 2x first or nonfinite"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.first: float | None = None
        self.last: deque[float] = deque(maxlen=5)

    def train(self, step: int, x: float) -> None:
        if not math.isfinite(x):
            self._fire(step)
            return
        if self.first is None:
            self.first = x
        self.last.append(x)
        s = sorted(self.last)
        if len(s) == 5 and s[2] > 2.0 * self.first:
            self._fire(step)


class ReduceLROnPlateauRule(Baseline):
    """torch ReduceLROnPlateau defaults: mode min, threshold 1e-4 (rel), patience 10 evals."""

    kind, name = "stagnation", "torch ReduceLROnPlateau(patience=10)"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.best = math.inf
        self.bad = 0

    def val(self, step: int, v: float) -> None:
        if math.isfinite(v) and v < self.best * (1 - 1e-4):
            self.best, self.bad = v, 0
        else:
            self.bad += 1
        if self.bad > 10:
            self._fire(step)


class DeepCheckerStagnation(Baseline):
    """TheDeepChecker: every relative decrease over the last 5 averaged losses is < 5 %
    (averaged = running mean of the last 5 val losses)."""

    kind, name = "stagnation", "TheDeepChecker stagnation"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.raw: deque[float] = deque(maxlen=5)
        self.avg: deque[float] = deque(maxlen=6)

    def val(self, step: int, v: float) -> None:
        if not math.isfinite(v):
            return
        self.raw.append(v)
        if len(self.raw) < 5:
            return
        self.avg.append(sum(self.raw) / 5)
        a = list(self.avg)
        if len(a) == 6 and all((p - q) / abs(p) < 0.05 for p, q in itertools.pairwise(a) if p != 0):
            self._fire(step)


class AutoTrainerUnstable(Baseline):
    """AutoTrainer "unstable": local max/min pairs whose gap is >= 3 %, counted against
    0.2 x evaluations so far, judged after 30 % of the run."""

    kind, name = "oscillation", "AutoTrainer unstable"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.vals: list[float] = []

    def val(self, step: int, v: float) -> None:
        if not math.isfinite(v):
            return
        self.vals.append(v)
        if self.total_steps and step < 0.3 * self.total_steps:
            return
        x = self.vals
        turns = [x[i] for i in range(1, len(x) - 1) if (x[i] - x[i - 1]) * (x[i + 1] - x[i]) < 0]
        # consecutive turning points taken as non-overlapping (max, min) pairs; the gap is
        # relative to the smaller of the two
        pairs = sum(
            1
            for a, b in zip(turns[0::2], turns[1::2], strict=False)
            if abs(a - b) >= 0.03 * max(min(abs(a), abs(b)), 1e-12)
        )
        if pairs >= 0.2 * len(x):
            self._fire(step)


class Rose3of4(Baseline):
    """Val loss rose on 3 of the last 4 evaluations."""

    kind, name = "oscillation", "val rose 3 of last 4"

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        self.last: deque[float] = deque(maxlen=5)

    def val(self, step: int, v: float) -> None:
        if not math.isfinite(v):
            return
        self.last.append(v)
        x = list(self.last)
        if len(x) == 5 and sum(b > a for a, b in itertools.pairwise(x)) >= 3:
            self._fire(step)


ALL_BASELINES: tuple[type[Baseline], ...] = (
    LightningThreshold,
    KillLossSpike,
    DeepCheckerDivergence,
    RobustFloor,
    ReduceLROnPlateauRule,
    DeepCheckerStagnation,
    AutoTrainerUnstable,
    Rose3of4,
)
