"""Which recommendation answers which diagnosis, when to escalate, and when to undo.

The policy is a pure function of the diagnosis events of one batch and the run's context
(latest step and LR, its peak, identified warmup, budget, the open diagnoses, the monitored
series, and every recommendation issued so far with its outcome). It keeps no state of its
own: everything it needs (rollback attempts of the current episode, changes that were
reverted, LR increases, the LR the run diverged at) is read from that history, so any daemon
process decides the same way. It answers only diagnoses still open when it decides, and when
it declines to act it says why (``Decision.notes``).

Rules, in order of precedence:

- **divergence** (opened, or escalated to ``critical``): ``rollback`` to the step before the
  onset with the LR cut by ``cut ** attempt`` and a linear warmup of ``warmup_steps`` (twice
  as long when the evidence says ``near_warmup``); pending softer recommendations are
  cancelled. ``cut`` is ``nonfinite_cut`` (0.1) for a non-finite loss, else ``rollback_cut``
  (0.3). Attempts count within an *episode*: rollbacks less than ``episode_reset_steps``
  apart; a healthy stretch longer than that starts over. A client without snapshots rejects a
  rollback; the policy then falls back to ``warmup`` with the same cut as its peak (issued at
  once when the rejection arrives, :func:`fallback`). A rollback the client's local reflex had
  already superseded is no such rejection. A divergence within the first
  ``start_damage_steps`` steps rolls back to ``to_step=-1``, the initial weights. A relapse
  right after resuming from a restored state goes back before that state. After
  ``max_rollbacks`` attempts in one episode the run is told to ``stop``.
- **guarded changes**: the latest applied LR change (``reduce_lr``, ``increase_lr``,
  ``warmup``, ``set_schedule``) is judged once its effect window (10 % of the budget, at
  least six evaluation intervals) has passed (:mod:`rhythmd.policy.trials`); when the monitored
  metric ended clearly above the level it had when the change came it is reverted
  (``revert``) and that action is not tried again.
- **oscillation** whose cause is a too-large LR (``evidence.cause`` "lr_too_large"):
  ``reduce_lr``. Evaluation noise is diagnosed but never acted on.
- **stagnation** that never got ``never_learned_gain`` (5 %) below its start, with no
  significant trend, past a quarter of the budget or after an applied rollback: ``rollback``
  to the initial weights with the LR cut like a non-finite divergence (a rollback attempt).
- **stagnation**: ``reduce_lr`` by ``reduce_factor`` (``reduce_factor ** 2`` when the loss is
  rising while its best is flat; nothing more when it keeps rising after a cut: over-fitting,
  which no LR change cures, and a stop would freeze the run away from its best). No cut when:
  no LR is reported; the run's own schedule has brought
  the LR below ``schedule_decay_ratio`` of its peak now or since the peak (decay, warm
  restarts; our own changes divided out); in the last ``final_fraction`` of the budget; a cut
  was reverted; the last cut did not measurably help (judged like a trial: a plateau that a
  cut does not move is not the LR's doing); ``max_reductions`` cuts; the LR is at its floor.
- **slow_progress**: ``increase_lr`` by ``target_gain / projected_total_rel_gain``, at least
  ``increase_factor`` and at most ``max_increase`` (x2) at once, at most ``max_increases``
  times, a further one only after the last one measurably helped, never within
  ``diverged_lr_margin`` of an LR the run diverged at, never after a reverted raise, not in
  the last ``final_fraction`` of the budget, and not without an LR stream.
- A stagnation or slow progress that persists is answered again once the last change has had
  a full detection window (the detector's ``window_steps``) to show its effect.
- At most one pending recommendation; none in the cooldown after an applied change
  (``cooldown_steps``), except for divergence.
"""

from __future__ import annotations

import math
from typing import Any

from rhythmd.analysis import DiagnosisEvent
from rhythmd.policy import trials
from rhythmd.policy.history import (
    episode_rollbacks,
    failed_changes,
    rejected_no_snapshot,
    user_decayed,
)
from rhythmd.policy.types import Decision, PolicyConfig, RecommendationSpec, RunContext

__all__ = ["Decision", "PolicyConfig", "RecommendationSpec", "RunContext", "answerable",
           "decide", "fallback"]

