"""LR-schedule identification: the real torch schedulers, stepped, named with their params."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rhythmd.analysis.schedule import ScheduleTracker, describe

from .analysis_helpers import stream

torch = pytest.importorskip("torch")
L = torch.optim.lr_scheduler


def torch_lrs(build: Callable[[Any], Any], steps: int, lr: float = 0.1,
              metric: Callable[[int], float] | None = None) -> np.ndarray:
    """The LR of each optimizer step, as a training loop sees it (``param_groups[0]['lr']``
    before ``optimizer.step()``; ``scheduler.step()`` after it)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(opt)
        for i in range(steps):
            out.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            if i < steps - 1:
                sched.step(metric(i)) if metric is not None else sched.step()
    return np.asarray(out)


def feed(lr: np.ndarray, mode: str, first_step: int = 0) -> ScheduleTracker:
    """Feed a per-step lr stream: per point, in random batches, sparse (every 10 steps,
    from step 0, or from step 10 as a client that logs every k steps does) in batches, or
    as float32 with 1e-7 relative noise in random batches."""
    s = np.arange(first_step, first_step + lr.size)
    v = lr.copy()
    rng = np.random.default_rng(1)
    if mode == "sparse":
        s, v = s[::10], v[::10]
    if mode == "sparse_late":
        s, v = s[10::10], v[10::10]
    if mode == "f32_noise":
        v = v.astype(np.float32).astype(np.float64) * (1 + 1e-7 * rng.standard_normal(v.size))
    t = ScheduleTracker()
    if mode == "points":
        for a, b in zip(s.tolist(), v.tolist(), strict=True):
            t.update(a, b)
        return t
    i = 0
    while i < s.size:
        n = int(rng.choice([1, 5, 23, 24, 100, 777]))
        t.update_many(s[i : i + n], v[i : i + n])
        i += n
    return t


MODES = ["points", "batches", "sparse", "sparse_late", "f32_noise"]


def close(got: Any, want: float, rel: float = 1e-3, abs_: float = 0.0) -> bool:
    return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=rel, abs_tol=abs_)


def steps_close(got: Any, want: int, mode: str) -> bool:
    """Step counts: exact from dense streams; within the logging interval from sparse ones."""
    return isinstance(got, int) and abs(got - want) <= (10 if mode.startswith("sparse") else 0)


# name -> (builder, steps, expected torch name, check(params, mode), phase checks)
def _check_step(p: dict[str, Any], mode: str) -> bool:
    return steps_close(p["step_size"], 100, mode) and close(p["gamma"], 0.5)


def _check_multistep(p: dict[str, Any], mode: str) -> bool:
    ok = [steps_close(m, w, mode) for m, w in zip(p["milestones"], [300, 700, 800], strict=True)]
    return all(ok) and close(p["gamma"], 0.1)


def _check_exp(p: dict[str, Any], mode: str) -> bool:
    return close(p["gamma"], 0.995, rel=1e-6) and close(p["base_lr"], 0.1)


def _check_cos(p: dict[str, Any], mode: str) -> bool:
    return steps_close(p["T_max"], 1000, "sparse") and close(p["eta_min"], 1e-4, rel=1e-2)


def _check_cos0(p: dict[str, Any], mode: str) -> bool:
    return steps_close(p["T_max"], 800, "sparse") and close(p["eta_min"], 0.0, abs_=1e-6)


def _check_restarts(p: dict[str, Any], mode: str) -> bool:
    return (p["T_0"] == 100 and p["T_mult"] == 2 and close(p["eta_min"], 1e-4, rel=1e-2)
            and close(p["base_lr"], 0.1))


def _check_restarts1(p: dict[str, Any], mode: str) -> bool:
    return p["T_0"] == 200 and p["T_mult"] == 1 and close(p["eta_min"], 0.0, abs_=1e-6)


