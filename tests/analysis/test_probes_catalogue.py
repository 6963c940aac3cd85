"""The probe-stream catalogue itself (rhythmd/eval/probes.py): deterministic, well-formed,
expectations that make sense, schedules like torch's, and a runner that records what the
analyzer and the policy did. Whether the detectors pass the probes is tested elsewhere."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rhythmd.analysis import Diagnosis, DiagnosisEvent
from rhythmd.eval import probe_runner
from rhythmd.eval import probes as P
from rhythmd.policy import Decision, RecommendationSpec, RunContext

KINDS = {"divergence", "stagnation", "oscillation", "slow_progress", "spike"}
ROLES = {"min", "max", "objective", "ignore"}


@pytest.fixture(scope="module")
def cat() -> list[P.Probe]:
    return P.catalogue(0)


def test_deterministic_for_a_seed(cat: list[P.Probe]) -> None:
    again = P.catalogue(0)
    other = {p.name: p for p in P.catalogue(1)}
    assert [p.name for p in again] == [p.name for p in cat]
    for a, b in zip(cat, again, strict=True):
        assert a.run_config == b.run_config and a.expect == b.expect
        for k, (s, v) in a.series.items():
            np.testing.assert_array_equal(s, b.series[k][0])
            np.testing.assert_array_equal(v, b.series[k][1])
    differ = [p.name for p in cat if not all(
        np.array_equal(v, other[p.name].series[k][1], equal_nan=True)
        for k, (_, v) in p.series.items())]
    assert len(differ) >= len(cat) - 2  # another seed draws other noise


def test_groups_build_alone_as_in_the_catalogue(cat: list[P.Probe]) -> None:
    alone = P.catalogue(0, groups=("gan",))
    assert {p.name for p in alone} == {p.name for p in cat if p.group == "gan"}
    full = {p.name: p for p in cat}
    for p in alone:
        np.testing.assert_array_equal(p.series["g_loss" if "g_loss" in p.series else "loss_G"][1],
                                      full[p.name].series["g_loss" if "g_loss" in p.series
                                                          else "loss_G"][1])


def test_well_formed(cat: list[P.Probe]) -> None:
    names = [p.name for p in cat]
    assert len(names) == len(set(names))
    assert set(P.group_names()) == {p.group for p in cat}
    for p in cat:
        assert p.series and p.description and p.family
        for name, (s, v) in p.series.items():
            assert s.dtype == np.int64 and v.dtype == np.float64, (p.name, name)
            assert s.ndim == v.ndim == 1 and s.size == v.size and s.size > 0, (p.name, name)
            assert np.all(np.diff(s) > 0) and s[0] >= 0, (p.name, name)
        lr = p.series["lr"][1]
        assert np.all(np.isfinite(lr)) and np.all(lr > 0), p.name
        total = p.run_config["total_steps"]
        assert isinstance(total, int) and p.last_step <= total, p.name
        roles = p.run_config.get("metrics", {})
        assert set(roles.values()) <= ROLES and set(roles) <= set(p.series), p.name
        if not p.must_catch:  # healthy streams are finite; problems may turn NaN
            assert all(np.all(np.isfinite(v)) for k, (_, v) in p.series.items()
                       if k != "grad_norm"), p.name


def test_expectations_well_formed(cat: list[P.Probe]) -> None:
    must = [p for p in cat if p.must_catch]
    calm = [p for p in cat if not p.must_catch]
    assert len(calm) >= 20 and len(must) >= 19
    assert cat == calm + must  # no-action probes first
    for p in calm:
        assert p.expect == P.NO_ACTION and p.expectation() == "no action"
    for p in must:
        c = p.expect
        assert isinstance(c, P.Catch)
        assert c.kinds and c.kinds <= KINDS and c.actions and c.actions <= P.ACTING
        assert 0 <= c.from_step < c.by_step <= p.last_step, p.name
    # each problem at a second scale and a second cadence, same expectation
    groups: dict[str, list[P.Probe]] = {}
    for p in must:
        groups.setdefault(p.group, []).append(p)
    for g, ps in groups.items():
        if g == "acc_collapse":
            continue
        assert {q.variant.split("_")[0] for q in ps} == {"base", "scale", "every"}, g
        assert len({q.expect for q in ps}) == 1, g


def test_variants_share_the_underlying_curve(cat: list[P.Probe]) -> None:
    by = {p.name: p for p in cat}
    s1, v1 = by["healthy_every_1"].series["val_loss"]
    for k in (10, 100, 1000):
        s, v = by[f"healthy_every_{k}"].series["val_loss"]
        np.testing.assert_array_equal(s, s1[s1 % k == 0])
        np.testing.assert_array_equal(v, v1[s1 % k == 0])
    base = by["healthy_every_100"].series
    for tag, f in (("1e-3", 1e-3), ("1e3", 1e3)):
        scaled = by[f"healthy_scale_{tag}"].series
        np.testing.assert_allclose(scaled["train_loss"][1], base["train_loss"][1] * f)
        np.testing.assert_array_equal(scaled["lr"][1], base["lr"][1])
    acc = by["acc_only_val_acc"].series["val_acc"][1]
    np.testing.assert_array_equal(by["acc_only_val_top1"].series["val_top1"][1], acc)
    np.testing.assert_allclose(by["acc_only_error_declared"].series["val_error"][1], 1 - acc)


def test_the_problems_are_in_the_data(cat: list[P.Probe]) -> None:
    """Each must-catch stream shows its problem inside its window; the AMP one its skips."""
    by = {p.name: p for p in cat}

    def median(name: str, metric: str, lo: int, hi: int) -> float:
        s, v = by[name].series[metric]
        return float(np.median(v[(s >= lo) & (s < hi)]))

    s, v = by["div_nan"].series["train_loss"]
    assert not np.isfinite(v[s == by["div_nan"].expect.by_step]).any()  # type: ignore[union-attr]
    assert median("late_rise", "train_loss", 3700, 5000) > 8 * median("late_rise", "train_loss",
                                                                        3000, 3500)
    assert median("warmup_blowup", "train_loss", 500, 600) > 2.3
    early, late = (median("plateau_constant_lr", "val_loss", a, a + 1000) for a in (2000, 6000))
    assert late < early and median("plateau_constant_lr", "val_loss", 4000, 5000) < 1.01 * late
    assert median("acc_collapse", "val_acc", 2300, 3000) < 0.15
    assert median("too_small_lr", "val_loss", 0, 1000) - median("too_small_lr", "val_loss",
                                                               4000, 5000) > 0.1
    amp = by["amp_skipped_steps"].series
    gn = amp["grad_norm"][1]
    skipped = np.flatnonzero(~np.isfinite(gn))
    assert skipped.size == 10
    later = skipped[skipped > 10]
    np.testing.assert_array_equal(amp["train_loss"][1][later], amp["train_loss"][1][later - 1])
    np.testing.assert_array_equal(amp["lr"][1][later], amp["lr"][1][later - 1])


@pytest.mark.slow  # importing torch takes seconds; the rest of this file well under one
def test_schedules_match_torch() -> None:
    torch = pytest.importorskip("torch")
    from tests.cli.test_schedule import torch_lrs

    sched = torch.optim.lr_scheduler

    def lrs(make: Any, n: int, lr: float) -> np.ndarray:
        return np.asarray(torch_lrs(make, lr, n))

    np.testing.assert_allclose(P.lr_one_cycle(1000, 0.1),
                               lrs(lambda o: sched.OneCycleLR(o, 0.1, total_steps=1000), 1000,
                                   0.1), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(P.lr_cosine_restarts(700, 0.05, 100, 2, 1e-4),
                               lrs(lambda o: sched.CosineAnnealingWarmRestarts(o, 100, 2, 1e-4),
                                   700, 0.05), rtol=1e-9)
    np.testing.assert_allclose(P.lr_step(500, 0.1, 200, 0.1),
                               lrs(lambda o: sched.StepLR(o, 200, 0.1), 500, 0.1), rtol=1e-9)
    np.testing.assert_allclose(P.lr_linear_decay(300, 3e-4, 0.0)[:299],
                               lrs(lambda o: sched.LinearLR(o, 1.0, 0.0, total_iters=300), 299,
                                   3e-4), rtol=1e-6, atol=1e-15)
    warm = P.lr_warmup_cosine(1000, 6e-4, 100, 0.1)
    assert warm[0] == pytest.approx(6e-4 / 101) and warm[100] == pytest.approx(6e-4)
    assert warm[-1] == pytest.approx(6e-5, rel=1e-3) and np.all(np.diff(warm[100:]) <= 0)


class _FakeAnalyzer:
    """Opens a divergence at the first train step >= 120 and closes it at >= 300."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.branch_start = None
        self.d: Diagnosis | None = None

    def feed(self, batch: dict[str, Any]) -> list[DiagnosisEvent]:
        s = batch["train_loss"][0]
        if self.d is None and s[-1] >= 120:
            step = int(s[s >= 120][0])
            self.d = Diagnosis("divergence-1", "divergence", "train_loss", step, step - 10,
                               "high", 0.9, {"cause": "test"})
            return [DiagnosisEvent("opened", self.d, step)]
        if self.d is not None and self.d.status == "open" and s[-1] >= 300:
            self.d.status = "closed"
            return [DiagnosisEvent("closed", self.d, int(s[-1]))]
        return []


