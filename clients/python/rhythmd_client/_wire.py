"""The wire format: per-step chunks from the hook, and metric request bodies built from them.

Units: steps count optimizer steps, wall times are seconds since the epoch, a point is one
value of one series at one step.
"""

from __future__ import annotations

import array
import json
import math
from typing import Any

from rhythmd_client._buffer import compact_sig, compact_wall, drop_missing


class Chunk:
    """Per-step values of K consecutive steps (or logged metrics), handed over at a flush.

    ``series`` items are ``(name, steps, frozen values, wall_times)``; values may still be a
    :class:`~rhythmd_client._buffer.Pending` device copy.
    """

    __slots__ = ("branch", "branch_start", "points", "series")

    def __init__(self, branch: int, branch_start: int | None,
                 series: list[tuple[str, list[int], Any, list[float]]]) -> None:
        self.branch = branch
        self.branch_start = branch_start
        self.series = series
        self.points = sum(len(s[1]) for s in series)


class Batch:
    """One ``POST /v1/runs/{id}/metrics`` body; its ``batch_id`` is fixed once a send was
    attempted, so a retry is recognised by the daemon (idempotency).

    Points wait in ``array`` objects, whose elements the cyclic garbage collector never
    visits: with lists, a million buffered floats made full collections take 0.1-0.7 s, all
    of it under the GIL, stalling the training thread.
    """

    __slots__ = ("attempted", "batch_id", "body", "branch", "branch_start", "points", "series")

    def __init__(self, batch_id: str, branch: int, branch_start: int | None) -> None:
        self.batch_id = batch_id
        self.branch = branch
        self.branch_start = branch_start
        self.series: dict[str, tuple[array.array[int], array.array[float],
                                     array.array[float]]] = {}
        self.points = 0
        self.attempted = False
        self.body: bytes | None = None

    def add(self, name: str, steps: list[int], values: list[Any], walls: list[float]) -> None:
        """Append one series' resolved values (``None`` values are left out)."""
        steps, values, walls2 = drop_missing(steps, values, walls)
        cur = self.series.get(name)
        if cur is None:
            cur = self.series[name] = (array.array("q"), array.array("d"), array.array("d"))
        n = len(cur[0])
        try:
            cur[0].extend(steps)
            cur[1].extend(values)
        except (TypeError, OverflowError, ValueError):  # odd steps or values: one by one
            del cur[0][n:], cur[1][n:]
            cur[0].extend(int(s) for s in steps)
            cur[1].extend(to_float(v) for v in values)
        if walls2 is not None and len(walls2) == len(steps):
            cur[2].extend(walls2)
        self.points += len(steps)

    def encode(self, compact: bool) -> bytes:
        """JSON body, encoded by the C encoder in one call; the arrays are freed afterwards.
        ``compact`` rounds values to 8 significant digits and wall times to ms."""
        if self.body is None:
            series = []
            for name, (steps, values, walls) in self.series.items():
                vals = compact_sig(values) if compact else values.tolist()
                wall = (compact_wall(walls) if compact else walls.tolist()) \
                    if len(walls) == len(steps) else None
                series.append({"name": name, "steps": steps.tolist(), "values": vals,
                               "wall_times": wall})
            doc: dict[str, Any] = {"batch_id": self.batch_id, "branch": self.branch,
                                   "series": series}
            if self.branch or self.branch_start is not None:
                doc["branch_start_step"] = self.branch_start
            self.body = encode(doc)
            self.series = {}
        return self.body


def to_float(v: Any) -> float:
    """``float(v)``, or NaN when ``v`` is not a number."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def encode(doc: Any) -> bytes:
    """A request body: compact JSON, UTF-8."""
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(raw: bytes) -> Any:
    """A response body as JSON; ``None`` when it is empty or not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
