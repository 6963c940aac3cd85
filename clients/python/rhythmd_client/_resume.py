"""Saving the hook with a checkpoint and continuing from it in a resumed job.

:meth:`ResumeMixin.state_dict` is JSON-friendly (numbers, strings, lists, dicts): the run id,
the branch and last recorded step, the LR controller's pending warmup ramps, schedule
override and change records (what ``revert`` needs), the changes applied and the local
reflex's episode. Snapshots are not saved (the checkpoint holds the model): after a resume, a
``revert`` of an earlier change undoes its LR effect only. :class:`ResumeMixin` is part of
:class:`~rhythmd_client.hook.RhythmHook` and works on its state.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

log = logging.getLogger("rhythmd_client")

STATE_VERSION = 1
_KEEP = 64  # applied changes and reflex records saved, newest


class ResumeMixin:
    """The save/resume part of :class:`~rhythmd_client.hook.RhythmHook`."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's state to save next to the model and optimizer in a checkpoint."""
        ctrl = self._ctrl
        recorded = self._i or self._last_step is not None
        return {
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "branch": self.branch,
            "branch_start": self.branch_start,
            "step": self._recorded_step() if recorded else None,
            "should_stop": self.should_stop,
            "controller": ctrl.state_dict() if ctrl is not None else None,
            "applied": copy.deepcopy(self.applied[-_KEEP:]),
            "reflex": {"episode": copy.deepcopy(self._episode),
                       "windows": [list(w) for w in self._windows],
                       "first_loss": self._first_loss,
                       "done": copy.deepcopy(self.reflexes[-_KEEP:])},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output: the same run, the LR changes in force.

        Call after the model, optimizer and scheduler were restored and before the next
        :meth:`step`. The job resumes at the saved step + 1, which the interrupted job may
        have streamed already, so the stream continues on a new branch from there (as after
        a rollback; the daemon's latest view shows each step once). Construct the hook with
        ``run_id=state["run_id"]`` too, or the run it created at start stays empty. Raises
        ``ValueError`` for a state of another version; does nothing in disabled mode.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported RhythmHook state version {state.get('version')!r}")
        if self.disabled:
            return
        run_id = state.get("run_id")
        if isinstance(run_id, str) and self._tr is not None:
            self._tr.attach(run_id)
        self.branch = int(state.get("branch") or 0)
        start = state.get("branch_start")
        self.branch_start = int(start) if start is not None else None
        step = state.get("step")
        if step is not None:
            step = int(step)
            self.branch += 1
            self.branch_start = step + 1
            self._last_step = step
            self._i = 0
            if self._keeper is not None:  # snapshots of before the restore: useless now
                self._keeper.mark_unhealthy_after(-2)
                try:
                    self._keeper.snapshot(step)
                except Exception as exc:
                    self._internal("resume snapshot", exc)
                self._next_snap = (step // self._snap_every + 1) * self._snap_every
            if self._ddp is not None:
                self._next_sync = (step // self._sync_every + 1) * self._sync_every
            self._next_due = min(self._next_snap, self._next_sync)
        self.should_stop = bool(state.get("should_stop", False))
        ctrl_state = state.get("controller")
        if self._ctrl is not None and ctrl_state is not None:
            self._ctrl.load_state_dict(ctrl_state)
            self._pg0 = self.optimizer.param_groups[0]
        self.applied = copy.deepcopy(list(state.get("applied") or []))
        rx = state.get("reflex") or {}
        self._episode = copy.deepcopy(list(rx.get("episode") or []))
        self._windows = [(int(lo), int(hi)) for lo, hi in rx.get("windows") or []]
        first = rx.get("first_loss")
        self._first_loss = float(first) if first is not None else self._first_loss
        self.reflexes = copy.deepcopy(list(rx.get("done") or []))
        self._ctrl_active = self._ctrl is not None and bool(self._ctrl.active)
        self._flag = True  # look at the state at the next step boundary
        log.info("rhythmd: resumed run %s at step %s on branch %d", run_id, step, self.branch)
