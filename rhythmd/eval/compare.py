"""Comparing diagnoses produced at different times (shared by the benchmarks and the tests)."""

from __future__ import annotations

from typing import Any


def strip_wall_times(obj: Any) -> Any:
    """A copy without wall-clock fields (``*_at`` that are not steps, ``wall_time*``), to
    compare diagnoses produced at different times."""
    if isinstance(obj, dict):
        return {k: strip_wall_times(v) for k, v in obj.items()
                if not (k.startswith("wall_time") or (k.endswith("_at") and "step" not in k))}
    if isinstance(obj, list):
        return [strip_wall_times(v) for v in obj]
    return obj
