"""What the policy reads and returns: its parameters, the run's context, its decisions."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PolicyConfig:
    """Per-run policy parameters (override with the run config's ``"policy"`` dict).

    Steps are optimizer steps; factors are relative to each param group's LR when applied.
    """

    reduce_factor: float = 0.3  # reduce_lr on stagnation / LR-caused oscillation
    min_lr_ratio: float = 1e-3  # LR floor, relative to the first LR reported
    max_reductions: int = 3  # cuts followed by another stagnation before stop
    overfit_rise_per_1k: float = 0.1  # stagnation with the monitored loss rising by this
    # fraction of its best value per 1,000 steps (over-fitting): cut by reduce_factor ** 2
    rollback_cut: float = 0.3  # attempt k multiplies the LR by rollback_cut ** k
    nonfinite_cut: float = 0.1  # the same for a non-finite loss (a far-too-large LR)
    max_rollbacks: int = 5  # then stop
    increase_factor: float = 2.0  # smallest increase_lr (slow progress: too small an LR)
    target_gain: float = 0.5  # slow progress: raise the LR so the projected relative gain
    # by the end of the budget reaches this (factor = target_gain / projected gain) ...
    max_increase: float = 2.0  # ... but by at most this factor at once (each a guarded trial)
    max_increases: int = 4
    never_learned_gain: float = 0.05  # stagnation less than this fraction below the first
    # evaluation, without a significant trend: restart from the initial weights (rollback to
    # step -1) with the LR cut like a non-finite divergence
    start_damage_steps: int = 5  # a divergence with onset <= this step broke the model in
    # its first updates: roll back to the initial weights (to_step=-1)
    diverged_lr_margin: float = 10.0  # never raise the LR above (LR of a divergence) / this
    episode_reset_steps: int | None = None  # divergence answers further apart than this
    # (steps) start a new episode, whose escalation starts over; default max(100, 10% of
    # total_steps or 200)
    schedule_decay_ratio: float = 0.9  # the user's schedule is decaying once it brought the LR
    # below this fraction of its peak (our own changes divided out): no plateau cuts then
    final_fraction: float = 0.1  # no plateau cut or raise in the last fraction of the budget
    trial_z: float = 2.0  # a change is reverted when the metric ends this many noise sigmas
    trial_min_rel: float = 0.02  # ... and at least this relative amount worse than projected
    cooldown_steps: int | None = None  # default: max(20, 4% of total_steps or 40)
    warmup_steps: int | None = None  # default: max(10, 3% of total_steps or 30)
    expire_steps: int | None = None  # default: max(50, 10% of total_steps or 100)

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any] | None) -> PolicyConfig:
        cfg = cls()
        overrides = (run_config or {}).get("policy")
        if isinstance(overrides, dict):
            for key, value in overrides.items():
                if key in cfg.__dataclass_fields__ and isinstance(value, (int, float)) \
                        and not isinstance(value, bool) and math.isfinite(value) and value > 0:
                    setattr(cfg, key, type(getattr(cfg, key) or 0)(value)
                            if getattr(cfg, key) is not None else int(value))
        cfg.reduce_factor = min(max(cfg.reduce_factor, 1e-3), 0.99)
        cfg.rollback_cut = min(max(cfg.rollback_cut, 1e-3), 0.99)
        cfg.nonfinite_cut = min(max(cfg.nonfinite_cut, 1e-3), 0.99)
        cfg.increase_factor = min(max(cfg.increase_factor, 1.01), 100.0)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunContext:
    """What the policy knows about the run when it decides."""

    step: int  # latest step received
    lr: float | None = None  # latest reported LR (first param group), absolute
    first_lr: float | None = None  # first reported LR
    total_steps: int | None = None  # planned budget, if the run declared it
    in_warmup: bool = False
    warmup_end_step: int | None = None
    branch_start_step: int | None = None  # first step of the branch the last rollback began
    peak_lr: float | None = None  # highest LR reported so far, absolute
    min_lr_after_peak: float | None = None  # lowest LR reported since that peak, absolute
    open_diagnosis_ids: set[str] | None = None  # diagnoses still open after the batch
    monitored: tuple[list[int], list[float]] | None = None  # the monitored series (steps,
    # oriented values: lower is better), for judging applied changes
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every recommendation issued so far, oldest first: ``action``, ``status``,
    ``issued_at_step``, ``applied_step``, ``note``, ``id``, ``diagnosis_id``, ``params``,
    ``lr_before``, ``lr_after``."""


@dataclass
class RecommendationSpec:
    action: str
    params: dict[str, Any]
    reason: str
    diagnosis_id: str | None
    expires_at_step: int | None


@dataclass
class Decision:
    issue: list[RecommendationSpec] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # ids of pending recommendations
    notes: list[str] = field(default_factory=list)  # why a diagnosis got no action