def _check_onecycle_cos(p: dict[str, Any], mode: str) -> bool:
    return (p["anneal_strategy"] == "cos" and close(p["max_lr"], 0.1)
            and steps_close(p["total_steps"], 2000, mode) and close(p["pct_start"], 0.3, 1e-2)
            and close(p["div_factor"], 25.0) and close(p["final_lr"], 0.1 / 25 / 1e4, 1e-2))


def _check_onecycle_lin(p: dict[str, Any], mode: str) -> bool:
    return (p["anneal_strategy"] == "linear" and close(p["max_lr"], 0.1)
            and steps_close(p["total_steps"], 1000, mode) and close(p["pct_start"], 0.25, 1e-2)
            and close(p["initial_lr"], 0.1 / 25) and p["warmup_steps"] in range(240, 251)
            and p["three_phase"] is False)


def _check_onecycle_three(p: dict[str, Any], mode: str) -> bool:
    return (p["three_phase"] is True and p["anneal_strategy"] == "cos"
            and steps_close(p["total_steps"], 1000, mode) and close(p["pct_start"], 0.3, 1e-2)
            and close(p["max_lr"], 0.1) and close(p["div_factor"], 25.0))


def _check_poly(p: dict[str, Any], mode: str) -> bool:
    return steps_close(p["total_iters"], 800, mode) and close(p["power"], 2.0)


def _check_poly1(p: dict[str, Any], mode: str) -> bool:
    return steps_close(p["total_iters"], 1000, mode) and close(p["power"], 1.0)


def _check_linear_warmup(p: dict[str, Any], mode: str) -> bool:
    return (close(p["start_factor"], 0.1) and steps_close(p["total_iters"], 200, mode)
            and p["end_factor"] == 1.0)


def _check_linear_decay(p: dict[str, Any], mode: str) -> bool:
    return (p["start_factor"] == 1.0 and close(p["end_factor"], 0.1)
            and steps_close(p["total_iters"], 600, mode))


def _check_constantlr(p: dict[str, Any], mode: str) -> bool:
    return close(p["factor"], 1 / 3) and steps_close(p["total_iters"], 50, mode)


def _seq(p: dict[str, Any], mode: str, warm: int, sf: float, child: str) -> dict[str, Any]:
    lin, main = p["schedulers"]
    assert lin["scheduler"] == "LinearLR" and main["scheduler"] == child
    assert close(lin["params"]["start_factor"], sf) and steps_close(p["milestones"][0], warm, mode)
    return dict(main["params"])


def _check_seq_cos(p: dict[str, Any], mode: str) -> bool:
    m = _seq(p, mode, 100, 0.01, "CosineAnnealingLR")
    return steps_close(m["T_max"], 1900, mode) and close(m["eta_min"], 1e-5, 1e-2)


def _check_seq_step(p: dict[str, Any], mode: str) -> bool:
    m = _seq(p, mode, 50, 0.1, "StepLR")
    return steps_close(m["step_size"], 300, mode) and close(m["gamma"], 0.3)


def _check_seq_exp(p: dict[str, Any], mode: str) -> bool:
    m = _seq(p, mode, 100, 0.05, "ExponentialLR")
    return close(m["gamma"], 0.998, rel=1e-6)


def _check_seq_poly(p: dict[str, Any], mode: str) -> bool:
    m = _seq(p, mode, 60, 0.01, "PolynomialLR")
    return steps_close(m["total_iters"], 1140, mode) and close(m["power"], 1.0)


def _check_constant(p: dict[str, Any], mode: str) -> bool:
    return close(p["lr"], 0.1, 1e-6)