PERSISTENT = ("stagnation", "slow_progress")
"""Diagnoses answered again while they persist, a detection window after the last change."""
LR_CHANGES = ("reduce_lr", "warmup", "set_schedule", "increase_lr", "rollback")
LR_CAUSE = "lr_too_large"
"""``evidence.cause`` of an oscillation that a too-large LR causes (the oscillation detector's
only other cause is ``eval_noise``)."""


def _budget(cfg_value: int | None, total: int | None, frac: float, floor: int,
            fallback: int) -> int:
    if cfg_value is not None:
        return int(cfg_value)
    return max(floor, int(frac * total)) if total else fallback


def answerable(events: list[DiagnosisEvent]) -> list[DiagnosisEvent]:
    """The events :func:`decide` may answer: openings, and updates of a critical diagnosis
    or of a persistent one (stagnation, slow progress). For other events it issues and
    cancels nothing, whatever the context, so a caller may skip building the context."""
    return [e for e in events if e.type == "opened"
            or (e.type == "updated" and (e.diagnosis.severity == "critical"
                                         or e.diagnosis.kind in PERSISTENT))]


def decide(events: list[DiagnosisEvent], ctx: RunContext, cfg: PolicyConfig) -> Decision:
    """The recommendations answering this batch's diagnosis events, and the revert of an
    applied change that made things worse (see module docstring)."""
    out = Decision()
    hist = ctx.history
    triggers = [e for e in answerable(events)
                if ctx.open_diagnosis_ids is None or e.diagnosis.id in ctx.open_diagnosis_ids
                or (e.diagnosis.kind == "divergence" and e.diagnosis.severity == "critical")]
    pending = [h for h in hist if h["status"] == "pending"]
    applied = [h for h in hist if h["status"] == "applied" and h.get("applied_step") is not None]
    cooldown = _budget(cfg.cooldown_steps, ctx.total_steps, 0.04, 20, 40)
    expire = ctx.step + _budget(cfg.expire_steps, ctx.total_steps, 0.10, 50, 100)
    last_change = max((h["applied_step"] for h in applied if h["action"] in LR_CHANGES),
                      default=None)
    cooling = last_change is not None and ctx.step - last_change < cooldown

    # the latest state of the divergence in this batch: a blow-up opened and turned
    # non-finite between two flushes must be answered as non-finite (a far-too-large LR)
    divergence = next((e for e in reversed(triggers) if e.diagnosis.kind == "divergence"), None)
    if divergence is not None:
        return _answer_divergence(divergence.diagnosis, ctx, cfg, pending, cooldown, expire)

    if pending:
        return out
    revert = _revert(ctx, cfg, applied, expire)
    if revert is not None:
        out.issue.append(revert)
        return out
    if cooling:
        return out
    floor = (ctx.first_lr if ctx.first_lr and math.isfinite(ctx.first_lr) else 0.0) \
        * cfg.min_lr_ratio
    failed = failed_changes(hist)
    late = bool(ctx.total_steps) and ctx.step >= (1 - cfg.final_fraction) * ctx.total_steps
    for e in triggers:
        d = e.diagnosis
        if d.kind == "oscillation" and d.evidence.get("cause") == LR_CAUSE:
            if "reduce_lr" in failed:
                out.notes.append(f"{d.id}: a cut was reverted before; not cutting again")
                continue
            out.issue.append(_reduce(d, ctx, cfg, cooldown, expire, "oscillation"))
            return out
        if d.kind in PERSISTENT and e.type == "updated":
            # still flat (or still too slow): act again only once the last change (or the
            # last answer to this diagnosis, applied or not) had a full detection window of
            # evaluations to show its effect (ReduceLROnPlateau's patience, in the detector's
            # own terms)
            window = d.evidence.get("window_steps")
            answered = [h.get("issued_at_step") for h in hist
                        if h.get("diagnosis_id") == d.id and h.get("issued_at_step") is not None]
            since = max([x for x in (last_change, *answered) if x is not None], default=None)
            if not isinstance(window, (int, float)) or (
                    since is not None and ctx.step - since < window):
                continue
        if d.kind == "stagnation" and _never_learned(d.evidence, ctx, cfg):
            spec = _restart(d, hist, ctx, cfg, expire)
            if spec is not None:
                out.issue.append(spec)
                return out
        if d.kind == "stagnation":
            spec = _answer_stagnation(d, ctx, cfg, applied, failed, late, floor, cooldown,
                                      expire, out.notes)
            if spec is not None:
                out.issue.append(spec)
                return out
            continue
        if d.kind == "slow_progress":
            if late:
                out.notes.append(f"{d.id}: too late in the budget for a raise to pay off")
                continue
            spec = _increase(d, ctx, hist, cfg, expire, failed, out.notes)
            if spec is None:
                continue
            out.issue.append(spec)
            return out
    return out


