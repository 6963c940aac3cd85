"""JSON-safe values: non-finite floats as the strings "NaN", "Infinity", "-Infinity"; and
the JSON text the store keeps (non-finite floats as the literals Python's ``json`` reads)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic_core import PydanticSerializationError, to_json


def stored_json(obj: Any) -> str:
    """``obj`` as JSON text that ``json.loads`` reads back exactly: NaN and ±Infinity as its
    literals, floats in shortest round-trip form. Encoded by pydantic-core (5-10x
    ``json.dumps`` on an analyzer state of about 20 kB); ``json.dumps`` for what it cannot."""
    try:
        return to_json(obj, inf_nan_mode="constants").decode()
    except PydanticSerializationError:
        return json.dumps(obj)


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
