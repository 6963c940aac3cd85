"""The user's LR schedulers as the LR controller sees them: their graph and a host model.

A composite (``SequentialLR``, ``ChainedScheduler``) holds children in ``_schedulers``. The
host model recomputes a closed-form scheduler's output from a mirror of its ``base_lrs``,
so tensor LRs on a device are known without reading them. torch is never imported here.
"""

from __future__ import annotations

import bisect
import sys
from typing import Any

from rhythmd_client._lr_tensors import is_tensor


def scheduler_nodes(roots: list[Any]) -> list[Any]:
    """Every scheduler object reachable from ``roots`` (composites included), once."""
    out: list[Any] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        s = stack.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        out.append(s)
        stack.extend(reversed(list(getattr(s, "_schedulers", None) or [])))
    return out


def model_node(s: Any, mirror: dict[int, list[float]],
               mirror_ref: dict[int, Any]) -> list[float] | None:
    """Host floats that scheduler ``s`` gives now, computed from its mirrored ``base_lrs``
    (``mirror``, valid while ``s.base_lrs`` is still ``mirror_ref``'s list); None when they
    cannot be computed without reading a tensor."""
    milestones = getattr(s, "_milestones", None)
    if milestones is not None and hasattr(s, "_schedulers"):  # SequentialLR
        idx = bisect.bisect_right(milestones, s.last_epoch)
        return model_node(s._schedulers[idx], mirror, mirror_ref)
    mine = mirror.get(id(s))
    if mine is None or getattr(s, "base_lrs", None) is not mirror_ref.get(id(s)):
        return None
    lr_mod = sys.modules.get("torch.optim.lr_scheduler")
    closed = getattr(s, "_get_closed_form_lr", None)
    is_lambda = lr_mod is not None and type(s) is lr_mod.LambdaLR
    if closed is None and not is_lambda:
        return None
    saved = s.base_lrs
    s.base_lrs = mine
    s._get_lr_called_within_step = True
    try:
        vals = closed() if closed is not None else s.get_lr()
    finally:
        s.base_lrs = saved
        s._get_lr_called_within_step = False
    if any(is_tensor(v) for v in vals):
        return None
    return [float(v) for v in vals]


def reset_plateau(roots: list[Any], cut: bool) -> None:
    """Stop ``ReduceLROnPlateau`` from cutting again at once after a change of ours (after a
    ``cut``, it also waits its cooldown)."""
    for s in scheduler_nodes(roots):
        if hasattr(s, "num_bad_epochs") and hasattr(s, "cooldown_counter"):
            s.num_bad_epochs = 0
            if cut:
                s.cooldown_counter = max(int(getattr(s, "cooldown", 0)), s.cooldown_counter)