CASES: dict[str, tuple[Callable[[Any], Any], int, str, Callable[..., bool],
                       dict[int, str]]] = {
    "constant": (lambda o: L.ConstantLR(o, factor=1.0, total_iters=0), 500, "constant",
                 _check_constant, {0: "constant", 499: "constant", 5000: "constant"}),
    "StepLR": (lambda o: L.StepLR(o, step_size=100, gamma=0.5), 1000, "StepLR", _check_step,
               {50: "decay", 999: "decay", 2000: "decay"}),
    "MultiStepLR": (lambda o: L.MultiStepLR(o, milestones=[300, 700, 800], gamma=0.1), 1000,
                    "MultiStepLR", _check_multistep, {10: "constant", 999: "constant"}),
    "ExponentialLR": (lambda o: L.ExponentialLR(o, gamma=0.995), 1000, "ExponentialLR",
                      _check_exp, {10: "decay", 5000: "decay"}),
    "CosineAnnealingLR": (lambda o: L.CosineAnnealingLR(o, T_max=1000, eta_min=1e-4), 1000,
                          "CosineAnnealingLR", _check_cos, {20: "decay", 990: "decay"}),
    "CosineAnnealingLR_past_T_max": (lambda o: L.CosineAnnealingLR(o, T_max=800), 1000,
                                     "CosineAnnealingLR", _check_cos0,
                                     {500: "decay", 900: "unknown"}),
    "CosineAnnealingWarmRestarts": (
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2, eta_min=1e-4), 1500,
        "CosineAnnealingWarmRestarts", _check_restarts, {50: "decay", 1499: "decay"}),
    "CosineAnnealingWarmRestarts_T_mult_1": (
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=200), 1000,
        "CosineAnnealingWarmRestarts", _check_restarts1, {650: "decay"}),
    "OneCycleLR_cos": (lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=2000), 2000,
                       "OneCycleLR", _check_onecycle_cos,
                       {100: "warmup", 590: "warmup", 610: "decay", 1999: "decay",
                        2100: "unknown"}),
    "OneCycleLR_linear": (lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=1000,
                                                 pct_start=0.25, anneal_strategy="linear"),
                          1000, "OneCycleLR", _check_onecycle_lin,
                          {10: "warmup", 500: "decay"}),
    "OneCycleLR_three_phase": (lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=1000,
                                                      three_phase=True), 1000, "OneCycleLR",
                               _check_onecycle_three, {100: "warmup", 400: "decay",
                                                       800: "decay", 1100: "unknown"}),
    "OneCycleLR_three_phase_linear": (
        lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=1000, three_phase=True,
                               anneal_strategy="linear"), 1000, "OneCycleLR",
        lambda p, mode: (p["anneal_strategy"] == "linear" and p["three_phase"] is True
                         and steps_close(p["total_steps"], 1000, mode)
                         and close(p["pct_start"], 0.3, 1e-2)),
        {100: "warmup", 400: "decay"}),
    "PolynomialLR": (lambda o: L.PolynomialLR(o, total_iters=800, power=2.0), 800,
                     "PolynomialLR", _check_poly, {400: "decay", 900: "constant"}),
    "PolynomialLR_power_1": (lambda o: L.PolynomialLR(o, total_iters=1000), 1000,
                             "PolynomialLR", _check_poly1, {10: "decay"}),
    "LinearLR_warmup": (lambda o: L.LinearLR(o, start_factor=0.1, total_iters=200), 1000,
                        "LinearLR", _check_linear_warmup,
                        {0: "warmup", 150: "warmup", 300: "constant", -5: "unknown"}),
    "LinearLR_decay": (lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                            total_iters=600), 1000, "LinearLR",
                       _check_linear_decay, {300: "decay", 700: "constant"}),
    "ConstantLR": (lambda o: L.ConstantLR(o, factor=1 / 3, total_iters=50), 500, "ConstantLR",
                   _check_constantlr, {100: "constant"}),
    "SequentialLR_warmup_cosine": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, total_iters=100),
                                     L.CosineAnnealingLR(o, T_max=1900, eta_min=1e-5)],
                                 milestones=[100]), 2000, "SequentialLR", _check_seq_cos,
        {50: "warmup", 120: "decay", 1999: "decay"}),
    "SequentialLR_warmup_step": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=50),
                                     L.StepLR(o, step_size=300, gamma=0.3)],
                                 milestones=[50]), 1500, "SequentialLR", _check_seq_step,
        {25: "warmup", 60: "decay", 1400: "decay"}),
    "SequentialLR_warmup_exponential": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.05, total_iters=100),
                                     L.ExponentialLR(o, gamma=0.998)], milestones=[100]),
        1500, "SequentialLR", _check_seq_exp, {10: "warmup", 700: "decay"}),
    "SequentialLR_warmup_linear_decay": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, total_iters=60),
                                     L.PolynomialLR(o, total_iters=1140)], milestones=[60]),
        1200, "SequentialLR", _check_seq_poly, {30: "warmup", 600: "decay"}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_torch_scheduler_identified(case: str, mode: str) -> None:
    build, n, name, check, phases = CASES[case]
    t = feed(torch_lrs(build, n), mode)
    d = t.describe()
    assert d["scheduler"] == name, d
    assert name == "constant" or hasattr(L, name)  # users see torch's own class names
    assert check(d["params"], mode), d["params"]
    assert d["fit_rms_log"] < 1e-4
    for step, ph in phases.items():  # (lr from step 10: the schedule is placed from step 0)
        assert t.phase(step) == ph, (step, t.phase(step), d)
    if mode == "sparse_late":  # steps counted from the stream's step 0
        assert d["params"]["start_step"] == 0, d
    assert d["segments"] and all(isinstance(s["kind"], str) for s in d["segments"])
    assert len(t.knots) <= t.max_knots
    assert json.loads(json.dumps(d)) == d  # plain JSON types (no numpy scalars)


