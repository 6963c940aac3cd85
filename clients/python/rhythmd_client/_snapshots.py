"""The hook's LR controller and in-memory snapshots: setup, periodic snapshots, health.

Snapshots (model, optimizer, scheduler; bounded by ``snapshot_max_bytes``) are taken every
``snapshot_every`` steps while the run looks healthy, so ``rollback``, ``revert`` and the
local reflex can restore one. :class:`SnapshotMixin` is part of
:class:`~rhythmd_client.hook.RhythmHook` and works on its state.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from rhythmd_client.apply import LRController
from rhythmd_client.snapshot import SnapshotKeeper

log = logging.getLogger("rhythmd_client")


class SnapshotMixin:
    """The controller/snapshot part of :class:`~rhythmd_client.hook.RhythmHook`."""

    def _setup_controller(self, optimizer: Any, scheduler: Any, model: Any, min_lr: Any,
                          max_lr: Any, snapshot_every: int, snapshot_max_bytes: int) -> None:
        """The LR controller on ``optimizer``/``scheduler``, with snapshots when ``model``."""
        if model is not None:
            try:
                self._keeper = SnapshotKeeper(model, optimizer, scheduler,
                                              max_bytes=snapshot_max_bytes,
                                              every_steps=snapshot_every)
            except Exception as exc:
                self._internal("snapshots", exc)
        self._ctrl = LRController(optimizer, scheduler, min_lr=min_lr, max_lr=max_lr,
                                  snapshots=self._keeper)

    def _snapshot(self, step: int, loss: Any) -> None:
        """The periodic snapshot at ``step`` (kept only while the run looks healthy)."""
        self._next_snap = (step // self._snap_every + 1) * self._snap_every
        self._keeper.maybe_snapshot(step, self._healthy(loss))
        self._check_too_large()

    def _check_too_large(self) -> None:
        """Once the state outgrew ``snapshot_max_bytes``, keep no snapshot at all (warn once):
        an old one, such as the initial weights, would undo far more than a rollback means
        to. Rollbacks are then rejected (the daemon falls back to a cut plus re-warm), the
        reflex cuts and re-warms, and reverts undo the LR only."""
        keeper = self._keeper
        if keeper is None or not keeper.skipped["too_large"] or "too_large" in self._logged:
            return
        self._logged.add("too_large")
        keeper.mark_unhealthy_after(-2)  # drops every snapshot
        log.warning("rhythmd: model + optimizer state exceed snapshot_max_bytes (%d bytes); "
                    "no snapshots are kept, so rollbacks are rejected and the daemon falls "
                    "back to a cut plus re-warm", keeper.max_bytes)

    def _healthy(self, loss: Any) -> bool:
        """Whether the state now is worth a snapshot, judged on the host values known."""
        if type(loss) is float and not -math.inf < loss <= self._bound:
            return False
        # last loss values the sender read were not finite
        return not (self._ddp is None and self._tr is not None and self._tr.loss_finite is False)
