"""``set_schedule``: the override schedule that replaces the user's from a step on.

An override is a dict: ``kind`` (``cosine`` or ``multistep``), ``t0`` (the step it started),
``base`` (absolute LRs per param group at ``t0``), and ``T_max``/``eta`` (steps, absolute LRs)
for cosine or ``milestones``/``gamma`` (steps after ``t0``, relative factor) for multistep.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from rhythmd_client._lr_params import RecommendationRejected, bounds, integer, num


def parse_schedule(params: dict[str, Any], step: int, base: list[float],
                   lo: list[float]) -> tuple[dict[str, Any], str]:
    """The override that ``set_schedule`` with ``params`` starts at ``step`` from the LRs
    ``base`` (never below the lower bounds ``lo``), and a note saying what it is."""
    kind = params.get("kind")
    n = len(base)
    if kind == "cosine":
        t_max = integer(params, "T_max", lo=1)
        if "eta_min" in params and "eta_min_factor" in params:
            raise RecommendationRejected("give eta_min or eta_min_factor, not both")
        if "eta_min_factor" in params:
            ef = num(params, "eta_min_factor")
            if not 0.0 <= ef <= 1.0:
                raise RecommendationRejected("eta_min_factor must be in [0, 1]")
            eta = [b * ef for b in base]
        else:
            eta = bounds(params.get("eta_min", 0.0), n, "eta_min") or [0.0] * n
        eta = [max(min(e, b), low) for e, b, low in zip(eta, base, lo, strict=True)]
        ov: dict[str, Any] = {"kind": "cosine", "T_max": t_max, "eta": eta}
        note = f"cosine over {t_max} steps"
    elif kind == "multistep":
        ms = params.get("milestones")
        if not isinstance(ms, (list, tuple)) or not ms:
            raise RecommendationRejected("multistep needs a non-empty milestones list")
        marks = sorted({integer({"m": m}, "m", lo=1) for m in ms})
        gamma = num(params, "gamma", 0.1)
        if not 0.0 < gamma <= 1.0:
            raise RecommendationRejected(f"multistep gamma must be in (0, 1], got {gamma}")
        ov = {"kind": "multistep", "milestones": marks, "gamma": gamma}
        note = f"multistep at +{marks} steps, gamma {gamma:g}"
    else:
        raise RecommendationRejected(f"unknown schedule kind {kind!r}")
    ov.update(t0=step, base=list(base))
    return ov, note


def override_values(ov: dict[str, Any], step: int, lo: list[float],
                    hi: list[float]) -> list[float]:
    """The override's absolute LRs at ``step``, clamped to ``[lo, hi]`` per group."""
    k = max(0, step - ov["t0"])
    if ov["kind"] == "cosine":
        t = min(k, ov["T_max"])
        c = (1.0 + math.cos(math.pi * t / ov["T_max"])) / 2.0
        vals = [e + (b - e) * c for b, e in zip(ov["base"], ov["eta"], strict=True)]
    else:
        p = ov["gamma"] ** bisect.bisect_right(ov["milestones"], k)
        vals = [b * p for b in ov["base"]]
    return [min(max(v, low), high) for v, low, high in zip(vals, lo, hi, strict=True)]