def _answer_divergence(d: Any, ctx: RunContext, cfg: PolicyConfig,
                       pending: list[dict[str, Any]], cooldown: int, expire: int) -> Decision:
    """Rollback (or, without snapshots, a re-warm) with the cut escalating per episode."""
    out = Decision()
    if any(h["action"] in ("rollback", "stop") for h in pending):
        return out
    hist = ctx.history
    out.cancel = [h["id"] for h in pending]
    rollbacks = [h for h in hist if h["action"] == "rollback" and h["status"] != "expired"]
    reset = _budget(cfg.episode_reset_steps, ctx.total_steps, 0.10, 100, 200)
    episode = episode_rollbacks(rollbacks, ctx.step, reset)
    attempt = len(episode) + 1
    if attempt > cfg.max_rollbacks:
        out.issue.append(RecommendationSpec(
            "stop", {}, f"{d.message}; {cfg.max_rollbacks} rollbacks in a row did not cure it",
            d.id, None))
        return out
    nonfinite = d.evidence.get("test") == "nonfinite" or d.severity == "critical"
    cut = (cfg.nonfinite_cut if nonfinite else cfg.rollback_cut) ** attempt
    warm = _budget(cfg.warmup_steps, ctx.total_steps, 0.03, 10, 30)
    # A divergence from the very first steps means the first updates broke the model:
    # every later snapshot holds the damage, so restart from the initial weights (the
    # client's snapshot labelled step -1).
    to_step = -1 if d.onset_step <= cfg.start_damage_steps else int(d.onset_step) - 1
    near_warmup = bool(d.evidence.get("near_warmup")) or ctx.in_warmup or (
        ctx.warmup_end_step is not None and d.onset_step - ctx.warmup_end_step <= 2 * warm)
    if near_warmup:
        warm *= 2
    no_snapshots = any(rejected_no_snapshot(h) for h in hist)
    where = " during or right after warmup" if near_warmup else ""
    restored = _relapse(rollbacks, ctx.branch_start_step, d.onset_step, cooldown + warm)
    if restored is not None and to_step >= restored:
        # diverged again right after resuming from the state restored at step ``restored``:
        # that state was already damaged (a divergence shows some steps after it began), so
        # a smaller LR from the same snapshot fails again; go one snapshot further back
        to_step = restored - 1 if restored - 1 > cfg.start_damage_steps else -1
        where += f", right after resuming from the state of step {restored}"
    if no_snapshots:
        out.issue.append(RecommendationSpec(
            "warmup", {"warmup_steps": warm, "start_factor": round(cut / 10, 6),
                       "peak_factor": round(cut, 6)},
            f"{d.message}{where}; no snapshot to roll back to: re-warm to {cut:.2g}x the LR",
            d.id, expire))
    else:
        out.issue.append(RecommendationSpec(
            "rollback", {"to_step": to_step, "lr_factor": round(cut, 6), "warmup_steps": warm},
            f"{d.message}{where}; attempt {attempt}/{cfg.max_rollbacks} of this episode: roll "
            "back " + ("to the initial weights" if to_step < 0 else f"before step {to_step + 1}")
            + f", LR x{cut:.2g} with {warm} warmup steps", d.id, expire))
    return out