def test_warmup_hold_decay_and_lambda_schedules() -> None:
    """Warmup-stable-decay (SequentialLR of three), Hugging Face-style LambdaLR warmups with
    linear or cosine decay to 0 (named by the torch classes that give the same curve), and
    MultiplicativeLR with a constant factor (ExponentialLR)."""
    wsd = torch_lrs(lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.01, total_iters=100), L.ConstantLR(o, factor=1.0),
            L.LinearLR(o, start_factor=1.0, end_factor=0.01, total_iters=300)],
        milestones=[100, 700]), 1000)
    for mode in ("batches", "sparse"):
        t = feed(wsd, mode)
        d = t.describe()
        assert d["scheduler"] == "SequentialLR", d
        names = [c["scheduler"] for c in d["params"]["schedulers"]]
        assert names == ["LinearLR", "ConstantLR", "PolynomialLR"]
        assert all(steps_close(m, w, mode)
                   for m, w in zip(d["params"]["milestones"], [100, 700], strict=True))
        assert [t.phase(s) for s in (50, 400, 800)] == ["warmup", "constant", "decay"]
    for decay, child in (("linear", "PolynomialLR"), ("cos", "CosineAnnealingLR")):
        def f(s: int, decay: str = decay) -> float:
            if s < 100:
                return s / 100
            u = (s - 100) / 4900
            return 1 - u if decay == "linear" else 0.5 * (1 + math.cos(math.pi * u))

        lr = torch_lrs(lambda o, f=f: L.LambdaLR(o, f), 5000)  # lr 0 at step 0: ignored
        d = feed(lr, "batches", first_step=0).describe()
        assert d["scheduler"] == "SequentialLR", d
        lin, main = d["params"]["schedulers"]
        assert close(lin["params"]["start_factor"], 0.01), lin  # lr(step 1) / peak
        assert main["scheduler"] == child and d["params"]["milestones"] == [99], d
        assert steps_close(main["params"].get("T_max", main["params"].get("total_iters")),
                           4900, "dense")
    lr = torch_lrs(lambda o: L.MultiplicativeLR(o, lambda _: 0.99), 500)
    d = feed(lr, "batches").describe()
    assert d["scheduler"] == "ExponentialLR" and close(d["params"]["gamma"], 0.99, 1e-9)


