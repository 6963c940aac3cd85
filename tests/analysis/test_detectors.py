"""Crafted-array tests of each detector through the public RunAnalyzer interface."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rhythmd.analysis import AnalysisConfig, RunAnalyzer

from .analysis_helpers import first, stream


def _decay(n: int, seed: int = 0, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.arange(1, n + 1)
    return s, (0.3 + 2.0 * np.exp(-s / 150.0)) * np.exp(rng.normal(0, noise, n))


# ---------------------------------------------------------------- degenerate inputs
def test_empty_and_unknown_inputs() -> None:
    an = RunAnalyzer()
    assert an.feed({}) == []
    assert an.feed({"train_loss": ([], [])}) == []
    assert an.feed({"not_a_metric": ([1, 2], [1.0, 2.0])}) == []
    assert an.feed({"train_loss": "garbage"}) == []
    assert an.diagnoses == [] and an.schedule() == []


def test_single_point_and_constant() -> None:
    an = RunAnalyzer()
    an.feed({"train_loss": ([1], [2.3]), "lr": ([1], [0.1]), "val_loss": ([1], [2.3])})
    assert an.diagnoses == []
    s = np.arange(2, 3001)
    an2, _ = stream(
        {
            "train_loss": (s, np.full(s.size, 2.3)),
            "lr": (s, np.full(s.size, 0.1)),
            "val_loss": (s[s % 50 == 0], np.full((s % 50 == 0).sum(), 2.3)),
        },
        an=an,
        cfg=None,
    )
    kinds = {d.kind for d in an2.diagnoses}
    assert "divergence" not in kinds and "oscillation" not in kinds
    assert "stagnation" in kinds  # a constant val loss does not improve


def test_zero_and_negative_losses_are_safe() -> None:
    s = np.arange(1, 2001)
    for values in (np.zeros(s.size), -2.0 + np.exp(-s / 300.0), np.full(s.size, 1e-320)):
        an, _ = stream({"train_loss": (s, values)}, cfg={"total_steps": 2000})
        assert all(d.kind != "divergence" for d in an.diagnoses)


def test_all_nan_is_one_critical_divergence() -> None:
    s = np.arange(1, 201)
    an, ev = stream({"train_loss": (s, np.full(s.size, np.nan))})
    divs = [d for d in an.diagnoses if d.kind == "divergence"]
    assert len(divs) == 1 and divs[0].severity == "critical"
    assert divs[0].detected_at_step == 1 and divs[0].confidence == 1.0
    assert [e.type for e in ev].count("opened") == 1


def test_nonfinite_after_training_is_immediate() -> None:
    s, v = _decay(400)
    v[300] = np.inf
    an, _ = stream({"train_loss": (s, v)})
    assert first(an, "divergence") == 301


def test_huge_values_flagged() -> None:
    s, v = _decay(300)
    v[200:] = 1e308
    an, _ = stream({"train_loss": (s, v)})
    d = first(an, "divergence")
    assert d is not None and 201 <= d <= 205


# ---------------------------------------------------------------- divergence
def test_gradual_blowup_warns_before_reaching_start_level() -> None:
    s, v = _decay(600, noise=0.02)
    grow = np.exp(0.03 * np.clip(s - 400, 0, None))
    v = v * grow
    cross = int(s[np.argmax(v > v[0])])  # first step above the starting loss
    an, _ = stream({"train_loss": (s, v)})
    flag = first(an, "divergence")
    assert flag is not None and 400 < flag < cross
    d = next(d for d in an.diagnoses if d.kind == "divergence")
    assert d.onset_step <= flag and "z_vs_baseline" in d.evidence


def test_one_step_spikes_are_not_divergence() -> None:
    rng = np.random.default_rng(1)
    s = np.arange(1, 3001)
    v = 3.0 + 0.02 * rng.normal(size=s.size)
    for k in (524, 741, 888, 919, 947, 1106, 2000):
        v[k] += 1.5  # +1.5 nats for one step, like the modded-nanogpt data spikes
    an, _ = stream({"train_loss": (s, v)})
    assert first(an, "divergence") is None
    spikes = [d for d in an.diagnoses if d.kind == "spike"]
    assert spikes and all(d.status == "closed" for d in spikes)


def test_rise_during_warmup_is_reported_as_such() -> None:
    s = np.arange(1, 401)
    lr = np.minimum(s / 200.0, 1.0) * 1.0
    v = np.where(s < 100, 2.3 * np.exp(-s / 100), 2.3 * np.exp(-1) * np.exp(0.05 * (s - 100)))
    an, _ = stream({"train_loss": (s, v), "lr": (s, lr)})
    d = next(d for d in an.diagnoses if d.kind == "divergence")
    assert d.evidence.get("loss_rises_while_lr_rises") is True
    assert "warmup" in d.evidence.get("schedule_hint", "")


def test_divergence_closes_after_recovery() -> None:
    s, v = _decay(1000, noise=0.02)
    v[500:530] *= 20
    an, ev = stream({"train_loss": (s, v)})
    d = next(d for d in an.diagnoses if d.kind == "divergence")
    assert d.status == "closed" and d.closed_at_step is not None and d.closed_at_step > 530
    assert next(e.type for e in ev if e.diagnosis.id == d.id) == "opened"


# ---------------------------------------------------------------- stagnation / slow progress
def _val(n_steps: int, every: int, fn, seed: int = 0, noise: float = 0.003):
    rng = np.random.default_rng(seed)
    s = np.arange(every, n_steps + 1, every)
    return s, fn(s) * (1 + noise * rng.normal(size=s.size))


def test_stagnation_after_plateau() -> None:
    vs, vv = _val(3000, 50, lambda s: 0.5 + 1.5 * np.exp(-np.minimum(s, 1000) / 200.0))
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 3000})
    d = next(d for d in an.diagnoses if d.kind == "stagnation")
    assert 1000 < d.detected_at_step <= 1000 + 12 * 50
    assert d.evidence["flat_for_steps"] > 0 and "mk_p_decrease" in d.evidence
    assert d.onset_step <= d.detected_at_step


def test_no_stagnation_while_improving() -> None:
    vs, vv = _val(3000, 50, lambda s: 2.0 * (1 + s / 100.0) ** -0.7)
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 3000})
    assert first(an, "stagnation") is None


def test_no_stagnation_verdict_during_warmup() -> None:
    s = np.arange(1, 3001)
    lr = np.where(s <= 1500, s / 1500.0, 1.0)
    vs = s[s % 50 == 0]
    an, _ = stream(
        {"lr": (s, lr), "val_loss": (vs, np.full(vs.size, 2.0))}, cfg={"total_steps": 3000}
    )
    flag = first(an, "stagnation")
    assert flag is None or flag > 1500


def test_slow_progress_on_tiny_lr() -> None:
    vs, vv = _val(4000, 50, lambda s: 2.3 - 0.3 * s / 4000, noise=0.0005)
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 4000})
    assert first(an, "slow_progress") is not None


def test_slow_progress_on_a_steady_decline_that_would_still_gain_a_lot() -> None:
    # a too-small LR on a classifier: the loss falls by a constant factor per step (log-linear),
    # so the projected gain from the start passes the 25 % bar, but the curve never bends
    vs, vv = _val(800, 20, lambda s: 2.3 * np.exp(-s / 700))
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 800})
    d = next(d for d in an.diagnoses if d.kind == "slow_progress")
    assert d.detected_at_step <= 300
    assert d.evidence["projected_total_rel_gain"] > 0.25
    assert 0.6 <= d.evidence["steady_rate_ratio"] <= 3.0
    assert d.evidence["projected_log_gain_remaining"] >= 0.4


def test_no_slow_progress_on_a_converging_curve() -> None:
    # a well-set LR: a fast first drop that bends towards a floor (converged by a quarter of
    # the budget; a curve twice as slow is borderline: steady_rate_ratio about 0.6 at 25 %)
    vs, vv = _val(800, 20, lambda s: 0.1 + 2.2 * np.exp(-s / 40))
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 800})
    assert first(an, "slow_progress") is None


def test_steady_decline_after_a_raise_is_judged_on_the_new_regime() -> None:
    # steady at the old LR; raised x10 at step 300 (the lr stream says so), then converging:
    # the fast drop after the raise is not "steady" progress of the old regime
    s = np.arange(1, 801)
    lr = np.where(s < 300, 1e-3, 1e-2)
    vs = s[s % 20 == 0]
    old = 2.3 * np.exp(-vs / 700)
    at = 2.3 * np.exp(-300 / 700)
    new = 0.1 + (at - 0.1) * np.exp(-(vs - 300) / 40)
    vv = np.where(vs < 300, old, new)
    _, ev = stream({"lr": (s, lr), "val_loss": (vs, vv)}, cfg={"total_steps": 800})
    late = [e for e in ev if e.diagnosis.kind == "slow_progress" and e.type != "closed"
            and e.step > 400]
    assert late == []


def test_train_loss_is_monitored_without_val() -> None:
    s = np.arange(1, 5001)
    v = 0.5 + 1.5 * np.exp(-np.minimum(s, 1500) / 300.0)
    an, _ = stream({"train_loss": (s, v)}, cfg={"total_steps": 5000})
    d = next(d for d in an.diagnoses if d.kind == "stagnation")
    assert d.metric == "train_loss" and d.detected_at_step > 1500


def test_val_metric_to_maximise() -> None:
    vs, vv = _val(3000, 50, lambda s: 0.9 - 0.6 * np.exp(-np.minimum(s, 1000) / 200.0))
    an, _ = stream({"val_acc": (vs, vv)}, cfg={"total_steps": 3000})
    d = next(d for d in an.diagnoses if d.kind == "stagnation")
    assert d.metric == "val_acc" and d.detected_at_step > 1000


# ---------------------------------------------------------------- oscillation
@pytest.mark.parametrize("train_bounces,cause", [(False, "eval_noise"), (True, "lr_too_large")])
def test_oscillation_cause(train_bounces: bool, cause: str) -> None:
    s = np.arange(1, 2001)
    ev = s % 20 == 0
    k = np.arange(ev.sum())
    val = 0.5 * (1 + 0.15 * (-1.0) ** k)
    train = np.full(s.size, 0.4)
    if train_bounces:
        train = 0.4 * (1 + 0.15 * (-1.0) ** (s // 20))
    an, _ = stream({"train_loss": (s, train), "val_loss": (s[ev], val)}, cfg={"total_steps": 2000})
    d = next(d for d in an.diagnoses if d.kind == "oscillation")
    assert d.evidence["cause"] == cause
    assert d.detected_at_step <= 20 * 12


def test_smooth_descent_is_not_oscillation() -> None:
    vs, vv = _val(3000, 20, lambda s: 0.2 + 2 * np.exp(-s / 500.0), noise=0.002)
    an, _ = stream({"val_loss": (vs, vv)}, cfg={"total_steps": 3000})
    assert first(an, "oscillation") is None


# ---------------------------------------------------------------- rollback and repeats
def test_repeated_and_out_of_order_steps() -> None:
    an = RunAnalyzer()
    an.feed({"train_loss": ([5, 3, 3, 4], [1.0, 1.0, 2.0, 1.0])})
    assert an.feed({"train_loss": ([1, 2, 5], [np.nan, np.nan, np.nan])}) == []  # stale repeats
    assert an.diagnoses == []


def test_rollback_branch_reopens_cleanly() -> None:
    s, v = _decay(400)
    v2 = v.copy()
    v2[300:] = np.nan  # branch 0 blows up at step 301
    an, _ = stream({"train_loss": (s, v2)})
    assert first(an, "divergence") == 301
    ev = an.feed({"train_loss": (s[250:], v[250:])}, branch=1, branch_start_step=251)
    assert any(e.type == "closed" for e in ev)
    assert all(d.status == "closed" for d in an.diagnoses if d.kind == "divergence")
    # the resumed branch is healthy: no new divergence
    assert [d.kind for d in an.diagnoses].count("divergence") == 1
    # an older branch's late batch is ignored
    assert an.feed({"train_loss": ([401], [np.nan])}, branch=0) == []


def test_events_and_dicts_are_json() -> None:
    s, v = _decay(600)
    v[400:] = np.nan
    an, ev = stream({"train_loss": (s, v), "lr": (s, np.full(s.size, 0.1))})
    assert ev and {e.type for e in ev} <= {"opened", "updated", "closed"}
    for e in ev:
        json.dumps(e.to_dict(), allow_nan=True)
    for d in an.diagnoses:
        dd = d.to_dict()
        assert {
            "id",
            "kind",
            "metric",
            "detected_at_step",
            "onset_step",
            "severity",
            "confidence",
            "evidence",
            "message",
        } <= set(dd)
    for seg in an.schedule():
        json.dumps(seg.to_dict(), allow_nan=True)


def test_config_from_run_config() -> None:
    c = AnalysisConfig.from_run_config(
        {
            "max_steps": 1234,
            "val_metric": "eval/loss",
            "val_mode": "bogus",
            "analysis": {"div_z": 6},
        }
    )
    assert c.total_steps == 1234 and c.val_metric == "eval/loss"
    assert c.val_mode is None  # from the name's role
    assert c.div_z == 6.0
    assert AnalysisConfig.from_run_config(None).total_steps is None
    assert math.isclose(AnalysisConfig.from_dict(c.to_dict()).div_z, 6.0)


def test_malformed_arrays_are_ignored() -> None:
    an = RunAnalyzer()
    for bad in (([1e30], [1.0]), ([2**70], [1.0]), (["a"], [1.0]), (None, None)):
        assert an.feed({"train_loss": bad}) == []
    assert an.feed({"train_loss": ([1, 2, 3], [1.0])}) == []  # extra steps dropped
    assert an.feed({"train_loss": ([[4, 5]], [[1.0, 1.0]])}) == []  # flattened
