"""The client's copy of the recommendation vocabulary: action -> accepted parameter names.

It mirrors the daemon's ``rhythmd.recommendations.ACTIONS`` (keys and parameter names); the
client never imports the daemon, and ``tests/client`` checks the two agree. LR parameters are
relative factors (``factor``, ``lr_factor``, ``start_factor``, ...) except ``min_lr``,
``max_lr`` and ``eta_min``, which are absolute LRs; ``*_steps``, ``to_step``, ``cooldown``,
``T_max`` and ``milestones`` count optimizer steps.
"""

from __future__ import annotations

ACTIONS: dict[str, frozenset[str]] = {
    "reduce_lr": frozenset({"factor", "min_lr", "cooldown"}),
    "warmup": frozenset({"warmup_steps", "start_factor", "peak_factor"}),
    "set_schedule": frozenset({"kind", "T_max", "eta_min", "milestones", "gamma"}),
    "increase_lr": frozenset({"factor", "max_lr"}),
    "rollback": frozenset({"to_step", "lr_factor", "warmup_steps", "warmup_start_factor"}),
    "revert": frozenset({"to_step", "change_id"}),
    "stop": frozenset(),
}
"""Every action the daemon may recommend, with the parameter names it accepts."""

ACTION_NAMES: frozenset[str] = frozenset(ACTIONS)
"""The action names alone (what ``allow=`` may contain)."""

LR_CHANGES: frozenset[str] = frozenset({"reduce_lr", "increase_lr", "warmup", "set_schedule"})
"""Actions that change the learning rate without restoring a snapshot."""

__all__ = ["ACTIONS", "ACTION_NAMES", "LR_CHANGES"]
