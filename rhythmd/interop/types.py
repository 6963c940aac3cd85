"""What every run source returns, and the error a source raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rhythmd.errors import RhythmdError

Columns = dict[str, tuple[np.ndarray, np.ndarray]]
"""Per metric: ``(steps int64, values float64)``, steps sorted; NaN/inf are data."""


class SourceError(RhythmdError):
    """A run that cannot be read (missing, corrupt, not found); the message says what to do."""


@dataclass
class RunData:
    """One recorded run, from any source."""

    columns: Columns
    label: str  # how reports name it: the path or the URI given
    name: str  # a default run name: the file stem, the MLflow or W&B run name
    total_steps: int | None = None  # planned length, when the source recorded it
    origin: dict[str, Any] = field(default_factory=dict)  # where it came from (run config keys)


def sorted_columns(cols: dict[str, tuple[list[int], list[float]]]) -> Columns:
    """Lists to arrays, each metric sorted by step (stable: equal steps keep their order)."""
    out: Columns = {}
    for k, (s, v) in cols.items():
        steps, values = np.asarray(s, np.int64), np.asarray(v, np.float64)
        if steps.size > 1 and np.any(np.diff(steps) < 0):
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
        out[k] = (steps, values)
    return out
