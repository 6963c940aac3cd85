"""Do no harm: guarded changes are reverted when they hurt, schedules that decay are left
alone, raises stay away from a diverging LR, and only what is still wrong is answered."""

from __future__ import annotations

import math

import numpy as np

from rhythmd.analysis import Diagnosis, DiagnosisEvent
from rhythmd.policy import PolicyConfig, RunContext, decide, fallback, judge
from rhythmd.recommendations import validate_action

CFG = PolicyConfig()


def event(kind: str, *, step: int = 500, type_: str = "opened", ident: str | None = None,
          **evidence) -> DiagnosisEvent:
    d = Diagnosis(id=ident or f"{kind}-1", kind=kind, metric="val_loss", detected_at_step=step,
                  onset_step=step - 10, severity="warning", confidence=0.9, evidence=evidence,
                  message=f"{kind} detected")
    return DiagnosisEvent(type_, d, step)


def rec(action: str, status: str, applied: int | None, i: int, **extra) -> dict:
    return {"id": f"r{i}", "action": action, "status": status, "issued_at_step": applied,
            "applied_step": applied, "note": None, "diagnosis_id": None, **extra}


def series(change: int, after: float, n: int = 60, every: int = 20, seed: int = 0
           ) -> tuple[list[int], list[float]]:
    """A val loss decaying as a power law, multiplied by ``after`` from ``change`` on."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, n + 1) * every
    v = 0.5 + 2.0 * (s / 100.0) ** -0.7
    v = v * np.exp(rng.normal(0, 0.005, n))
    v[s > change] *= after
    return s.tolist(), v.tolist()


# ---------------------------------------------------------------- trials
def test_judge_needs_a_complete_effect_window() -> None:
    s, v = series(800, 1.0)
    assert judge(s[:45], v[:45], 800, 200) is None  # only up to step 900
    assert judge(s, v, 800, 200) is not None


def test_judge_scale_free_and_direction() -> None:
    s, v = series(800, 1.10)  # 10 % worse after the change: above where it stood
    for k in (1e-3, 1.0, 1e3):
        verdict = judge(s, [x * k for x in v], 800, 200)
        assert verdict is not None and verdict.verdict == "worse"
        assert 0 < verdict.observed_minus_projected < math.log(1.1)  # it kept falling a bit
    # a change that cost some progress but left the metric below where it stood is no harm
    # beyond doubt: not reverted (a decelerating curve makes any extrapolation optimistic)
    slower = judge(*series(800, 1.03), 800, 200)
    assert slower is not None and slower.verdict != "worse"
    better = judge(*series(800, 0.9), 800, 200)
    same = judge(*series(800, 1.0), 800, 200)
    assert better is not None and better.verdict == "better"
    assert same is not None and same.verdict == "neutral"


def test_a_change_that_hurt_is_reverted_once_and_not_tried_again() -> None:
    s, v = series(800, 1.3, n=70)  # the effect window: 10 % of the budget, to step 1300
    hist = [rec("reduce_lr", "applied", 800, 0, params={"factor": 0.3}, lr_before=[0.1])]
    assert decide([], RunContext(step=1200, total_steps=5000, monitored=(s[:60], v[:60]),
                                 history=hist), CFG).issue == []  # not judged yet
    ctx = RunContext(step=1400, lr=0.03, first_lr=0.1, peak_lr=0.1, total_steps=5000,
                     monitored=(s, v), history=hist)
    d = decide([], ctx, CFG)
    assert [r.action for r in d.issue] == ["revert"]
    r = d.issue[0]
    assert r.params == {"to_step": 800, "change_id": "r0"} and "worse" in r.reason
    validate_action(r.action, r.params)
    # once issued it is not issued again; once applied, the same cut is not tried again
    ctx.history = [*hist, rec("revert", "pending", None, 1, params=r.params)]
    assert decide([], ctx, CFG).issue == []
    ctx.history[-1] = rec("revert", "applied", 1400, 1, params=r.params)
    ctx.monitored = None
    ctx.step = 2000
    d = decide([event("stagnation", step=2000)], ctx, CFG)
    assert d.issue == [] and "reverted" in d.notes[0]


def test_a_change_that_helped_is_kept() -> None:
    s, v = series(800, 0.85, n=70)
    hist = [rec("reduce_lr", "applied", 800, 0, params={"factor": 0.3})]
    ctx = RunContext(step=1400, total_steps=5000, monitored=(s, v), history=hist)
    assert decide([], ctx, CFG).issue == []


# ---------------------------------------------------------------- schedules
def test_no_plateau_cut_into_a_decaying_schedule_or_late_in_the_budget() -> None:
    stag = event("stagnation", step=3000)
    constant = RunContext(step=3000, lr=0.1, first_lr=0.1, peak_lr=0.1, total_steps=5000)
    assert decide([stag], constant, CFG).issue[0].action == "reduce_lr"
    cosine = RunContext(step=3000, lr=0.04, first_lr=0.1, peak_lr=0.1, total_steps=5000)
    d = decide([stag], cosine, CFG)
    assert d.issue == [] and "schedule is decaying" in d.notes[0]
    # a warm restart: back at the peak now, but it decayed since the peak
    restart = RunContext(step=3000, lr=0.1, first_lr=0.1, peak_lr=0.1, min_lr_after_peak=0.001,
                         total_steps=5000)
    assert decide([stag], restart, CFG).issue == []
    # our own cut is not the user's schedule: after our x0.3 the LR is still "flat"
    ours = RunContext(step=3000, lr=0.03, first_lr=0.1, peak_lr=0.1, total_steps=5000,
                      history=[rec("reduce_lr", "applied", 1000, 0, params={"factor": 0.3})])
    assert decide([event("stagnation", step=3000, ident="stagnation-2")], ours,
                  CFG).issue[0].action == "reduce_lr"
    late = RunContext(step=4800, lr=0.1, first_lr=0.1, peak_lr=0.1, total_steps=5000)
    assert decide([stag], late, CFG).issue == []


# ---------------------------------------------------------------- raises
def test_no_raise_near_an_lr_the_run_diverged_at() -> None:
    slow = event("slow_progress", step=3000, projected_total_rel_gain=0.05)
    # diverged at LR 1.0: never raised above 1.0 / diverged_lr_margin (10) = 0.1
    ctx = RunContext(step=3000, lr=0.01, first_lr=1.0, total_steps=10000,
                     history=[rec("rollback", "applied", 200, 0, params={"lr_factor": 0.1},
                                  lr_before=[1.0])])
    r = decide([slow], ctx, CFG).issue[0]
    assert r.action == "increase_lr" and r.params["factor"] == 2.0  # 0.02 <= 0.1
    ctx.lr = 0.08  # x2 would reach 0.16, above 0.1: capped at x1.25
    r = decide([slow], ctx, CFG).issue[0]
    assert math.isclose(r.params["factor"], 1.25)
    ctx.lr = 0.1  # at the ceiling already: no raise, and why
    d = decide([slow], ctx, CFG)
    assert d.issue == [] and "diverged at LR" in d.notes[0]


# ---------------------------------------------------------------- only what is still wrong
def test_a_diagnosis_closed_within_the_batch_gets_no_answer() -> None:
    ctx = RunContext(step=3000, lr=0.1, first_lr=0.1, peak_lr=0.1, total_steps=5000,
                     open_diagnosis_ids=set())
    assert decide([event("stagnation", step=3000)], ctx, CFG).issue == []
    ctx.open_diagnosis_ids = {"stagnation-1"}
    assert decide([event("stagnation", step=3000)], ctx, CFG).issue[0].action == "reduce_lr"


def test_a_rejected_rollback_falls_back_to_a_cut_and_rewarm_at_once() -> None:
    rejected = {"action": "rollback", "author": "rhythmd", "note": "no snapshot",
                "params": {"to_step": 90, "lr_factor": 0.3, "warmup_steps": 30},
                "diagnosis_id": "divergence-1", "expires_at_step": 400}
    spec = fallback(rejected)
    assert spec is not None and spec.action == "warmup"
    assert spec.params == {"warmup_steps": 30, "start_factor": 0.03, "peak_factor": 0.3}
    validate_action(spec.action, spec.params)
    assert fallback({**rejected, "action": "reduce_lr"}) is None
    assert fallback({**rejected, "author": "alice"}) is None


def test_a_rollback_superseded_by_the_local_reflex_is_no_sign_of_missing_snapshots() -> None:
    superseded = {"id": "r0", "action": "rollback", "status": "rejected", "author": "rhythmd",
                  "issued_at_step": 100, "applied_step": None,
                  "note": "superseded by local reflex", "params": {"lr_factor": 0.1}}
    assert fallback(superseded) is None
    ctx = RunContext(step=400, total_steps=1000, history=[superseded])
    assert decide([event("divergence", step=400)], ctx, CFG).issue[0].action == "rollback"


def test_a_further_plateau_cut_needs_the_last_one_to_have_helped() -> None:
    cut = rec("reduce_lr", "applied", 800, 0, params={"factor": 0.3}, lr_before=[0.1])
    stag = event("stagnation", step=1400, ident="stagnation-2")
    base = {"step": 1400, "lr": 0.03, "first_lr": 0.1, "peak_lr": 0.1, "total_steps": 5000,
            "history": [cut]}
    helped = RunContext(**base, monitored=series(800, 0.85, n=70))
    assert decide([stag], helped, CFG).issue[0].action == "reduce_lr"
    flat = RunContext(**base, monitored=series(800, 1.0, n=70))
    d = decide([stag], flat, CFG)
    assert d.issue == [] and "did not measurably help" in d.notes[0]
    early = RunContext(**{**base, "step": 1200}, monitored=series(800, 0.85, n=60))
    d = decide([event("stagnation", step=1200, ident="stagnation-2")], early, CFG)
    assert d.issue == [] and "effect window" in d.notes[0]


def test_a_further_raise_needs_the_last_one_to_have_helped() -> None:
    raise_ = rec("increase_lr", "applied", 800, 0, params={"factor": 2.0})
    slow = event("slow_progress", step=1400, ident="slow_progress-2",
                 projected_total_rel_gain=0.1)
    base = {"step": 1400, "lr": 0.02, "first_lr": 0.01, "peak_lr": 0.02, "total_steps": 5000,
            "history": [raise_]}
    helped = RunContext(**base, monitored=series(800, 0.85, n=70))
    assert decide([slow], helped, CFG).issue[0].action == "increase_lr"
    flat = RunContext(**base, monitored=series(800, 1.0, n=70))
    d = decide([slow], flat, CFG)
    assert d.issue == [] and "did not measurably help" in d.notes[0]
