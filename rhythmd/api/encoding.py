"""JSON responses that keep non-finite floats: NaN, +Inf and -Inf are written as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (never ``null``, never bare literals that a
browser's ``JSON.parse`` rejects). Encoding is ``pydantic_core.to_json`` (UTF-8, compact)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic_core import to_json
from starlette.responses import Response

from rhythmd.jsonsafe import encode_nonfinite

__all__ = ["RhythmdJSONResponse", "dumps", "encode_nonfinite", "float_array_json",
           "raw_json_response"]


def _numpy_fallback(value: Any) -> Any:
    """NumPy arrays as lists and NumPy scalars as Python scalars; anything else is an error."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON, non-finite floats as strings, NumPy values as plain
    ones, datetimes as ISO 8601. Raises ``ValueError`` for what has no JSON form."""
    return to_json(content, inf_nan_mode="strings", fallback=_numpy_fallback)


def float_array_json(values: np.ndarray) -> str:
    """A float array as a JSON list, non-finite values as strings."""
    return to_json(values.tolist(), inf_nan_mode="strings").decode()


class RhythmdJSONResponse(JSONResponse):
    """The default response class: non-finite floats become strings instead of an error."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def raw_json_response(head: dict[str, Any], arrays: dict[str, str], status_code: int = 200,
                      ) -> Response:
    """A JSON object made of ``head`` plus members whose values are already-serialised JSON."""
    if not head:
        raise ValueError("head must have at least one member")
    parts = [dumps(head)[:-1]]
    parts.extend(b',"%s":%s' % (dumps(key)[1:-1], raw.encode()) for key, raw in arrays.items())
    parts.append(b"}")
    return Response(b"".join(parts), status_code=status_code, media_type="application/json")
