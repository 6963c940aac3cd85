"""rhythmd client: stream loss/LR from a PyTorch loop to a rhythmd daemon and apply its advice.

``RhythmHook`` is the public entry point; ``ACTIONS`` is the recommendation vocabulary
(action -> parameter names); ``Transport`` is the background sender the hook uses.
``LRController``/``SnapshotKeeper`` (in ``apply`` and ``snapshot``) do the optimizer surgery
and rollback snapshots. Importing this package never imports torch.
"""

from rhythmd_client.actions import ACTIONS
from rhythmd_client.hook import RhythmHook
from rhythmd_client.transport import Transport

__all__ = ["ACTIONS", "RhythmHook", "Transport"]
__version__ = "0.1.0"
