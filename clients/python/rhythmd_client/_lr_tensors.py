"""LR values that may be tensors: read them without a device sync, change them in place.

torch is never imported here; a value is a tensor when torch is already loaded and it is a
``torch.Tensor``. A device (non-CPU) tensor is never read on the host.
"""

from __future__ import annotations

import sys
from typing import Any


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a ``torch.Tensor`` (False when torch was never imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_device_tensor(x: Any) -> bool:
    """True for a tensor whose value cannot be read without a device sync (non-CPU)."""
    return is_tensor(x) and x.device.type != "cpu"


def read_host(x: Any) -> float | None:
    """Value of a number or CPU tensor; None for a device tensor (reading it would sync)."""
    if not is_tensor(x):
        return float(x)
    if is_device_tensor(x):
        return None
    return float(x)  # CPU tensor: a memory read, no device sync


def mul_key(d: dict[str, Any], key: str, f: float) -> None:
    """``d[key] *= f``; a tensor is multiplied in place."""
    v = d[key]
    if is_tensor(v):
        v.mul_(f)
    else:
        d[key] = v * f


def mul_list(lst: list[Any], fs: list[float]) -> None:
    """``lst[i] *= fs[i]`` for the common length; tensors in place."""
    for i in range(min(len(lst), len(fs))):
        v = lst[i]
        if is_tensor(v):
            v.mul_(fs[i])
        else:
            lst[i] = v * fs[i]


def set_val(d: Any, key: Any, value: float) -> None:
    """Set ``d[key]`` to ``value``; a tensor is filled in place (no sync, no new tensor)."""
    if is_tensor(d[key]):
        d[key].fill_(value)
    else:
        d[key] = value
