"""DDP agreement: every rank applies the same recommendation at the same step.

Every K steps (``step >= next multiple of K``, so the same steps on every rank), ALL ranks
enter one asynchronous ``broadcast`` of a small int64 tensor from the streaming rank (rank 0
by default), unconditionally: when that rank has nothing to say, or hit an internal error
while deciding, it sends "none". The result of round ``n`` is waited for and applied at round
``n + 1``, K steps later, so the collective overlaps training and the apply point is the same
step on every rank. The tensors live on the CPU (a gloo group), so reading the decision never
syncs a GPU.
"""

from __future__ import annotations

import struct
from typing import Any

WORDS = 512  # payload capacity: 8 * WORDS bytes of JSON


class DecisionSync:
    """Round-based broadcast of an opaque byte payload from global rank ``src`` (the rank that
    talks to the daemon) to every rank of ``group``."""

    def __init__(self, rank: int, group: Any = None, src: int = 0) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = rank
        self.group = group
        self.src = src
        self._work: Any = None
        self._buf: Any = None
        self.rounds = 0

    @staticmethod
    def encode(payload: bytes | None) -> Any:
        """Pack ``payload`` (or nothing) into an int64 tensor of ``WORDS + 1`` entries."""
        import torch

        buf = torch.zeros(WORDS + 1, dtype=torch.int64)
        if payload:
            if len(payload) > 8 * WORDS:
                raise ValueError(f"DDP decision of {len(payload)} bytes exceeds {8 * WORDS}")
            padded = payload + b"\0" * (-len(payload) % 8)
            words = struct.unpack(f"<{len(padded) // 8}q", padded)
            buf[0] = len(payload)
            buf[1:1 + len(words)] = torch.tensor(words, dtype=torch.int64)
        return buf

    @staticmethod
    def decode(buf: Any) -> bytes | None:
        """Inverse of :meth:`encode`."""
        n = int(buf[0])
        if n <= 0:
            return None
        words = buf[1:1 + (n + 7) // 8].tolist()
        return struct.pack(f"<{len(words)}q", *words)[:n]

    def exchange(self, payload: bytes | None) -> bytes | None:
        """Enter this round's collective; return the payload agreed in the previous round.

        Must be called by every rank at the same step. ``payload`` is ignored on ranks other
        than ``src`` (and replaced by "none" if it cannot be encoded).
        """
        result = None
        if self._work is not None:
            self._work.wait()
            result = self.decode(self._buf)
        if self.rank == self.src:
            try:
                buf = self.encode(payload)
            except ValueError:
                buf = self.encode(None)
        else:
            buf = self.encode(None)
        self._buf = buf
        self._work = self._dist.broadcast(buf, src=self.src, group=self.group, async_op=True)
        self.rounds += 1
        return result

    def finish(self) -> None:
        """Wait for the outstanding round (every rank issued it, so this cannot hang)."""
        if self._work is not None:
            self._work.wait()
            self._work = None
