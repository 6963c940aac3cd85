"""Checks of a recommendation's parameters as the LR controller reads them.

Every failure raises :class:`RecommendationRejected`, whose ``reason`` is sent back to the
daemon in the rejection ack. LR bounds (``min_lr``/``max_lr``) are absolute LRs, one per
param group or one for all.
"""

from __future__ import annotations

import math
from typing import Any


class RecommendationRejected(Exception):
    """A recommendation that cannot or must not be applied; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def num(params: dict[str, Any], key: str, default: float | None = None) -> float:
    """A finite number parameter (``default`` when absent; rejected when both are missing)."""
    v = params.get(key, default)
    if v is None:
        raise RecommendationRejected(f"missing parameter {key!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RecommendationRejected(f"parameter {key!r} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise RecommendationRejected(f"parameter {key!r} must be finite, got {v!r}")
    return v


def integer(params: dict[str, Any], key: str, default: int | None = None, lo: int = 0) -> int:
    """An integer parameter ``>= lo`` (a whole float is accepted)."""
    v = params.get(key, default)
    if v is None:
        raise RecommendationRejected(f"missing parameter {key!r}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecommendationRejected(f"parameter {key!r} must be an integer, got {v!r}")
    if v < lo:
        raise RecommendationRejected(f"parameter {key!r} must be >= {lo}, got {v}")
    return v


def bounds(value: Any, n: int, name: str) -> list[float] | None:
    """Normalise a float / per-group list clamp to a list of n floats (None: no clamp)."""
    if value is None:
        return None
    vals = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(vals) != n:
        raise RecommendationRejected(f"{name} has {len(vals)} values for {n} param groups")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RecommendationRejected(f"{name} must hold finite numbers, got {v!r}")
        if v < 0:
            raise RecommendationRejected(f"{name} must be >= 0, got {v!r}")
        out.append(float(v))
    return out


def lo_of(*bounds: list[float] | None, n: int) -> list[float]:
    """Per-group lower LR bound: the largest of the given bounds (0 when none)."""
    return [max([b[i] for b in bounds if b is not None], default=0.0) for i in range(n)]


def hi_of(*bounds: list[float] | None, n: int) -> list[float]:
    """Per-group upper LR bound: the smallest of the given bounds (inf when none)."""
    return [min([b[i] for b in bounds if b is not None], default=math.inf) for i in range(n)]


def cut_factors(host: list[float], factor: float, lo: list[float]) -> list[float]:
    """Relative factors that multiply each LR in ``host`` by ``factor`` (< 1) without going
    below ``lo`` (a group already at or below its bound keeps its LR: factor 1)."""
    out = []
    for cur, low in zip(host, lo, strict=True):
        new = cur if cur <= low else max(cur * factor, low)
        out.append(new / cur if cur > 0 else 1.0)
    return out


def raise_factors(host: list[float], factor: float, hi: list[float]) -> list[float]:
    """Relative factors that multiply each LR in ``host`` by ``factor`` (> 1) without going
    above ``hi`` (a group at 0 or at its bound keeps its LR: factor 1)."""
    out = []
    for cur, high in zip(host, hi, strict=True):
        new = cur if cur >= high else min(cur * factor, high)
        out.append(new / cur if cur > 0 else 1.0)
    return out
