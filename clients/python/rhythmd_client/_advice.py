"""How the hook takes the daemon's advice: decide, apply or reject, acknowledge; DDP rounds.

A recommendation is applied at a step boundary when the hook is in apply mode, the action is
allowed, not stale (``expires_at_step``) and not superseded by the local reflex; otherwise it
is acknowledged as rejected with the reason. Under DDP the streaming rank decides and every
rank applies the same decisions one exchange later. :class:`AdviceMixin` is part of
:class:`~rhythmd_client.hook.RhythmHook` and works on its state.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from rhythmd_client._ddp import DecisionSync
from rhythmd_client.actions import LR_CHANGES
from rhythmd_client.apply import RecommendationRejected

log = logging.getLogger("rhythmd_client")

SUPERSEDABLE = frozenset({"rollback", "warmup"})
"""Advice the local reflex answers itself when it was issued for the steps it handled."""


class AdviceMixin:
    """The advice part of :class:`~rhythmd_client.hook.RhythmHook` (its state lives there)."""

    @staticmethod
    def _detect_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
        """(rank, world size): as given, else from an initialised ``torch.distributed``."""
        if rank is not None:
            return int(rank), int(world_size or 1)
        torch = sys.modules.get("torch")  # never import torch just to look
        dist = getattr(torch, "distributed", None) if torch is not None else None
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, int(world_size or 1)

    def _make_ddp(self, process_group: Any) -> Any:
        """The decision exchange between ranks (a gloo group: CPU tensors, no GPU sync)."""
        import torch.distributed as dist

        group = process_group
        if group is None and dist.get_backend() != "gloo":
            group = dist.new_group(backend="gloo")  # CPU tensors: no GPU sync to read them
        return DecisionSync(self.rank, group, src=self.stream_rank)  # src: a global rank

    def _decide(self, rec: dict[str, Any], step: int) -> str | None:
        """Reason to reject ``rec`` at ``step``, or None to apply it."""
        action = rec.get("action")
        if self.mode == "advise":
            return "advise mode"
        if action not in self.allow:
            return f"action {action!r} not allowed by this hook"
        expires = rec.get("expires_at_step")
        if isinstance(expires, int) and expires < step:
            return f"stale: expired at step {expires}, now at step {step}"
        if self._ctrl is None and action != "stop":
            return "no optimizer given to the hook"
        if action == "rollback" and "too_large" in self._logged:
            return "no snapshots: model + optimizer state exceed snapshot_max_bytes"
        issued = rec.get("issued_at_step")
        if action in SUPERSEDABLE and isinstance(issued, int) and any(
                lo < issued <= hi for lo, hi in self._windows):
            return "superseded by local reflex"
        return None

    def _handle(self, rec: dict[str, Any], step: int, agreed: bool, loss: Any = None) -> None:
        """Apply (or reject) one recommendation at this step boundary; the streaming rank
        acks."""
        rid, action = str(rec.get("id")), str(rec.get("action"))
        params = rec.get("params") or {}
        if not agreed:
            reason = self._decide(rec, step)
            if reason is not None:
                self._reject(rid, action, step, reason, rec)
                return
        lrs = self._lrs_now()
        if action == "stop":
            self.should_stop = True
            self._accept(rid, action, step, lrs, lrs, "stop requested")
            return
        try:
            self._ctrl.on_step(step)  # bring the controller's step/host copies up to date
            if action in LR_CHANGES:  # a change point: revertible, with a snapshot if kept
                done = self._ctrl.apply(action, params, step, change_id=rid,
                                        snapshot=self._healthy(loss))
                self._after_forced_snapshot(step)
                self._check_too_large()
            else:
                done = self._ctrl.apply(action, params, step)
        except RecommendationRejected as exc:
            self._reject(rid, action, step, exc.reason, rec)
            return
        except Exception as exc:
            self._internal("apply", exc)
            self._reject(rid, action, step, f"internal error: {type(exc).__name__}: {exc}", rec)
            return
        self._pg0 = self.optimizer.param_groups[0]  # load_state_dict replaces the groups
        if done.restored:
            self._new_branch(int(done.step))
        if getattr(self._ctrl, "stop_requested", False):
            self.should_stop = True
        self._accept(rid, action, step, list(done.lr_before), list(done.lr_after), done.note)

    def _new_branch(self, restored: int) -> None:
        """Continue on a new branch after model/optimizer were restored to step ``restored``.

        The daemon's branch view is parent steps < start + new-branch steps >= start, and the
        snapshot holds the state *after* step ``restored``: the new branch starts at the step
        after it, so every step shows exactly once in the latest view."""
        self.branch += 1
        self.branch_start = restored + 1
        self.rolled_back_to = restored
        self.resume_step = restored + 1
        self._rollbacks += 1
        if self._keeper is not None:
            self._next_snap = (restored // self._snap_every + 1) * self._snap_every
        if self._ddp is not None:
            self._next_sync = (restored // self._sync_every + 1) * self._sync_every

    def _after_forced_snapshot(self, step: int) -> None:
        """A change point's snapshot counts as the periodic one: none more at this step."""
        keeper = self._keeper
        if keeper is not None and keeper.steps and keeper.steps[-1] == step:
            self._next_snap = max(self._next_snap,
                                  (step // self._snap_every + 1) * self._snap_every)

    def _lrs_now(self) -> list[float]:
        if self._ctrl is None:
            return []
        try:
            return list(self._ctrl.current_lrs())
        except Exception:
            return []

    def _accept(self, rid: str, action: str, step: int, before: list[float],
                after: list[float], note: str) -> None:
        self._counts["recs_applied"] += 1
        self.applied.append({"id": rid, "action": action, "step": step, "lr_before": before,
                             "lr_after": after, "note": note})
        log.warning("rhythmd applied %s at step %d: %s", action, step, note)
        if self._tr is not None:
            self._tr.ack(rid, {"status": "applied", "step": step, "lr_before": before,
                               "lr_after": after, "note": note})

    def _reject(self, rid: str, action: str, step: int, reason: str,
                rec: dict[str, Any]) -> None:
        self._counts["recs_rejected"] += 1
        lrs = self._lrs_now()
        if reason == "advise mode":
            log.warning("rhythmd recommends %s %s at step %d: %s", action,
                        json.dumps(rec.get("params") or {}), step, rec.get("reason", ""))
        else:
            log.warning("rhythmd recommendation %s (%s) rejected: %s", rid, action, reason)
        if self._tr is not None:
            self._tr.ack(rid, {"status": "rejected", "step": step, "lr_before": lrs,
                               "lr_after": lrs, "note": reason})

    def _ddp_round(self, step: int) -> list[dict[str, Any]] | None:
        """Every rank, every K steps: apply the streaming rank's previous decision; it
        proposes the next."""
        payload = None
        if self.streaming:
            try:
                payload = self._ddp_decide(step)
            except Exception as exc:  # still enter the collective, with "none"
                self._internal("ddp decide", exc)
                payload = None
        raw = self._ddp.exchange(payload)
        if not raw:
            return None
        return json.loads(raw)

    def _ddp_decide(self, step: int) -> bytes | None:
        """Streaming rank: pick what to apply one round from now; reject the rest."""
        if self._tr is None or not self._tr.has_recs:
            return None
        chosen = []
        for rec in self._tr.take_recommendations():
            reason = self._decide(rec, step)
            if reason is not None:
                self._reject(str(rec.get("id")), str(rec.get("action")), step, reason, rec)
                continue
            chosen.append({"id": rec.get("id"), "action": rec.get("action"),
                           "params": rec.get("params") or {}})
        return json.dumps(chosen).encode() if chosen else None
