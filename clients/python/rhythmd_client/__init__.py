"""rhythmd client: stream loss/LR from a PyTorch loop to a rhythmd daemon and apply its advice.

``RhythmHook`` is the public entry point; ``LRController``/``SnapshotKeeper`` (in ``apply`` and
``snapshot``) do the optimizer surgery and rollback snapshots. Importing this package never
imports torch.
"""

from rhythmd_client.hook import ACTIONS, RhythmHook
from rhythmd_client.transport import Transport

__all__ = ["ACTIONS", "RhythmHook", "Transport"]
__version__ = "0.1.0"