@pytest.mark.parametrize("every", [50, 500])
def test_hugging_face_logging_every_k_steps(every: int) -> None:
    """A Trainer-style run: cosine with a 500-step warmup over 10,000 steps, lr logged every
    50 or 500 steps from that step on. Every 50: the warmup and the cosine; every 500 (no
    point inside the warmup): the cosine from the first point."""
    def f(s: int) -> float:
        return s / 500 if s < 500 else 0.5 * (1 + math.cos(math.pi * (s - 500) / 9500))

    lr = torch_lrs(lambda o: L.LambdaLR(o, f), 10_000, lr=3e-4)
    s = np.arange(every, 10_000, every)
    t = ScheduleTracker()
    t.update_many(s, lr[s])
    d = t.describe()
    cos = d["params"]["schedulers"][1]["params"] if every == 50 else d["params"]
    assert d["scheduler"] == ("SequentialLR" if every == 50 else "CosineAnnealingLR"), d
    assert abs(cos["T_max"] - 9500) <= 1 and close(cos["base_lr"], 3e-4, 1e-6)
    if every == 50:
        assert d["params"]["milestones"] == [500] and d["params"]["start_step"] == 0
    assert t.phase() == "decay" and t.phase(9_999) == "decay"


def test_reduce_lr_on_plateau_cuts_are_multistep() -> None:
    """Plateaus of irregular length: cuts by the factor at irregular steps; the last cut is
    clamped at min_lr, so its factor differs."""
    plateaus = {0: 0, 180: 1, 470: 2, 520: 3, 900: 4}
    level = 0

    def metric(i: int) -> float:
        nonlocal level
        level = plateaus.get(i, level)
        return 1.0 / (1 + level) + (1e-3 * (i % 7) if i % 3 else 0.0)

    build = lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=20, min_lr=0.004)  # noqa: E731
    lr = torch_lrs(build, 1200, metric=metric)
    cuts = np.flatnonzero(np.diff(lr)) + 1
    assert len(cuts) >= 2
    for mode in ("batches", "sparse"):
        d = feed(lr, mode).describe()
        assert d["scheduler"] == "MultiStepLR", d
        p = d["params"]
        assert all(steps_close(m, int(c), mode)
                   for m, c in zip(p["milestones"], cuts, strict=True))
        assert close(p["gamma"], 0.5)
        want = [lr[c] / lr[c - 1] for c in cuts]
        assert np.allclose(p.get("gammas", [p["gamma"]] * len(cuts)), want, rtol=1e-6)


def test_first_lr_zero_and_late_first_step() -> None:
    """A warmup from lr 0 (the zero is ignored) logged from step 1000: steps count from the
    first positive lr point, the stream's own step numbers in ``milestone_steps``."""
    lr = torch_lrs(lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=1e-9, total_iters=100),
            L.MultiStepLR(o, milestones=[400, 700])], milestones=[100]), 1000)
    lr[0] = 0.0
    t = feed(lr, "batches", first_step=1000)
    d = t.describe()
    assert d["scheduler"] == "SequentialLR"
    lin, main = d["params"]["schedulers"]
    assert lin["scheduler"] == "LinearLR" and main["scheduler"] == "MultiStepLR"
    assert main["params"]["milestone_steps"] == [1500, 1800]
    assert main["params"]["milestones"] == [400, 700]
    assert abs(d["params"]["milestones"][0] - 99) <= 1
    assert t.phase(1050) == "warmup" and t.phase(1300) == "constant"


def test_in_progress_runs() -> None:
    """Before the end: a warmup still rising, a cosine at 60 % (T_max extrapolated), a
    StepLR before its second cut (one cut: MultiStepLR, not yet predictable)."""
    warm = torch_lrs(lambda o: L.LinearLR(o, start_factor=0.01, total_iters=500), 300)
    t = feed(warm, "batches")
    assert t.describe()["scheduler"] == "LinearLR" and t.phase() == "warmup" and t.in_warmup()
    cos = torch_lrs(lambda o: L.CosineAnnealingLR(o, T_max=5000, eta_min=1e-5), 3000)
    t = feed(cos, "batches")
    d = t.describe()
    assert d["scheduler"] == "CosineAnnealingLR" and abs(d["params"]["T_max"] - 5000) <= 5
    assert t.phase() == "decay" and t.phase(4900) == "decay" and t.phase(5100) == "unknown"
    step = torch_lrs(lambda o: L.StepLR(o, step_size=400, gamma=0.1), 700)
    t = feed(step, "batches")
    assert t.describe()["scheduler"] == "MultiStepLR" and t.phase() == "constant"


