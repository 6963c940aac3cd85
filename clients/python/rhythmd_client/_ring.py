"""Turning the hook's preallocated per-step lists into series for one hand-over.

Plain numbers are copied into ``array``s (the cyclic GC never visits their elements) and the
ring lists are reused, so a hand-over leaves few objects behind to drive the GC's costly full
collections; a list holding tensors is handed over as a copy (still unread, see
:func:`~rhythmd_client._buffer.freeze`) and the ring's references are cleared.
"""

from __future__ import annotations

import array
from typing import Any

from rhythmd_client._buffer import freeze

Series = tuple[str, Any, Any, Any]
"""(name, steps, values, wall times) of one series in a chunk."""

_NONE_ONLY = {type(None)}
_FLOAT_ONLY = {float}


def pack(code: str, values: list[Any]) -> Any:
    """``array(code, values)``, or a list copy when the values do not fit (odd types)."""
    try:
        return array.array(code, values)
    except (TypeError, OverflowError, ValueError):
        return list(values)


def ring_series(n: int, steps: list[Any], walls: list[Any], rings: list[tuple[str, list[Any]]],
                lrs: list[Any] | None, nones: list[Any]) -> list[Series]:
    """The series held in the first ``n`` slots; value rings are reset to ``nones`` (a list
    of ``None`` of the ring's length) so they no longer hold tensors."""
    full = n == len(steps)
    st = pack("q", steps if full else steps[:n])
    wt = pack("d", walls if full else walls[:n])
    out: list[Series] = []
    for name, ring in rings:
        vals = ring if full else ring[:n]
        kinds = set(map(type, vals))  # identity-based: tensor == None would be an op
        if kinds == _NONE_ONLY:
            continue
        if kinds == _FLOAT_ONLY:
            out.append((name, st, array.array("d", vals), wt))
        else:
            out.append((name, st, freeze(list(vals)), wt))
        ring[:] = nones  # drop the references to tensors now
    if lrs is not None:
        out.append(("lr", st, pack("d", lrs if full else lrs[:n]), wt))
    return out


def extra_series(extra: list[tuple[str, int, Any, float]]) -> list[Series]:
    """Logged metrics ``(name, step, value, wall time)`` grouped into one series per name."""
    by_name: dict[str, tuple[list[int], list[Any], list[float]]] = {}
    for name, step, value, wall in extra:
        s = by_name.setdefault(name, ([], [], []))
        s[0].append(step)
        s[1].append(value)
        s[2].append(wall)
    return [(name, st, freeze(v), w) for name, (st, v, w) in by_name.items()]
