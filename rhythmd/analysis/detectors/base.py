"""What every detector shares: the signal type, persistence, and the LR context of evidence.

A detector consumes one point at a time and returns lifecycle signals; ``RunAnalyzer`` turns
them into ``Diagnosis`` objects. All state is plain JSON types (``state_dict``).
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from ..types import AnalysisConfig


class Signal(TypedDict):
    """A lifecycle change proposed by a detector (``action``: open, update or close)."""

    action: str
    kind: str
    metric: str
    step: int
    onset_step: int
    severity: str
    confidence: float
    evidence: dict[str, Any]
    message: str


class Stateful:
    """Attribute-dict persistence, as ``torch.optim.lr_scheduler``: ``cfg`` is not state."""

    cfg: AnalysisConfig

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "cfg":
                continue
            out[k] = (
                [list(x) if isinstance(x, list) else x for x in v]
                if isinstance(v, list)
                else (dict(v) if isinstance(v, dict) else v)
            )
        return out

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if k in self.__dict__:
                setattr(self, k, v)


def signal(action: str, kind: str, metric: str, step: int, onset: int, severity: str,
           confidence: float, evidence: dict[str, Any], message: str) -> Signal:
    """Build a :class:`Signal` (confidence clipped to [0, 1])."""
    return {
        "action": action,
        "kind": kind,
        "metric": metric,
        "step": int(step),
        "onset_step": int(onset),
        "severity": severity,
        "confidence": float(round(min(max(confidence, 0.0), 1.0), 4)),
        "evidence": evidence,
        "message": message,
    }


def near_warmup(ctx: dict[str, Any], step: int) -> bool:
    """During an LR warmup, or within ``max(50, warmup/2)`` steps after it ended."""
    if ctx.get("in_warmup"):
        return True
    we = ctx.get("warmup_end_step")
    return we is not None and 0 <= step - we <= max(50, 0.5 * we)


def lr_evidence(ctx: dict[str, Any], step: int) -> dict[str, Any]:
    """The LR phase at ``step`` as evidence fields (``near_warmup`` is what the policy reads;
    ``schedule_hint`` is the human-readable sentence)."""
    ev: dict[str, Any] = {"in_warmup": bool(ctx.get("in_warmup")),
                          "near_warmup": near_warmup(ctx, step)}
    if ctx.get("lr") is not None and math.isfinite(ctx.get("lr", math.nan)):
        ev["lr"] = ctx["lr"]
    if ctx.get("in_warmup"):
        ev["loss_rises_while_lr_rises"] = True
    we = ctx.get("warmup_end_step")
    if we is not None:
        ev["warmup_end_step"] = we
        ev["steps_after_warmup_end"] = int(step - we)
        if ev["near_warmup"] and not ctx.get("in_warmup"):
            ev["schedule_hint"] = "right after warmup end: warmup too short or peak lr too high"
    elif ctx.get("in_warmup"):
        ev["schedule_hint"] = "during lr warmup: peak lr likely too high"
    return ev


def lr_phrase(ev: dict[str, Any]) -> str:
    return f"; {ev['schedule_hint']}" if "schedule_hint" in ev else ""
