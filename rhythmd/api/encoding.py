"""JSON responses that keep non-finite floats: NaN, +Inf and -Inf are written as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (never ``null``, never bare literals that a
browser's ``JSON.parse`` rejects)."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from starlette.responses import Response

from rhythmd.jsonsafe import encode_nonfinite

_NONFINITE_TOKEN = re.compile(r"-?Infinity|NaN")


def float_array_json(values: np.ndarray) -> str:
    """Serialise a float64 array as a JSON list, fast: one C-level dump, then quote the few
    non-finite tokens (a float's repr contains no letters other than these and ``e``)."""
    text = json.dumps(values.tolist())
    if values.size and not np.isfinite(values).all():
        text = _NONFINITE_TOKEN.sub(lambda m: f'"{m.group(0)}"', text)
    return text


class RhythmdJSONResponse(JSONResponse):
    """The default response class: non-finite floats become strings instead of an error."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            encode_nonfinite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


def raw_json_response(head: dict[str, Any], arrays: dict[str, str], status_code: int = 200,
                      ) -> Response:
    """A JSON object made of ``head`` plus members whose values are already-serialised JSON."""
    if not head:
        raise ValueError("head must have at least one member")
    text = json.dumps(encode_nonfinite(head), ensure_ascii=False, allow_nan=False)
    parts = [text[:-1]]
    parts.extend(f', "{key}": {raw}' for key, raw in arrays.items())
    parts.append("}")
    return Response("".join(parts).encode("utf-8"), status_code=status_code,
                    media_type="application/json")
