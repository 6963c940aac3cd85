"""The invariances a careful engineer expects, each a test over the probe catalogue
(``rhythmd.eval.probes``): scale, sign and metric direction, evaluation cadence, spikes that
recover, and a schedule's own warmup or decay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rhythmd.eval.probes import Probe, get_probe, run_probe

SCALES = (1e-3, 1e-1, 10.0, 1e3)


def verdicts(probe: Probe) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(diagnoses opened as (kind, step), actions issued as (action, step))."""
    r = run_probe(probe)
    return ([(d.kind, d.step) for d in r.diagnoses], [(a.action, a.step) for a in r.actions])


def scaled(probe: Probe, k: float) -> Probe:
    series = {name: (s, v if name == "lr" else v * k) for name, (s, v) in probe.series.items()}
    return dataclasses.replace(probe, series=series, name=f"{probe.name}x{k:g}")


@pytest.mark.parametrize("name", ["healthy_every_10", "late_rise", "div_nan", "warmup_blowup",
                                  "plateau_constant_lr", "gaussian_nll_signed", "nanogpt_spikes",
                                  "too_small_lr", "osc_lr_too_large"])
def test_same_verdicts_at_any_scale(name: str) -> None:
    base = get_probe(name)
    want = verdicts(base)
    for k in SCALES:
        assert verdicts(scaled(base, k)) == want, (name, k)


def test_a_score_gets_the_verdicts_of_its_complement() -> None:
    acc = verdicts(get_probe("acc_only_val_acc"))
    err = verdicts(get_probe("acc_only_error_declared"))  # 1 - accuracy, declared "min"
    assert acc == err
    for alias in ("acc_only_val_top1", "acc_only_eval_accuracy"):  # roles from the names
        assert verdicts(get_probe(alias)) == acc


def test_dense_and_sparse_evaluation_of_one_curve() -> None:
    """Evaluated every step or every 10 steps: the same diagnoses within a couple of blocks
    (1 % of the budget each); at any cadence the same actions (here: none, a healthy run)."""
    dense = [verdicts(get_probe(f"healthy_every_{k}")) for k in (1, 10)]
    kinds = [[k for k, _ in d] for d, _ in dense]
    assert kinds[0] == kinds[1]
    for (_, s1), (_, s10) in zip(dense[0][0], dense[1][0], strict=True):
        assert abs(s1 - s10) <= 0.025 * 5000
    for k in (1, 10, 100, 1000):
        assert verdicts(get_probe(f"healthy_every_{k}"))[1] == []
    # a true plateau is caught at the same step whether evaluated every 10 or 100 steps
    p10 = verdicts(get_probe("plateau_constant_lr_every_10"))
    p100 = verdicts(get_probe("plateau_constant_lr"))
    assert [a for a, _ in p10[1]] == [a for a, _ in p100[1]]
    assert abs(p10[1][0][1] - p100[1][0][1]) <= 0.025 * 10000


def test_spikes_that_recover_are_spikes() -> None:
    r = run_probe(get_probe("nanogpt_spikes"))
    kinds = {d.kind for d in r.diagnoses}
    assert kinds == {"spike"} and r.actions == []


def test_a_jump_that_persists_is_a_divergence() -> None:
    probe = get_probe("nanogpt_spikes")
    s, v = probe.series["train_loss"]
    v = v.copy()
    v[(s >= 3000) & (s < 3300)] *= 3.0  # the same 3x jump, held for 300 steps
    r = run_probe(dataclasses.replace(probe, series={**probe.series, "train_loss": (s, v)}))
    div = [d for d in r.diagnoses if d.kind == "divergence"]
    assert div and 3000 <= div[0].step <= 3000 + 40
    assert any(a.action == "rollback" for a in r.actions)


@pytest.mark.parametrize("name", ["warmup_rise", "cosine_tail_flat", "warm_restarts",
                                  "healthy_every_100", "infonce", "long_budget_early"])
def test_a_schedule_s_own_warmup_or_decay_gets_no_action(name: str) -> None:
    r = run_probe(get_probe(name))
    assert r.actions == [], r.verdict
    assert not any(d.kind == "divergence" for d in r.diagnoses)


@pytest.mark.parametrize("name", ["gan_declared", "gan_g_loss", "gan_loss_G", "ppo_declared",
                                  "ppo_undeclared"])
def test_objectives_that_may_rise_are_watched_only_for_non_finite_values(name: str) -> None:
    probe = get_probe(name)
    assert verdicts(probe)[1] == []
    # the same objective turning NaN is still a divergence
    name = next(k for k in probe.series if k in ("g_loss", "loss_G",
                                                  "train/policy_gradient_loss"))
    s, v = probe.series[name]
    v = v.copy()
    v[len(v) // 2:] = np.nan
    r = run_probe(dataclasses.replace(probe, series={**probe.series, name: (s, v)}))
    div = [d for d in r.diagnoses if d.kind == "divergence"]
    assert div and div[0].metric == name and div[0].step == int(s[len(s) // 2])
