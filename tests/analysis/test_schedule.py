"""LR-schedule identification from synthetic torch-like lr streams."""

from __future__ import annotations

import math

import numpy as np

from rhythmd.analysis.schedule import ScheduleTracker, describe

from .analysis_helpers import stream


def _track(lr: np.ndarray) -> ScheduleTracker:
    t = ScheduleTracker()
    for i, x in enumerate(lr, start=1):
        t.update(i, float(x))
    return t


def test_constant() -> None:
    segs = _track(np.full(1000, 0.1)).segments()
    assert [s.kind for s in segs] == ["constant"] and describe(segs) == "constant"


def test_multistep_milestones_and_gamma() -> None:
    s = np.arange(1, 1001)
    lr = 0.1 * np.where(s > 500, 0.1, 1.0) * np.where(s > 750, 0.1, 1.0)
    segs = _track(lr).segments()
    steps = [x for x in segs if x.kind == "step"]
    assert [x.start_step for x in steps] == [501, 751]
    assert math.isclose(steps[0].params["gamma_median"], 0.1, rel_tol=1e-6)
    assert describe(segs) == "multistep"


def test_warmup_then_cosine() -> None:
    s = np.arange(1, 1001)
    w = 100
    lr = np.where(s <= w, s / w, 0.01 + 0.99 * 0.5 * (1 + np.cos(math.pi * (s - w) / (1000 - w))))
    t = _track(0.001 * lr)
    segs = t.segments()
    assert segs[0].kind == "warmup" and abs(segs[0].end_step - w) <= 2
    assert math.isclose(segs[0].params["peak_lr"], 0.001, rel_tol=0.02)
    assert segs[-1].kind == "cosine"
    assert t.warmup_end_step == w and not t.in_warmup()


def test_exponential_decay() -> None:
    lr = 0.1 * 0.995 ** np.arange(1000)
    segs = _track(lr).segments()
    assert segs[-1].kind == "exponential"
    assert math.isclose(segs[-1].params["gamma_per_step"], 0.995, rel_tol=1e-3)


def test_bad_lr_values_ignored_and_bounded_knots() -> None:
    t = ScheduleTracker(max_knots=32)
    rng = np.random.default_rng(0)
    for i in range(1, 5001):
        t.update(i, float(rng.choice([np.nan, -1.0, 0.0, 1e-3 * (1 + rng.random())])))
    assert len(t.knots) <= 33
    t.segments()


def test_schedule_via_analyzer_and_rollback() -> None:
    s = np.arange(1, 601)
    lr = 0.1 * np.where(s > 300, 0.1, 1.0)
    an, _ = stream({"lr": (s, lr)})
    assert any(x.kind == "step" for x in an.schedule())
    an.feed({"lr": (s[200:250], np.full(50, 0.1))}, branch=1, branch_start_step=201)
    assert all(x.kind != "step" for x in an.schedule())


def test_one_cycle_vs_warmup_cosine() -> None:
    s = np.arange(1, 1001)
    up = 300
    lr = np.where(
        s <= up,
        0.04 + 0.96 * s / up,
        1e-4 + (1 - 1e-4) * 0.5 * (1 + np.cos(math.pi * (s - up) / (1000 - up))),
    )
    assert describe(_track(0.01 * lr).segments()) == "one_cycle"
    w = 50
    lr2 = np.where(s <= w, s / w, 0.5 * (1 + np.cos(math.pi * (s - w) / (1000 - w))) + 0.01)
    assert describe(_track(0.01 * lr2).segments()) != "one_cycle"