def fallback(rejected: dict[str, Any]) -> RecommendationSpec | None:
    """What answers a divergence once the client rejected the rollback (no snapshot): a cut
    plus a re-warm with the rollback's own cut as its peak. None for anything else."""
    if rejected.get("author", "rhythmd") != "rhythmd" or not rejected_no_snapshot(
            {**rejected, "status": "rejected"}):
        return None
    p = rejected.get("params") or {}
    cut = float(p.get("lr_factor", 1.0))
    warm = int(p.get("warmup_steps") or 0) or 30
    return RecommendationSpec(
        "warmup", {"warmup_steps": warm, "start_factor": round(cut / 10, 6),
                   "peak_factor": round(cut, 6)},
        f"the rollback was rejected ({rejected.get('note') or 'no snapshot'}): re-warm to "
        f"{cut:.2g}x the LR instead", rejected.get("diagnosis_id"), rejected.get("expires_at_step"))


def _answer_stagnation(d: Any, ctx: RunContext, cfg: PolicyConfig,
                       applied: list[dict[str, Any]], failed: set[str], late: bool,
                       floor: float, cooldown: int, expire: int,
                       notes: list[str]) -> RecommendationSpec | None:
    hist = ctx.history
    cuts = [h for h in applied if h["action"] == "reduce_lr"]
    if any(h["action"] == "stop" and h["status"] != "expired" for h in hist):
        return None
    rising = _rising(d.evidence) >= cfg.overfit_rise_per_1k
    if rising and cuts:
        # still rising after a cut: over-fitting, which a smaller LR does not cure. A stop
        # would freeze the run where it stands (not at its best) and take away a later
        # recovery: say so and leave the decision to the user
        notes.append(f"{d.id}: no action: the monitored metric keeps rising after "
                     f"{len(cuts)} cut(s): over-fitting, not an LR problem (early stopping "
                     "with the best checkpoint is the user's call)")
        return None
    why_not = ""
    user = user_decayed(ctx)
    if ctx.lr is None:
        why_not = "no LR is reported: whether the run's own schedule decays is unknown"
    elif late:
        why_not = "in the last part of the budget a cut cannot pay off"
    elif user is not None and user < cfg.schedule_decay_ratio:
        why_not = (f"the run's own schedule is decaying (LR at {user:.0%} of its peak): "
                   "flat in a decay is not an LR problem")
    elif "reduce_lr" in failed:
        why_not = "a cut was tried and reverted (it made things worse)"
    elif cuts and (helped := _helped(ctx, cuts[-1], cfg)) is not True:
        why_not = ("the last cut has not had its effect window yet" if helped is None else
                   "the last cut did not measurably help: the plateau is not the LR's doing")
    elif len(cuts) >= cfg.max_reductions:
        why_not = f"{len(cuts)} cuts did not restart progress"
    elif ctx.lr is not None and ctx.lr <= floor:
        why_not = "the LR is at its floor"
    if why_not:
        notes.append(f"{d.id}: no action: {why_not}")
        return None
    if rising:
        # the monitored loss is rising, not flat (over-fitting or a too-large LR):
        # a gentle cut keeps it rising; cut like ReduceLROnPlateau (x reduce_factor^2)
        return _reduce(d, ctx, cfg, cooldown, expire, "loss rising while flat at its best",
                       cfg.reduce_factor ** 2)
    return _reduce(d, ctx, cfg, cooldown, expire, "stagnation")


