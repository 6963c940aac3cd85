"""The recommendation policy, as a pure function of diagnosis events and run history."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rhythmd.analysis import Diagnosis, DiagnosisEvent
from rhythmd.policy import PolicyConfig, RunContext, decide
from rhythmd.recommendations import validate_action


def event(kind: str, *, step: int = 300, onset: int = 290, severity: str = "high",
          type_: str = "opened", **evidence) -> DiagnosisEvent:
    d = Diagnosis(id=f"{kind}-1", kind=kind, metric="train_loss", detected_at_step=step,
                  onset_step=onset, severity=severity, confidence=0.9, evidence=evidence,
                  message=f"{kind} detected")
    return DiagnosisEvent(type_, d, step)


def rec(action: str, status: str, applied_step: int | None = None, i: int = 0,
        issued: int = 0, **extra) -> dict:
    return {"id": f"r{i}", "action": action, "status": status, "issued_at_step": issued,
            "applied_step": applied_step, "note": None, **extra}


CFG = PolicyConfig()


def test_divergence_rolls_back_with_growing_cuts_then_stops():
    ctx = RunContext(step=300, lr=0.1, first_lr=0.1, total_steps=1000)
    first = decide([event("divergence")], ctx, CFG).issue
    assert [r.action for r in first] == ["rollback"]
    assert first[0].params["to_step"] == 289
    assert first[0].params["lr_factor"] == CFG.rollback_cut
    ctx.history = [rec("rollback", "applied", 300, 0, issued=280)]
    second = decide([event("divergence")], ctx, CFG).issue[0]
    assert second.params["lr_factor"] < first[0].params["lr_factor"]
    ctx.history = [rec("rollback", "applied", 300, i, issued=250 + 10 * i)
                   for i in range(CFG.max_rollbacks)]
    assert [r.action for r in decide([event("divergence")], ctx, CFG).issue] == ["stop"]


def test_escalation_starts_over_in_a_new_episode():
    # three rollbacks around step 100, then a healthy stretch of 400 steps: a divergence at
    # step 600 is a new episode, answered with the first cut again (not 0.3 ** 4)
    history = [rec("rollback", "applied", 100 + i, i, issued=100 + 5 * i) for i in range(3)]
    ctx = RunContext(step=600, lr=0.1, first_lr=0.1, total_steps=1000, history=history)
    r = decide([event("divergence", step=600, onset=590)], ctx, CFG).issue[0]
    assert r.params["lr_factor"] == CFG.rollback_cut and "attempt 1/" in r.reason
    ctx.step = 150  # within the episode: the fourth attempt
    r = decide([event("divergence", step=150, onset=140)], ctx, CFG).issue[0]
    assert r.params["lr_factor"] == round(CFG.rollback_cut ** 4, 6)


def test_divergence_cancels_softer_pending_and_skips_when_a_rollback_is_pending():
    ctx = RunContext(lr=0.1, step=300, history=[rec("reduce_lr", "pending", i=7)])
    d = decide([event("divergence")], ctx, CFG)
    assert d.cancel == ["r7"] and d.issue[0].action == "rollback"
    ctx.history = [rec("rollback", "pending", i=8)]
    assert decide([event("divergence")], ctx, CFG).issue == []


def test_without_snapshots_divergence_falls_back_to_rewarming():
    ctx = RunContext(lr=0.1, step=300, history=[rec("rollback", "rejected")])
    r = decide([event("divergence")], ctx, CFG).issue[0]
    assert r.action == "warmup" and 0 < r.params["peak_factor"] < 1


def test_divergence_near_warmup_gets_a_longer_warmup():
    plain = decide([event("divergence", onset=500)], RunContext(lr=0.1, step=510, total_steps=1000),
                   CFG).issue[0]
    warm = decide([event("divergence", onset=110)],
                  RunContext(lr=0.1, step=120, total_steps=1000, warmup_end_step=100), CFG).issue[0]
    assert warm.params["warmup_steps"] > plain.params["warmup_steps"]


def test_stagnation_cuts_then_leaves_the_run_alone_after_repeated_useless_cuts():
    ctx = RunContext(step=500, lr=0.1, first_lr=0.1, total_steps=1000)
    r = decide([event("stagnation")], ctx, CFG).issue[0]
    assert r.action == "reduce_lr" and r.params["factor"] == CFG.reduce_factor
    ctx.history = [rec("reduce_lr", "applied", 100 * i, i) for i in range(CFG.max_reductions)]
    d = decide([event("stagnation")], ctx, CFG)
    assert d.issue == [] and "did not restart progress" in d.notes[0]


def test_cooldown_and_one_pending_at_a_time():
    ctx = RunContext(lr=0.1, step=500, total_steps=1000, history=[rec("reduce_lr", "applied", 490)])
    assert decide([event("stagnation")], ctx, CFG).issue == []
    ctx.history = [rec("increase_lr", "pending")]
    assert decide([event("stagnation")], ctx, CFG).issue == []


def test_oscillation_only_when_the_lr_causes_it():
    ctx = RunContext(lr=0.1, step=500, total_steps=1000)
    assert decide([event("oscillation", cause="eval_noise")], ctx, CFG).issue == []
    assert decide([event("oscillation", cause="lr_too_large")], ctx,
                  CFG).issue[0].action == "reduce_lr"


def test_slow_progress_increases_a_bounded_number_of_times():
    ctx = RunContext(lr=0.1, step=300, total_steps=1000)
    assert decide([event("slow_progress")], ctx, CFG).issue[0].action == "increase_lr"
    ctx.history = [rec("increase_lr", "applied", 10 * i, i) for i in range(CFG.max_increases)]
    assert decide([event("slow_progress")], ctx, CFG).issue == []
    ctx.history = [rec("increase_lr", "applied", 10), rec("rollback", "applied", 20, 1)]
    assert decide([event("slow_progress")], ctx, CFG).issue == []


def test_updates_and_closes_do_not_trigger_unless_critical():
    ctx = RunContext(lr=0.1, step=300)
    assert decide([event("stagnation", type_="updated")], ctx, CFG).issue == []
    assert decide([event("divergence", type_="closed")], ctx, CFG).issue == []
    crit = decide([event("divergence", type_="updated", severity="critical")], ctx, CFG)
    assert crit.issue[0].action == "rollback"


def test_config_overrides_from_the_run_config():
    cfg = PolicyConfig.from_run_config({"policy": {"reduce_factor": 0.1, "max_rollbacks": 1,
                                                   "bogus": 3, "rollback_cut": float("nan")}})
    assert cfg.reduce_factor == 0.1 and cfg.max_rollbacks == 1
    assert cfg.rollback_cut == PolicyConfig().rollback_cut


floats = st.floats(allow_nan=True, allow_infinity=True) | st.none()


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["divergence", "stagnation", "oscillation", "slow_progress",
                             "spike"]),
       step=st.integers(0, 2**40), onset=st.integers(-5, 2**40), lr=floats, first_lr=floats,
       total=st.none() | st.integers(1, 2**40),
       history=st.lists(st.tuples(st.sampled_from(["reduce_lr", "rollback", "increase_lr",
                                                   "stop", "warmup"]),
                                  st.sampled_from(["pending", "applied", "rejected", "expired"]),
                                  st.none() | st.integers(0, 2**40)), max_size=6),
       cause=st.sampled_from(["lr", "eval_noise", None]))
def test_any_input_gives_valid_finite_recommendations(kind, step, onset, lr, first_lr, total,
                                                      history, cause):
    ctx = RunContext(step=step, lr=lr, first_lr=first_lr, total_steps=total,
                     history=[rec(a, s, ap, i) for i, (a, s, ap) in enumerate(history)])
    for r in decide([event(kind, step=step, onset=onset, cause=cause)], ctx, CFG).issue:
        validate_action(r.action, r.params)  # raises on a bad or non-finite parameter
        for v in r.params.values():
            assert not isinstance(v, float) or math.isfinite(v)


def test_nonfinite_divergence_gets_a_deeper_cut():
    ctx = RunContext(step=300, lr=0.1, first_lr=0.1, total_steps=1000)
    soft = decide([event("divergence", test="above_start")], ctx, CFG).issue[0]
    hard = decide([event("divergence", severity="critical", test="nonfinite")], ctx,
                  CFG).issue[0]
    assert hard.params["lr_factor"] == CFG.nonfinite_cut < soft.params["lr_factor"]


def test_oscillation_cause_named_by_the_detector_is_acted_on():
    ctx = RunContext(lr=0.1, step=500, total_steps=1000)
    assert decide([event("oscillation", cause="lr_too_large")], ctx,
                  CFG).issue[0].action == "reduce_lr"


def test_divergence_from_the_start_restarts_from_the_initial_weights():
    ctx = RunContext(lr=0.1, step=60, total_steps=800)
    first = decide([event("divergence", step=60, onset=2)], ctx, CFG).issue[0]
    assert first.action == "rollback" and first.params["to_step"] == -1
    ctx.history = [rec("rollback", "applied", 50)]
    again = decide([event("divergence", step=60, onset=2)], ctx, CFG).issue[0]
    assert again.params["to_step"] == -1
    assert again.params["lr_factor"] < first.params["lr_factor"]  # a larger cut each attempt
    later = decide([event("divergence", step=300, onset=290)], ctx, CFG).issue[0]
    assert later.action == "rollback" and later.params["to_step"] == 289


def test_stagnation_after_an_increase_is_a_plateau_not_a_call_for_more():
    # the raised run reached its floor: raising again over-shoots (a raise that was not enough
    # shows as slow progress again instead)
    ctx = RunContext(lr=0.1, step=500, total_steps=1000,
                     history=[rec("increase_lr", "applied", 200)])
    assert decide([event("stagnation")], ctx, CFG).issue[0].action == "reduce_lr"


def test_slow_progress_increase_follows_the_projected_gain():
    ctx = RunContext(lr=0.1, step=300, total_steps=1000)
    tiny = decide([event("slow_progress", projected_total_rel_gain=0.01)], ctx, CFG).issue[0]
    assert tiny.params["factor"] == CFG.max_increase == 2.0  # at most x2 at a time
    wide = PolicyConfig(max_increase=10.0)
    some = decide([event("slow_progress", projected_total_rel_gain=0.2)], ctx, wide).issue[0]
    assert some.params["factor"] == CFG.target_gain / 0.2
    near = decide([event("slow_progress", projected_total_rel_gain=0.3)], ctx, CFG).issue[0]
    assert near.params["factor"] == CFG.increase_factor


def test_stagnation_with_a_rising_loss_cuts_harder():
    ctx = RunContext(lr=0.1, step=300, total_steps=600)
    flat = decide([event("stagnation", theil_sen_slope_per_step=0.0, best_value=0.5)], ctx,
                  CFG).issue[0]
    rising = decide([event("stagnation", theil_sen_slope_per_step=2e-4, best_value=0.5)], ctx,
                    CFG).issue[0]
    assert rising.params["factor"] < flat.params["factor"] == CFG.reduce_factor


def test_persisting_stagnation_is_cut_again_after_a_full_window():
    def flat(step: int) -> DiagnosisEvent:
        return event("stagnation", step=step, onset=100, type_="updated", window_steps=140)

    first = {**rec("reduce_lr", "applied", 300), "diagnosis_id": "stagnation-1",
             "issued_at_step": 290}
    ctx = RunContext(lr=0.1, step=400, total_steps=1000, history=[first])
    assert decide([flat(400)], ctx, CFG).issue == []  # the cut has had 100 < 140 steps
    ctx.step = 450
    again = decide([flat(450)], ctx, CFG).issue
    assert [r.action for r in again] == ["reduce_lr"]
    # In advise mode nothing is applied: the answer itself starts the wait.
    ctx = RunContext(lr=0.1, step=400, total_steps=1000, history=[
        {**rec("reduce_lr", "rejected"), "diagnosis_id": "stagnation-1", "issued_at_step": 350}])
    assert decide([flat(400)], ctx, CFG).issue == []


def test_a_run_still_too_slow_after_an_increase_is_raised_again():
    def slow(step: int) -> DiagnosisEvent:
        return event("slow_progress", step=step, onset=0, type_="updated", window_steps=140,
                     projected_total_rel_gain=0.05)

    ctx = RunContext(lr=0.1, step=400, total_steps=1000, history=[
        {**rec("increase_lr", "applied", 300), "diagnosis_id": "slow_progress-1",
         "issued_at_step": 290}])
    assert decide([slow(400)], ctx, CFG).issue == []
    ctx.step = 460
    assert [r.action for r in decide([slow(460)], ctx, CFG).issue] == ["increase_lr"]


def test_overfitting_that_survives_a_cut_is_left_to_the_user():
    rising = dict(theil_sen_slope_per_step=0.001, best_value=0.5)  # +0.2 per 1k steps
    ctx = RunContext(lr=0.1, step=500, total_steps=1000)
    first = decide([event("stagnation", **rising)], ctx, CFG).issue[0]
    assert first.action == "reduce_lr" and first.params["factor"] < CFG.reduce_factor
    ctx.history = [rec("reduce_lr", "applied", 300)]
    d = decide([event("stagnation", **rising)], ctx, CFG)  # no stop: it would freeze the run
    assert d.issue == [] and "over-fitting" in d.notes[0]  # away from its best


def test_stagnation_at_the_starting_level_restarts_from_the_initial_weights():
    ctx = RunContext(step=300, lr=0.5, first_lr=0.5, total_steps=800)
    dead = event("stagnation", start_value=2.31, best_value=2.29, mk_p_decrease=0.6,
                 rel_gain_from_start=0.009)
    r = decide([dead], ctx, CFG).issue[0]
    assert r.action == "rollback" and r.params["to_step"] == -1
    assert r.params["lr_factor"] == CFG.nonfinite_cut
    validate_action(r.action, r.params)
    # a second restart cuts harder; past max_rollbacks: stop
    ctx.history = [rec("rollback", "applied", 100, 0)]
    assert decide([dead], ctx, CFG).issue[0].params["lr_factor"] < CFG.nonfinite_cut
    # attempts spent, or no snapshots: the plain stagnation rule (a cut)
    ctx.history = [rec("rollback", "applied", 100, i) for i in range(CFG.max_rollbacks)]
    assert decide([dead], ctx, CFG).issue[0].action == "reduce_lr"
    ctx.history = [rec("rollback", "rejected", None, 0)]
    assert decide([dead], ctx, CFG).issue[0].action == "reduce_lr"
    # before a quarter of the budget (an early plateau), or without a budget: a cut too ...
    for early in (RunContext(step=150, lr=0.5, first_lr=0.5, total_steps=800),
                  RunContext(step=300, lr=0.5, first_lr=0.5)):
        assert decide([dead], early, CFG).issue[0].action == "reduce_lr"
        # ... unless the run already diverged and was rolled back: the LR is far too large
        early.history = [rec("rollback", "applied", 40, 0)]
        again = decide([dead], early, CFG).issue[0]
        assert again.action == "rollback" and again.params["to_step"] == -1


def test_stagnation_after_learning_or_with_a_trend_is_not_a_restart():
    ctx = RunContext(step=300, lr=0.1, first_lr=0.1, total_steps=800)
    learned = event("stagnation", start_value=2.3, best_value=0.4, mk_p_decrease=0.6)
    assert decide([learned], ctx, CFG).issue[0].action == "reduce_lr"
    creeping = event("stagnation", start_value=2.3, best_value=2.25, mk_p_decrease=0.01)
    assert decide([creeping], ctx, CFG).issue[0].action == "reduce_lr"


def test_a_blow_up_that_turned_non_finite_in_the_same_batch_gets_the_non_finite_cut():
    # opened as a finite blow-up at step 11, non-finite at step 23, both in one flush: the
    # answer must be the one for a non-finite loss (a far-too-large LR), not the gentler cut
    opened = event("divergence", step=11, onset=11, severity="warning", test="above_start")
    turned = event("divergence", step=23, onset=11, severity="critical", type_="updated",
                   test="nonfinite")
    r = decide([opened, turned], RunContext(lr=0.1, step=79, total_steps=400), CFG).issue[0]
    assert r.action == "rollback" and r.params["lr_factor"] == CFG.nonfinite_cut
    assert decide([opened], RunContext(lr=0.1, step=79, total_steps=400), CFG).issue[0] \
        .params["lr_factor"] == CFG.rollback_cut


def test_a_relapse_right_after_a_rollback_rolls_back_before_the_restored_state():
    # the last rollback restored the state of step 60 (the branch resumed at 61); the run
    # blew up again at once: that state was already damaged, go one snapshot further back
    history = [rec("rollback", "applied", 140, 0)]
    ctx = RunContext(lr=0.1, step=110, total_steps=400, branch_start_step=61, history=history)
    r = decide([event("divergence", step=100, onset=63)], ctx, CFG).issue[0]
    assert r.action == "rollback" and r.params["to_step"] == 59
    assert "after resuming from the state of step 60" in r.reason
    # long after resuming: an ordinary divergence, rolled back to just before its onset
    later = decide([event("divergence", step=300, onset=290)],
                   RunContext(lr=0.1, step=300, total_steps=400, branch_start_step=61,
                              history=history), CFG).issue[0]
    assert later.params["to_step"] == 289
    # a relapse after a restart from the initial weights has nothing earlier to go to
    again = decide([event("divergence", step=30, onset=3)],
                   RunContext(lr=0.1, step=30, total_steps=400, branch_start_step=0,
                              history=history), CFG).issue[0]
    assert again.params["to_step"] == -1