def test_runner_records_events_and_applies_history(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunContext] = []

    def fake_decide(events: list[DiagnosisEvent], ctx: RunContext, cfg: Any) -> Decision:
        seen.append(ctx)
        if events[0].type != "opened":
            return Decision()
        return Decision(issue=[RecommendationSpec("rollback", {"to_step": 99}, "test",
                                                  events[0].diagnosis.id, None)])

    monkeypatch.setattr(probe_runner, "RunAnalyzer", _FakeAnalyzer)
    monkeypatch.setattr(probe_runner, "decide", fake_decide)
    monkeypatch.setattr(probe_runner, "run_context", lambda an, step, history: RunContext(
        step=step, history=[dict(h) for h in history]))
    steps = np.arange(1, 501, dtype=np.int64)
    series = {"lr": (steps, np.full(500, 0.1)), "train_loss": (steps, np.ones(500))}
    catch = P.Catch(frozenset({"divergence"}), frozenset({"rollback"}), 100, 200)
    probe = P.Probe("t", "test", "test", series, {"total_steps": 500}, catch, "t")
    r = P.run_probe(probe, batch_steps=50)
    assert [(d.kind, d.step, d.metric, d.cause) for d in r.diagnoses] == [
        ("divergence", 120, "train_loss", "test")]
    assert [(a.action, a.step, a.diagnosis_id) for a in r.actions] == [
        ("rollback", 120, "divergence-1")]
    assert r.passed and r.caught_at_step == 120 and r.steps_streamed == 500
    # issued at 120 (batch 101-150), applied at the first step of the next batch
    assert seen[-1].history[0]["status"] == "applied"
    assert seen[-1].history[0]["applied_step"] == 151
    assert r.to_dict()["actions"][0]["params"] == {"to_step": 99}

    late = P.Probe("t", "test", "test", series, {"total_steps": 500},
                   P.Catch(catch.kinds, catch.actions, 130, 200), "t")
    assert not P.run_probe(late).passed  # flagged before the problem began
    calm = P.Probe("t", "test", "test", series, {"total_steps": 500}, P.NO_ACTION, "t")
    r = P.run_probe(calm)
    assert not r.passed and r.unexpected_diagnoses == ["divergence-1"]


def test_runner_streams_a_real_probe(cat: list[P.Probe]) -> None:
    probe = next(p for p in cat if p.name == "div_nan")
    r = P.run_probe(probe)
    assert r.probe == "div_nan" and r.must_catch and r.expectation == probe.expectation()
    assert r.steps_streamed == probe.last_step or r.stopped_at_step is not None
    assert all(0 < d.step <= probe.last_step for d in r.diagnoses)
    assert all(a.step <= probe.last_step for a in r.actions)
    assert isinstance(r.passed, bool) and r.verdict