def _effect_window(ctx: RunContext) -> int:
    """Steps a change needs to show its effect: 10 % of the budget (200 without one), and at
    least six evaluation intervals of the monitored series."""
    window = _budget(None, ctx.total_steps, 0.10, 8, 200)
    steps = ctx.monitored[0] if ctx.monitored is not None else []
    if len(steps) >= 2:
        gaps = sorted(b - c for b, c in zip(steps[1:], steps[:-1], strict=True))
        window = max(window, 6 * gaps[len(gaps) // 2])
    return window


def _helped(ctx: RunContext, change: dict[str, Any], cfg: PolicyConfig) -> bool | None:
    """Whether an applied change measurably helped (the metric ended below the projection of
    its pre-change trend by more than the noise); None until that can be judged (no series,
    or the effect window not over). A further plateau cut needs the last one to have helped."""
    if ctx.monitored is None:
        return True  # nothing to judge with (offline callers): the cut count still bounds it
    v = trials.judge(*ctx.monitored, int(change["applied_step"]), _effect_window(ctx),
                     z=cfg.trial_z, min_rel=cfg.trial_min_rel)
    return None if v is None else v.verdict == "better"


def _revert(ctx: RunContext, cfg: PolicyConfig, applied: list[dict[str, Any]],
            expire: int) -> RecommendationSpec | None:
    """``revert`` the latest applied LR change when the monitored metric ended worse than the
    projection of its pre-change trajectory (see :mod:`rhythmd.policy.trials`)."""
    if ctx.monitored is None:
        return None
    hist = ctx.history
    changes = [h for h in applied if h["action"] in trials.TRIAL_ACTIONS]
    if not changes:
        return None
    last = changes[-1]
    a = int(last["applied_step"])
    done = {(h.get("params") or {}).get("change_id") for h in hist if h["action"] == "revert"}
    later = [h for h in applied if h["action"] in ("rollback", "revert")
             and hist.index(h) > hist.index(last)]
    if last["id"] in done or later:
        return None
    steps, values = ctx.monitored
    window = _effect_window(ctx)
    v = trials.judge(steps, values, a, window, z=cfg.trial_z, min_rel=cfg.trial_min_rel)
    if v is None or v.verdict != "worse":
        return None
    p = last.get("params") or {}
    what = last["action"] + (f" x{p['factor']:g}" if isinstance(p.get("factor"), (int, float))
                             else "")
    return RecommendationSpec(
        "revert", {"to_step": a, "change_id": last["id"]},
        f"{what} at step {a} made things worse: the monitored metric ended "
        f"{v.describe()}; revert it", last.get("diagnosis_id"), expire)


def _relapse(rollbacks: list[dict[str, Any]], branch_start: int | None, onset: int,
             window: int) -> int | None:
    """The step of the state the last rollback restored (the current branch resumed after it)
    when a divergence with this ``onset`` began within ``window`` steps of resuming (a
    relapse); None otherwise, or when that state was the initial weights."""
    if branch_start is None or branch_start < 1:
        return None
    if not any(h["action"] == "rollback" and h["status"] == "applied" for h in rollbacks):
        return None
    return branch_start - 1 if onset <= branch_start + window else None


def _never_learned(ev: dict[str, Any], ctx: RunContext, cfg: PolicyConfig) -> bool:
    """A flat monitored loss that never got meaningfully below its first evaluation, with no
    significant trend, after a quarter of the declared budget or after a rollback: the model
    learned nothing (dead or saturated units after a far-too-large LR; a too-small LR shows as a
    significant slow decline, ``slow_progress``, instead). Early plateaus at the starting level
    that some models go through before they learn are left to the plain stagnation rule, unless
    the run already diverged (then the LR is known to be far too large)."""
    p_dec, gained = ev.get("mk_p_decrease"), ev.get("rel_gain_from_start")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (p_dec, gained)):
        return False
    diverged = any(h["action"] == "rollback" and h["status"] == "applied" for h in ctx.history)
    if not diverged and (not ctx.total_steps or ctx.step < 0.25 * ctx.total_steps):
        return False
    return float(gained) < cfg.never_learned_gain and float(p_dec) > 0.05  # type: ignore[arg-type]


def _restart(d: Any, hist: list[dict[str, Any]], ctx: RunContext, cfg: PolicyConfig,
             expire: int) -> RecommendationSpec | None:
    """Restart from the initial weights with the LR cut like a non-finite divergence (it
    counts as a rollback attempt); None (the plain stagnation rule applies) once
    ``max_rollbacks`` were spent or when the client keeps no snapshots."""
    rollbacks = [h for h in hist if h["action"] == "rollback" and h["status"] != "expired"]
    attempt = len(rollbacks) + 1
    if attempt > cfg.max_rollbacks or any(rejected_no_snapshot(h) for h in hist):
        return None
    cut = cfg.nonfinite_cut ** attempt
    warm = _budget(cfg.warmup_steps, ctx.total_steps, 0.03, 10, 30)
    return RecommendationSpec(
        "rollback", {"to_step": -1, "lr_factor": round(cut, 6), "warmup_steps": warm},
        f"{d.message}; never got below its first evaluation: the model learned nothing (a "
        f"far-too-large LR kills or saturates units); attempt {attempt}/{cfg.max_rollbacks}: "
        f"restart from the initial weights, LR x{cut:.2g} with {warm} warmup steps",
        d.id, expire)


def _increase(d: Any, ctx: RunContext, hist: list[dict[str, Any]], cfg: PolicyConfig,
              expire: int, failed: set[str], notes: list[str]) -> RecommendationSpec | None:
    """``increase_lr`` for slow progress: by ``target_gain / projected gain`` (progress of a
    too-small LR is roughly proportional to it), between ``increase_factor`` and
    ``max_increase``; never above a LR the run diverged at (within ``diverged_lr_margin``),
    never after a reverted raise, at most ``max_increases`` times."""
    factor = cfg.increase_factor
    gain = d.evidence.get("projected_total_rel_gain")
    if isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0:
        factor = max(factor, cfg.target_gain / gain)
    elif isinstance(gain, (int, float)) and math.isfinite(gain):
        factor = cfg.max_increase  # no projected progress at all
    factor = min(factor, cfg.max_increase)
    increases = [h for h in hist if h["action"] == "increase_lr" and h["status"] != "expired"]
    why_not = ""
    if ctx.lr is None:
        why_not = "no LR is reported"
    elif "increase_lr" in failed:
        why_not = "a raise was tried and reverted"
    elif len(increases) >= cfg.max_increases:
        why_not = f"{len(increases)} raises already"
    raises = [h for h in hist if h["action"] == "increase_lr" and h["status"] == "applied"
              and h.get("applied_step") is not None]
    if not why_not and raises and (helped := _helped(ctx, raises[-1], cfg)) is not True:
        why_not = ("the last raise has not had its effect window yet" if helped is None else
                   "the last raise did not measurably help")
    diverged = [float(h["lr_before"][0]) for h in hist
                if h["action"] in ("rollback", "warmup") and h["status"] == "applied"
                and isinstance(h.get("lr_before"), list) and h["lr_before"]
                and isinstance(h["lr_before"][0], (int, float)) and h["lr_before"][0] > 0]
    if not why_not and diverged:
        ceiling = min(diverged) / cfg.diverged_lr_margin
        if ctx.lr is None or ctx.lr <= 0:
            why_not = "the run diverged before and its LR is unknown"
        else:
            factor = min(factor, ceiling / ctx.lr)
            if factor < 1.01:
                why_not = (f"the run diverged at LR {min(diverged):.3g}: no raise within "
                           f"x{cfg.diverged_lr_margin:g} of it")
    elif not why_not and any(h["action"] == "rollback" for h in hist):
        why_not = "the run diverged before, at an LR it did not report"
    if why_not:
        notes.append(f"{d.id}: no raise: {why_not}")
        return None
    factor = round(min(max(factor, 1.01), 100.0), 4)
    return RecommendationSpec(
        "increase_lr", {"factor": factor},
        f"{d.message}; raise the LR x{factor:g} (a guarded trial: reverted if the metric ends "
        "worse than its projection)", d.id, expire)


def _rising(ev: dict[str, Any]) -> float:
    """Relative rise of a monitored loss per 1,000 steps from stagnation evidence (Theil-Sen
    slope over the best value); 0 when unknown or for a higher-is-better metric."""
    slope, best = ev.get("theil_sen_slope_per_step"), ev.get("best_value")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (slope, best)) or best <= 0:  # type: ignore[operator]
        return 0.0
    return float(slope) * 1000.0 / float(best)  # type: ignore[arg-type]


def _reduce(d: Any, ctx: RunContext, cfg: PolicyConfig, cooldown: int, expire: int,
            why: str, factor: float | None = None) -> RecommendationSpec:
    factor = round(cfg.reduce_factor if factor is None else factor, 6)
    params: dict[str, Any] = {"factor": factor, "cooldown": cooldown}
    if ctx.first_lr is not None and math.isfinite(ctx.first_lr) and ctx.first_lr > 0:
        params["min_lr"] = ctx.first_lr * cfg.min_lr_ratio
    return RecommendationSpec("reduce_lr", params, f"{d.message}; cut the LR x{factor:g} ({why})",
                              d.id, expire)