def test_float_rounding_and_tiny_noise_keep_the_live_flags() -> None:
    """A constant lr from a float32 tensor, or with 1e-12 relative noise, is constant: no
    live warmup, no change since the first step; a float32 LinearLR warmup still is one."""
    rng = np.random.default_rng(3)
    for lr in (np.full(500, np.float32(3e-4), dtype=np.float64),
               3e-4 * (1 + 1e-12 * rng.standard_normal(500))):
        t = ScheduleTracker()
        t.update_many(np.arange(500), lr)
        assert not t.in_warmup() and t.warmup_end_step is None
        assert t.last_change_step is None
        assert t.describe()["scheduler"] == "constant" and t.phase() == "constant"
    warm = torch_lrs(CASES["LinearLR_warmup"][0], 1000).astype(np.float32).astype(np.float64)
    t = ScheduleTracker()
    t.update_many(np.arange(150), warm[:150])
    assert t.in_warmup() and t.phase() == "warmup"
    t.update_many(np.arange(150, 1000), warm[150:])
    assert not t.in_warmup() and abs(t.warmup_end_step - 200) <= 1
    assert t.phase() == "constant"


def test_long_periodic_runs_past_the_knot_bound() -> None:
    """Hundreds of cuts, restarts or cycles: the older knots are thinned (<= 512 kept), and
    the scheduler is named from the first knot and the unthinned ones."""
    cases = [
        (lambda o: L.StepLR(o, step_size=20, gamma=0.9), "StepLR",
         {"step_size": 20, "gamma": 0.9}),
        (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=50, eta_min=1e-4),
         "CosineAnnealingWarmRestarts", {"T_0": 50, "T_mult": 1, "eta_min": 1e-4}),
        (lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=25), "CyclicLR",
         {"step_size_up": 25, "step_size_down": 25, "max_lr": 0.1}),
    ]
    for build, name, want in cases:
        t = feed(torch_lrs(build, 6000), "batches")
        assert t.thinned_to is not None and len(t.knots) <= t.max_knots
        d = t.describe()
        assert d["scheduler"] == name, d
        for k, v in want.items():
            assert close(d["params"][k], v, 1e-6), (k, d["params"])
        assert close(d["params"]["base_lr"], 0.1 if name != "CyclicLR" else 0.01, 1e-6)


def test_irregular_logging_from_an_unseen_start() -> None:
    """lr logged at random steps (about 1 in 7), the first one after the scheduler's start:
    StepLR still found, with the start it implies."""
    lr = torch_lrs(lambda o: L.StepLR(o, step_size=200, gamma=0.7), 3000)
    keep = np.sort(np.random.default_rng(0).choice(3000, 400, replace=False))
    assert keep[0] > 0
    t = ScheduleTracker()
    t.update_many(keep, lr[keep])
    d = t.describe()
    assert d["scheduler"] == "StepLR" and d["params"]["step_size"] == 200, d
    assert abs(d["params"].get("start_step", keep[0])) <= 2 and close(d["params"]["gamma"], 0.7)


def test_bulk_and_per_point_give_the_same_knots() -> None:
    lr = torch_lrs(CASES["OneCycleLR_cos"][0], 2000)
    a, b = feed(lr, "points"), feed(lr, "batches")
    assert a.knots == b.knots and a.n == b.n
    assert a.describe() == b.describe()


def test_state_round_trip_and_old_two_element_knots() -> None:
    lr = torch_lrs(CASES["StepLR"][0], 1000)
    t = feed(lr, "batches")
    twin = ScheduleTracker()
    twin.load_state_dict(t.state_dict())
    assert twin.describe() == t.describe() and "_ident" not in t.state_dict()
    old = t.state_dict()  # saved before knots carried the sample ordinal
    old["knots"] = [k[:2] for k in old["knots"]]
    twin = ScheduleTracker()
    twin.load_state_dict(old)
    assert twin.describe()["scheduler"] == "StepLR"


