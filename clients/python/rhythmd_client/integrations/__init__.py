"""Thin wrappers of :class:`~rhythmd_client.RhythmHook` for trainers that own the loop.

- :mod:`rhythmd_client.integrations.lightning`: ``RhythmdCallback`` for PyTorch Lightning.
- :mod:`rhythmd_client.integrations.huggingface`: ``RhythmdTrainerCallback`` for 🤗 Trainer.

Both apply LR changes and stops. A rollback is rejected (with that reason): the trainer owns
the data position and its step counter, which a rollback would have to rewind; the daemon's
policy then answers a divergence by re-warming to a lower LR instead.
"""

from rhythmd_client.hook import ACTIONS

TRAINER_ACTIONS = ACTIONS - {"rollback"}
"""What a trainer integration may apply by default."""

__all__ = ["TRAINER_ACTIONS"]
