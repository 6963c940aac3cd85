"""The spool: a JSONL file that keeps metric bodies the daemon could not take yet.

One line per batch: ``{"run_id": ..., "points": N, "body": <the request body as sent>}``.
The body is stored and uploaded byte for byte (its ``batch_id`` makes the upload
idempotent), so a later session of the same run, or another run's session, sends it as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

_BODY = b',"body":'


class SpoolLine:
    """One parsed spool line: the run it belongs to, its point count and the stored body."""

    __slots__ = ("body", "points", "run_id")

    def __init__(self, run_id: str | None, points: int, body: bytes) -> None:
        self.run_id = run_id
        self.points = points
        self.body = body


class Spool:
    """Appends batches to ``path``, reads them back, keeps the lines not uploaded yet.

    ``dirty`` is True while the file may hold lines (also when it was left by an earlier
    session). Used by the sender thread only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.dirty = os.path.exists(self.path) and os.path.getsize(self.path) > 0

    def append(self, run_id: str, bodies: Iterable[tuple[int, bytes]]) -> int:
        """Append ``(points, body)`` pairs of ``run_id``; returns the points written.
        Raises ``OSError`` when the file cannot be written."""
        rid = json.dumps(run_id).encode()
        written = 0
        with open(self.path, "ab") as f:
            for points, body in bodies:
                f.write(b'{"run_id":' + rid + b',"points":' + str(points).encode()
                        + _BODY + body + b"}\n")
                written += points
        self.dirty = True
        return written

    def lines(self) -> list[bytes]:
        """The stored lines, oldest first (none when the file is gone)."""
        try:
            with open(self.path, "rb") as f:
                return [ln for ln in f.read().split(b"\n") if ln.strip()]
        except FileNotFoundError:
            self.dirty = False
            return []

    def keep(self, rest: list[bytes]) -> None:
        """Rewrite the file with the lines ``rest`` (the ones not uploaded)."""
        with open(self.path, "wb") as f:
            f.write(b"".join(ln + b"\n" for ln in rest))
        self.dirty = bool(rest)


def parse(line: bytes) -> SpoolLine:
    """A line written by :meth:`Spool.append`; raises ``ValueError`` when it is damaged."""
    try:
        cut = line.index(_BODY)
        head = json.loads(line[:cut] + b"}")
        rid = head.get("run_id")
        return SpoolLine(rid if isinstance(rid, str) else None, int(head.get("points") or 0),
                         line[cut + len(_BODY):-1])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"damaged spool line: {exc}") from exc
