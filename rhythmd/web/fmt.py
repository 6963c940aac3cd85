"""Numbers as the pages print them: one helper, a few significant digits, no float noise.

``num(0.09999999999999998)`` is ``0.1``, ``num(1.5e26)`` is ``1.5e26``, ``num(nan)`` is ``NaN``.
Machine-readable attributes (``data-value`` for sorting) keep the full value; only the text a
person reads goes through here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

SIG_DIGITS = 4
"""Significant digits of every number on the pages."""
MAX_TEXT = 300
"""Longer structured values are cut (with an ellipsis)."""
NONFINITE_TEXT = {"NaN": "NaN", "Infinity": "+Inf", "-Infinity": "-Inf"}
NOISY_LITERAL = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:[eE][-+]?\d+)?(?![\w.])")
"""A decimal literal with more digits than anyone typed (``0.09999999999999998``)."""


def num(v: float, digits: int = SIG_DIGITS) -> str:
    """``v`` to ``digits`` significant digits, trailing zeros dropped, exponent written short
    (``1.2e-5``); ``NaN``, ``+Inf`` and ``-Inf`` by name. Integers below 10**digits stay exact."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    text = f"{v:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def value(v: Any) -> str:
    """Plain text of a JSON-like value: numbers through :func:`num` at any depth, strings bare
    at the top and quoted inside lists and dicts, long structures cut."""
    text = _text(v, top=True)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _text(v: Any, top: bool = False) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return num(v)
    if isinstance(v, str):
        if v in NONFINITE_TEXT:
            return NONFINITE_TEXT[v]
        return v if top else json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_text(str(k))}: {_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v)


def text(message: str) -> str:
    """Free text made by the daemon (a timeline title, a diagnosis message) with its long
    decimal literals written through :func:`num`; short ones are left as written."""
    return NOISY_LITERAL.sub(lambda m: num(float(m.group(0))), message)
