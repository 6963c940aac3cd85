"""JSON-safe values: non-finite floats as the strings "NaN", "Infinity", "-Infinity"."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def nonfinite_to_str(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_nonfinite(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by its string form."""
    if isinstance(obj, float):
        return nonfinite_to_str(obj)
    if isinstance(obj, dict):
        return {k: encode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_nonfinite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return encode_nonfinite(obj.tolist())
    if isinstance(obj, np.generic):
        return encode_nonfinite(obj.item())
    return obj
