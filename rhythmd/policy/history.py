"""What the run's recommendation history says: rejected rollbacks, the current divergence
episode, reverted changes, and how far the LR moved by our changes and by the user's schedule."""

from __future__ import annotations

from typing import Any

from rhythmd.policy.types import RunContext


def rejected_no_snapshot(h: dict[str, Any]) -> bool:
    """A rollback the client rejected because it cannot roll back (no snapshot), as opposed
    to one its local reflex had already superseded (note "superseded by local reflex")."""
    return (h.get("action") == "rollback" and h.get("status") == "rejected"
            and "superseded" not in str(h.get("note") or ""))


def episode_rollbacks(rollbacks: list[dict[str, Any]], step: int, reset: int
                      ) -> list[dict[str, Any]]:
    """The rollbacks of the current divergence episode: an episode ends once the run went
    ``reset`` steps without a divergence answer (healthy for a window)."""
    episode: list[dict[str, Any]] = []
    prev: int | None = None
    for h in rollbacks:
        at = int(h.get("issued_at_step") or 0)
        if prev is not None and abs(at - prev) > reset:
            episode = []
        episode.append(h)
        prev = at
    if prev is not None and abs(step - prev) > reset:
        return []
    return episode


def failed_changes(hist: list[dict[str, Any]]) -> set[str]:
    """Actions of changes that were reverted (tried, made things worse: not tried again)."""
    by_id = {h["id"]: h for h in hist}
    return {by_id[c]["action"] for h in hist if h["action"] == "revert"
            and (c := (h.get("params") or {}).get("change_id")) in by_id}


def our_factor(hist: list[dict[str, Any]]) -> float:
    """Product of the LR factors of our applied changes (the user's schedule divided out)."""
    f = 1.0
    for h in hist:
        if h["status"] != "applied":
            continue
        p = h.get("params") or {}
        key = {"reduce_lr": "factor", "increase_lr": "factor", "rollback": "lr_factor"}.get(
            h["action"])
        v = p.get(key) if key else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            f *= float(v)
    return f


def user_decayed(ctx: RunContext) -> float | None:
    """How far the user's own schedule has brought the LR below its peak, now or at any point
    since the peak (a warm-restart schedule decays and rises again): 1.0 for a flat schedule,
    None when unknown. Our own changes are divided out."""
    if not (ctx.lr and ctx.peak_lr and ctx.lr > 0 and ctx.peak_lr > 0):
        return None
    ours = our_factor(ctx.history)
    low = min(ctx.lr, ctx.min_lr_after_peak or ctx.lr)
    return (low / ours) / ctx.peak_lr
