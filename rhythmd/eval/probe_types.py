"""What a probe is: its stream, the verdict a careful engineer expects, and the action sets
the verdicts use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Series = dict[str, tuple[np.ndarray, np.ndarray]]
NO_ACTION = "no_action"
DIVERGENCE_FIXES = frozenset({"rollback", "warmup", "reduce_lr"})
ACTING = frozenset({"reduce_lr", "increase_lr", "warmup", "set_schedule", "rollback", "stop"})
"""The actions the policy issues; each changes the run (its LR, its weights or its end), so on a
no-action probe any issued recommendation counts as acting on it."""


# ------------------------------------------------------------------------------ types
@dataclass(frozen=True)
class Catch:
    """A true problem: an acceptable diagnosis kind detected, and an acceptable action
    issued in answer to a diagnosis of an acceptable kind, at steps in
    ``[from_step, by_step]`` (optimizer steps)."""

    kinds: frozenset[str]
    actions: frozenset[str]
    from_step: int  # the problem exists from here (onset); earlier flags are not a catch
    by_step: int  # deadline

    def describe(self) -> str:
        return (f"{'|'.join(sorted(self.kinds))} -> {'|'.join(sorted(self.actions))} "
                f"in [{self.from_step}, {self.by_step}]")


@dataclass
class Probe:
    """One synthetic stream with its expected verdict.

    ``series``: metric name -> (steps int64 increasing, values float64), as a client sends
    them. ``run_config``: what the client declares (``total_steps``; ``metrics``: role per
    metric name, "min" | "max" | "objective" | "ignore", only where the probe declares them).
    ``expect``: ``"no_action"`` or a :class:`Catch`. ``group``/``variant``: probes of one group
    share the underlying curve (the variants change the evaluation cadence, the scale or the
    names), so their verdicts should agree.
    """

    name: str
    family: str
    description: str
    series: Series
    run_config: dict[str, Any]
    expect: str | Catch
    group: str
    variant: str = "base"
    seed: int = 0

    @property
    def must_catch(self) -> bool:
        return isinstance(self.expect, Catch)

    def expectation(self) -> str:
        """One line: "no action" or the acceptable kinds, actions and step window."""
        return self.expect.describe() if isinstance(self.expect, Catch) else "no action"

    @property
    def last_step(self) -> int:
        return max(int(s[-1]) for s, _ in self.series.values() if s.size)
