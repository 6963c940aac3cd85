"""The recommendation vocabulary: actions and the parameters each one takes.

Exact semantics of each action are documented in ``docs/recommendations.md``; the client's
``rhythmd_client.apply`` realises them. LR changes are always factors relative to each param
group's LR at the moment of application, never absolute LRs.
"""

from __future__ import annotations

import math
from typing import Any

from rhythmd.errors import InvalidInputError

# action -> {param: (kind, required)}; kind is "factor<1", "factor<=1", "factor>1", "float>=0",
# "float>0", "int>0", "int>=0", "int>=-1", "kind", "ints", "id"
ACTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "reduce_lr": {"factor": ("factor<1", True), "min_lr": ("float>=0", False),
                  "cooldown": ("int>=0", False)},
    "warmup": {"warmup_steps": ("int>0", True), "start_factor": ("float>0", False),
               "peak_factor": ("float>0", False)},
    "set_schedule": {"kind": ("kind", True), "T_max": ("int>0", False),
                     "eta_min": ("float>=0", False), "milestones": ("ints", False),
                     "gamma": ("factor<1", False)},
    "increase_lr": {"factor": ("factor>1", True), "max_lr": ("float>0", False)},
    "rollback": {"to_step": ("int>=-1", True), "lr_factor": ("factor<=1", False),
                 "warmup_steps": ("int>=0", False), "warmup_start_factor": ("float>0", False)},
    "revert": {"to_step": ("int>=-1", True), "change_id": ("id", True)},
    "stop": {},
}
SCHEDULE_KINDS = ("cosine", "multistep")


def validate_action(action: str, params: dict[str, Any], loc: tuple[str, ...] = ("body",)) -> None:
    """Raise :class:`InvalidInputError` unless ``params`` fits ``action``'s vocabulary."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise InvalidInputError((*loc, "action"),
                                f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    for key in params:
        if key not in spec and key not in ("max_lr", "min_lr"):
            raise InvalidInputError((*loc, "params", key), f"{action} takes no parameter {key!r}")
    for key, (kind, required) in spec.items():
        if key not in params:
            if required:
                raise InvalidInputError((*loc, "params", key), f"{action} needs {key!r}")
            continue
        _check(kind, params[key], (*loc, "params", key))
    for key in ("max_lr", "min_lr"):
        if key in params and key not in spec:
            _check("float>=0", params[key], (*loc, "params", key))
    if action == "set_schedule":
        if params["kind"] == "cosine" and "T_max" not in params:
            raise InvalidInputError((*loc, "params", "T_max"), "a cosine schedule needs T_max")
        if params["kind"] == "multistep" and "milestones" not in params:
            raise InvalidInputError((*loc, "params", "milestones"),
                                    "a multistep schedule needs milestones")


def _check(kind: str, value: Any, loc: tuple[str, ...]) -> None:
    def bad(msg: str) -> InvalidInputError:
        return InvalidInputError(loc, msg, value if isinstance(value, (int, float, str)) else None)

    if kind == "kind":
        if value not in SCHEDULE_KINDS:
            raise bad(f"kind must be one of {', '.join(SCHEDULE_KINDS)}")
        return
    if kind == "id":
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise bad("must be the id of the recommendation that made the change (1-64 chars)")
        return
    if kind == "ints":
        if (not isinstance(value, list) or not value
                or any(type(v) is not int or v <= 0 for v in value)
                or value != sorted(set(value))):
            raise bad("milestones must be a non-empty increasing list of positive step counts")
        return
    if kind.startswith("int"):
        lowest = {"int>0": 1, "int>=0": 0, "int>=-1": -1}[kind]
        if type(value) is not int or value < lowest:
            raise bad(f"must be an integer {kind[3:]}")
        return
    if type(value) not in (int, float) or not math.isfinite(value):
        raise bad("must be a finite number")
    ok = {
        "factor<1": 0 < value < 1,
        "factor<=1": 0 < value <= 1,
        "factor>1": 1 < value <= 1e6,
        "float>=0": value >= 0,
        "float>0": value > 0,
    }[kind]
    if not ok:
        raise bad({"factor<1": "must be in (0, 1)", "factor<=1": "must be in (0, 1]",
                   "factor>1": "must be in (1, 1e6]", "float>=0": "must be >= 0",
                   "float>0": "must be > 0"}[kind])