@pytest.mark.parametrize("mode", ["batches", "sparse"])
def test_cyclic_lr(mode: str) -> None:
    """CyclicLR in its three modes: step sizes, base and max lr, gamma; rising half
    'warmup', falling half 'decay', extrapolated."""
    for kw, want_gamma in (({"mode": "triangular"}, None), ({"mode": "triangular2"}, None),
                           ({"mode": "exp_range", "gamma": 0.999}, 0.999)):
        lr = torch_lrs(lambda o, kw=kw: L.CyclicLR(o, base_lr=0.01, max_lr=0.1,
                                                   step_size_up=60, step_size_down=140, **kw),
                       1000)
        t = feed(lr, mode)
        d = t.describe()
        assert d["scheduler"] == "CyclicLR" and d["params"]["mode"] == kw["mode"], d
        p = d["params"]
        assert (p["step_size_up"], p["step_size_down"]) == (60, 140)
        assert close(p["base_lr"], 0.01, 1e-6) and close(p["max_lr"], 0.1, 1e-6)
        assert want_gamma is None or close(p["gamma"], want_gamma, 1e-6)
        assert [t.phase(s) for s in (30, 100, 1230, 1300)] == ["warmup", "decay"] * 2


def test_unknown_schedule_is_not_forced_into_a_name() -> None:
    """ExponentialLR chained with StepLR (ChainedScheduler) fits none of the models:
    'unknown', with segments by direction and no phase claimed past the last point."""
    lr = torch_lrs(lambda o: L.ChainedScheduler([L.ExponentialLR(o, gamma=0.999),
                                                 L.StepLR(o, step_size=200, gamma=0.5)]),
                   1000)
    t = feed(lr, "batches")
    d = t.describe()
    assert d["scheduler"] == "unknown", d
    assert {s["kind"] for s in d["segments"]} >= {"decay", "step"}
    assert t.phase(500) == "decay" and t.phase(5000) == "unknown"


def test_bad_lr_values_ignored_and_bounded_knots() -> None:
    t = ScheduleTracker(max_knots=32)
    rng = np.random.default_rng(0)
    for i in range(1, 5001):
        t.update(i, float(rng.choice([np.nan, -1.0, 0.0, 1e-3 * (1 + rng.random())])))
    assert len(t.knots) <= 33
    t.segments()
    assert t.phase() in ("warmup", "constant", "decay", "unknown")


def test_schedule_via_analyzer_and_rollback() -> None:
    s = np.arange(1, 601)
    lr = 0.1 * np.where(s > 300, 0.1, 1.0)
    an, _ = stream({"lr": (s, lr)})
    assert any(x.kind == "step" for x in an.schedule())
    assert an.sched.describe()["scheduler"] == "MultiStepLR"
    an.feed({"lr": (s[200:250], np.full(50, 0.1))}, branch=1, branch_start_step=201)
    assert all(x.kind != "step" for x in an.schedule())
    an.feed({"lr": (s[250:400], np.full(150, 0.01))}, branch=1)
    assert an.sched.describe()["params"]["milestone_steps"] == [251]  # the cut after a rollback


def test_segments_keep_their_kinds() -> None:
    """Segments (the API's /schedule) keep the piece kinds; describe() of segments names
    the torch scheduler they belong to."""
    lr = torch_lrs(CASES["SequentialLR_warmup_cosine"][0], 2000)
    segs = feed(lr, "batches").segments()
    assert [s.kind for s in segs] == ["warmup", "cosine"]
    assert abs(segs[0].end_step - 100) <= 2 and close(segs[0].params["peak_lr"], 0.1, 1e-6)
    assert describe(segs) == "SequentialLR(LinearLR,CosineAnnealingLR)"
    lr = torch_lrs(CASES["MultiStepLR"][0], 1000)
    segs = feed(lr, "batches").segments()
    assert [s.start_step for s in segs if s.kind == "step"] == [300, 700, 800]
    assert describe(segs) == "MultiStepLR"
