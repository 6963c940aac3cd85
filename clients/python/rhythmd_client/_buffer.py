"""Chunks of per-step values between the training thread and the sender thread.

The training thread calls :func:`freeze` every K steps on the values it kept (floats, or loss
tensors on any device). Tensors are stacked in one call; CUDA ones are copied with
``non_blocking=True`` into pinned host memory and an event is recorded, so nothing waits for
the device. The sender thread calls :func:`resolve` later, which returns ``None`` while the
copy is still in flight (it polls the event, never synchronizes) and plain floats after.
"""

from __future__ import annotations

import array
import math
import sys
from typing import Any

_np: Any = False  # numpy module once looked up (None when missing); imported lazily

_PLAIN = frozenset({float, int, type(None), bool})


def _numpy() -> Any:
    global _np
    if _np is False:
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy comes with torch
            _np = None
        else:
            _np = numpy
    return _np


class Pending:
    """Values that still hold tensors; turned into floats on the sender thread.

    ``values`` is the list as recorded (floats, None, tensors on any device); ``stream`` is the
    CUDA stream current on the training thread at hand-over (the loss kernels were enqueued
    on it, so copies enqueued on it later read finished values). ``parts`` is filled by the
    sender: ``(indices or None for all, host tensor, cuda event or None)``.
    """

    __slots__ = ("parts", "stream", "values")

    def __init__(self, values: list[Any], stream: Any) -> None:
        self.values = values
        self.stream = stream
        self.parts: list[tuple[list[int] | None, Any, Any]] | None = None


def freeze(values: list[Any]) -> list[Any] | Pending:
    """Training thread, at a hand-over: wrap values that hold tensors; no tensor op is run.

    Torch ops release the GIL, and a busy sender thread then keeps it for up to the interpreter
    switch interval (5 ms), so even ``torch.stack`` is left to the sender thread.
    """
    kinds = set(map(type, values))
    if kinds <= _PLAIN:
        return values
    stream = None
    torch = sys.modules.get("torch")
    if torch is not None:
        for v in values:
            if isinstance(v, torch.Tensor) and v.is_cuda:
                stream = torch.cuda.current_stream(v.device)
                break
    return Pending(values, stream)


def _stack_to_host(torch: Any, tensors: list[Any], stream: Any) -> tuple[Any, Any]:
    """Sender thread: stack same-device tensors and start their copy to the host.

    Returns ``(host tensor, event or None)``; for CUDA the copy is ``non_blocking`` into pinned
    memory on ``stream`` and the event marks its end (nothing waits for the device).
    Non-scalar tensors are reduced to their mean (per-sample losses).
    """
    with torch.no_grad():
        dev = tensors[0].device
        if dev.type == "cuda":
            if stream is None or stream.device != dev:
                stream = torch.cuda.current_stream(dev)
            with torch.cuda.device(dev), torch.cuda.stream(stream):
                s = _stack(torch, tensors)
                host = torch.empty(s.shape, dtype=s.dtype, pin_memory=True)
                host.copy_(s, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            return host, event
        return _stack(torch, tensors), None


def _stack(torch: Any, tensors: list[Any]) -> Any:
    s = torch.stack(tensors)
    if s.dim() > 1:
        s = s.reshape(s.shape[0], -1).float().mean(1)
    if s.dtype not in (torch.float32, torch.float64):
        s = s.float()
    return s


def _start(p: Pending) -> None:
    """Sender thread: issue the stacking/copies for ``p`` (once)."""
    torch = sys.modules["torch"]
    values = p.values
    try:
        host, event = _stack_to_host(torch, values, p.stream)
        p.parts = [(None, host, event)]
        return
    except (RuntimeError, ValueError, TypeError):
        pass  # mixed types, devices or shapes: per-group below
    groups: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            groups.setdefault((v.device, v.shape), []).append(i)
    p.parts = []
    for idx in groups.values():
        host, event = _stack_to_host(torch, [values[i] for i in idx], p.stream)
        p.parts.append((idx, host, event))


def _plain(v: Any) -> Any:
    if type(v) in _PLAIN:
        return None if v is None else float(v)
    try:
        return float(v)  # numpy scalars and friends
    except (TypeError, ValueError):
        return None


def resolve(frozen: list[Any] | Pending) -> list[Any] | None:
    """Sender thread: plain values, or ``None`` while a device copy is still in flight."""
    if not isinstance(frozen, Pending):
        return frozen
    torch = sys.modules.get("torch")
    if torch is None:  # no tensors can be in there: odd objects only
        return [_plain(v) for v in frozen.values]
    if frozen.parts is None:
        _start(frozen)
    assert frozen.parts is not None
    for _, _, event in frozen.parts:
        if event is not None and not event.query():
            return None
    out: list[Any] | None = None
    for idx, host, _ in frozen.parts:
        if host.device.type != "cpu":  # other accelerators: the sender thread may wait
            host = host.cpu()
        vals = host.tolist()
        if idx is None:
            return vals
        if out is None:
            out = [None if isinstance(v, torch.Tensor) else _plain(v) for v in frozen.values]
        for i, v in zip(idx, vals, strict=True):
            out[i] = v
    if out is None:
        out = [_plain(v) for v in frozen.values]
    return out


def compact_sig(values: Any, digits: int = 8) -> list[float]:
    """Round finite values to ``digits`` significant digits (numpy, vectorised).

    Short decimals encode about twice as fast in ``json.dumps``; non-finite values pass through.
    Without numpy the values are returned unchanged.
    """
    np = _numpy()
    if np is None or not len(values):
        return list(values)
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        mag = np.floor(np.log10(np.abs(a)))
        k = np.where(np.isfinite(mag), digits - 1 - mag, 0.0)
        kpos = np.clip(k, 0, 22)
        kneg = np.clip(-k, 0, 22)
        scaled = np.round(a * 10.0**kpos / 10.0**kneg)
        out = scaled / 10.0**kpos * 10.0**kneg
        out = np.where(np.isfinite(a) & (np.abs(k) <= 22), out, a)
    return out.tolist()


def compact_wall(values: Any) -> list[float]:
    """Round wall-clock times (unix seconds) to milliseconds."""
    np = _numpy()
    if np is None or not len(values):
        return list(values)
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


def drop_missing(steps: list[int], values: list[Any],
                 walls: list[float] | None) -> tuple[list[int], list[Any], list[float] | None]:
    """Drop the points whose value is ``None`` (not recorded at that step)."""
    if isinstance(values, array.array) or None not in values:
        return steps, values, walls
    keep = [i for i, v in enumerate(values) if v is not None]
    return ([steps[i] for i in keep], [values[i] for i in keep],
            None if walls is None else [walls[i] for i in keep])


def is_finite_all(values: list[Any]) -> bool:
    """True when every non-missing value is finite (used for snapshot health)."""
    try:
        return math.isfinite(sum(values))  # NaN and inf propagate through the (C) sum
    except TypeError:  # None among them
        return all(math.isfinite(v) for v in values if v is not None)
