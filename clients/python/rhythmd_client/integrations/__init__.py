"""Thin wrappers of :class:`~rhythmd_client.RhythmHook` for trainers that own the loop.

- :mod:`rhythmd_client.integrations.lightning`: ``RhythmdCallback`` for PyTorch Lightning
  (and ``RhythmdLogger``, a logger form that streams and advises only).
- :mod:`rhythmd_client.integrations.huggingface`: ``RhythmdTrainerCallback`` for 🤗 Trainer.
- :mod:`rhythmd_client.integrations.accelerate`: ``RhythmdTracker``, a 🤗 Accelerate tracker
  (``Accelerator(log_with=[RhythmdTracker(...)])``).

The callbacks give the hook the model, so snapshots of model, optimizer and scheduler are kept in
memory (bounded by ``snapshot_max_bytes``) and every action is applied, ``rollback`` and
``revert`` included. The trainer's step counter is not rewound: after a rollback to step
``r`` at trainer step ``s`` the stream continues at ``r + 1`` (trainer step minus the steps
rolled back), and the fit still ends at the trainer's own last step.
"""

from __future__ import annotations

import logging
from typing import Any

from rhythmd_client.actions import ACTION_NAMES

log = logging.getLogger("rhythmd_client")

TRAINER_ACTIONS = ACTION_NAMES
"""What a trainer integration may apply by default: every action."""

_SCORE_WORDS = ("acc", "top1", "top5", "f1", "bleu", "auc", "map", "dice", "iou", "precision",
                "recall")

TRAIN_LOSS_NAMES = ("train_loss", "loss", "train/loss", "train_loss_step", "loss_step")
"""Logged names that a logger or tracker streams as the hook's ``loss`` (a step boundary)."""

__all__ = ["TRAINER_ACTIONS", "TRAIN_LOSS_NAMES", "StepMap", "log_once", "metric_roles",
           "plain_config"]


def log_once(failed: set[str], where: str, exc: BaseException) -> None:
    """Log an error in a callback once per place; the trainer never sees it."""
    if where not in failed:
        failed.add(where)
        log.error("rhythmd_client internal error in %s (logged once; training continues)",
                  where, exc_info=exc)


def plain_config(value: Any) -> Any:
    """A JSON-friendly copy of a hyperparameter (other objects as their ``str``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    return str(value)


def metric_roles(names: Any, declared: dict[str, str] | None = None) -> dict[str, str]:
    """Run-config roles: ``declared`` as given, and ``"max"`` for the other ``names`` that
    read as scores (acc, top1, top5, f1, bleu, auc, map, dice, iou, precision, recall)."""
    roles = dict(declared or {})
    for name in names or ():
        low = str(name).lower()
        if name not in roles and any(w in low for w in _SCORE_WORDS):
            roles[name] = "max"
    return roles


class StepMap:
    """Maps the trainer's step counter to the stream's steps across rollbacks.

    ``offset`` is the number of trainer steps rolled back so far: stream step = trainer
    step - offset.
    """

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, trainer_step: int) -> int:
        return trainer_step - self.offset

    def after(self, hook: Any, trainer_step: int) -> None:
        """Call after ``hook.step``: a rollback/revert to ``r`` makes the next trainer step
        (``trainer_step + 1``) stream as ``r + 1``."""
        if hook.rolled_back_to is not None:
            self.offset = trainer_step - hook.rolled_back_to

    def step(self, hook: Any, trainer_step: int, **values: Any) -> bool:
        """``hook.step`` at the mapped step; returns whether the daemon asked to stop."""
        hook.step(self(trainer_step), **values)
        self.after(hook, trainer_step)
        return bool(hook.should_stop)
