"""Which of a recorded run's metrics plays which part, and how long the run was planned.

The names come from :mod:`rhythmd.analysis.metrics`, their one owner: the standard name, then
its aliases and conventional names, then a name whose role it implies (a loss-like name is the
train loss, or the validation loss when it reads as an evaluation; a score read as an evaluation
is the auxiliary validation metric; a learning-rate name is the LR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rhythmd.analysis import metrics
from rhythmd.errors import ConfigurationError

DEFAULT_NAMES = {"train_metric": "train_loss", "val_metric": "val_loss",
                 "aux_val_metric": "val_acc", "lr_metric": "lr"}
"""Analysis config key -> the name the analysis reads when the key is not set."""

_NAMED: dict[str, tuple[str, ...]] = {
    "train_metric": ("train_loss", *metrics.METRIC_ALIASES["train_loss"],
                     *metrics.TRAIN_LOSS_NAMES),
    "val_metric": ("val_loss", *metrics.METRIC_ALIASES["val_loss"], *metrics.VAL_LOSS_NAMES),
    "aux_val_metric": metrics.VAL_SCORE_NAMES,
    "lr_metric": ("lr", *metrics.METRIC_ALIASES["lr"], *metrics.LR_NAMES),
}


def _is_train_loss(name: str) -> bool:
    return (metrics.infer_role(name) == "min" and not metrics.is_eval_name(name)
            and not metrics.is_error_rate_name(name))


_BY_ROLE: dict[str, Callable[[str], bool]] = {
    "train_metric": _is_train_loss, "val_metric": metrics.is_val_loss_name,
    "aux_val_metric": metrics.is_val_score_name, "lr_metric": metrics.is_lr_name}


def resolve_metric_names(columns: Mapping[str, Any], train: str | None = None,
                         val: str | None = None, lr: str | None = None) -> dict[str, str]:
    """Analysis config keys (train_metric, val_metric, aux_val_metric, lr_metric) naming
    the run's metrics: the flags, else a conventional name present (case-insensitive), else the
    only metric, in file order, whose name implies the role. Keys with no match are left out."""
    given = {"train_metric": train, "val_metric": val, "lr_metric": lr}
    lower = {k.lower(): k for k in columns}
    out: dict[str, str] = {}
    for key, names in _NAMED.items():
        name = given.get(key)
        if name is not None:
            if name not in columns:
                raise ConfigurationError(
                    f"--{key.replace('_', '-')} {name!r} is not in the run; its metrics: "
                    f"{', '.join(sorted(columns)) or 'none'}")
            out[key] = name
            continue
        found = next((lower[n.lower()] for n in names if n.lower() in lower), None)
        if found is not None:
            out[key] = found
    taken = set(out.values())
    for key, fits in _BY_ROLE.items():
        if key in out:
            continue
        candidates = [c for c in columns if c not in taken and fits(c)]
        if len(candidates) == 1:
            out[key] = candidates[0]
            taken.add(candidates[0])
    return out


PLANNED_STEP_KEYS = ("total_steps", "max_steps", "num_training_steps", "num_train_steps",
                     "train_steps", "training_steps", "trainer/max_steps", "max_iters",
                     "total_iters")
"""Parameter names that give a run's planned length in optimizer steps (Hugging Face
``max_steps``, Lightning ``trainer/max_steps``, nanoGPT ``max_iters``, ...)."""


def planned_steps(params: Mapping[str, Any]) -> int | None:
    """The planned length in steps from a run's logged parameters or config; None when no
    such parameter holds a positive whole number (Hugging Face logs ``max_steps=-1`` when the
    length is given in epochs)."""
    for key in PLANNED_STEP_KEYS:
        v = params.get(key)
        if isinstance(v, dict) and "value" in v:  # W&B config entries
            v = v["value"]
        try:
            n = float(v)  # MLflow params are strings
        except (TypeError, ValueError):
            continue
        if n >= 1 and n == int(n):
            return int(n)
    return None
