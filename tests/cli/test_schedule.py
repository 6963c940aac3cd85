"""``rhythmd schedule``: spec grammar, real torch schedulers, export round trip, plots."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from rhythmd.cli.schedule import SpecError, compute, export_python, parse_spec  # noqa: E402

SPECS = [
    "warmup:5%,cosine:eta_min=1e-6",
    "step:step_size=30,gamma=0.1",
    "multistep:milestones=30|60,gamma=0.1",
    "multistep:milestones=25%|75%,gamma=0.5",
    "onecycle:max_lr=0.1",
    "exponential:gamma=0.99",
    "constant",
    "constant:factor=0.5",
    "linear:end_factor=0.1",
    "poly:power=2",
    "restarts:T_0=20,T_mult=2,eta_min=1e-4",
    "warmup:10,constant:20,step:step_size=25,gamma=0.5",
    "warmup:10:start_factor=0.1,linear:50%,cosine",
    '{"kind": "cosine", "T_max": 60, "eta_min": 1e-3}',
    '{"kind": "cosine", "T_max": 40, "eta_min_factor": 0.1}',
    '{"action": "set_schedule", "params": {"kind": "multistep", "milestones": [20, 70], '
    '"gamma": 0.5}}',
]


def torch_lrs(build: Any, lr: float, steps: int) -> list[float]:
    """What a user's loop sees: the LR of each optimizer step."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = build(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_values() -> None:
    plan = parse_spec("warmup:5%,cosine:eta_min=1e-6", 100, 0.1)
    assert [c for c, _ in plan.schedulers] == ["LinearLR", "CosineAnnealingLR"]
    assert plan.milestones == [5]
    lrs = compute(plan)
    assert len(lrs) == 100
    assert lrs[0] == pytest.approx(0.1 * 0.01)
    assert lrs[5] == pytest.approx(0.1)  # peak right after the warmup
    # cosine over the remaining 95 steps, from 0.1 towards 1e-6
    k = 50
    expected = 1e-6 + (0.1 - 1e-6) * (1 + math.cos(math.pi * k / 95)) / 2
    assert lrs[5 + k] == pytest.approx(expected, rel=1e-6)
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(lrs[5:]))


def test_step_and_multistep_values() -> None:
    lrs = compute(parse_spec("step:step_size=30,gamma=0.1", 100, 0.1))
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    assert lrs[90] == pytest.approx(1e-4)
    lrs = compute(parse_spec("multistep:milestones=30%|60%", 200, 1.0))
    assert lrs[59] == 1.0 and lrs[60] == pytest.approx(0.1) and lrs[120] == pytest.approx(0.01)


@pytest.mark.parametrize("spec", SPECS)
def test_export_python_round_trip(spec: str) -> None:
    """The exported code, executed, reproduces the LRs the CLI computed, step for step."""
    steps, lr = 100, 0.1
    plan = parse_spec(spec, steps, lr)
    expected = compute(plan)
    code = export_python([plan])
    compile(code, "<export>", "exec")
    ns: dict[str, Any] = {}
    exec(code, ns)
    got = torch_lrs(ns["build_scheduler"], lr, steps)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_export_several_specs_via_cli(cli: Any, tmp_path: Path) -> None:
    r = cli("schedule", SPECS[0], SPECS[1], SPECS[13], "--steps", "80", "--lr", "0.05",
            "--export", "python")
    assert r.code == 0, r
    path = tmp_path / "sched.py"
    path.write_text(r.out)
    ns: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    for name, spec in (("build_scheduler", SPECS[0]), ("build_scheduler_2", SPECS[1]),
                       ("build_scheduler_3", SPECS[13])):
        assert torch_lrs(ns[name], 0.05, 80) == pytest.approx(
            compute(parse_spec(spec, 80, 0.05)), rel=1e-12)


def test_set_schedule_cosine_matches_client_semantics() -> None:
    """A recommendation's cosine: eta + (L - eta)(1 + cos(pi min(k, T)/T))/2, held after T
    (docs/recommendations.md), from the LR L at the step it is applied."""
    lr, t_max, eta = 0.2, 30, 0.002
    lrs = compute(parse_spec(json.dumps({"kind": "cosine", "T_max": t_max, "eta_min": eta}),
                             60, lr))
    for k in range(60):
        want = eta + (lr - eta) * (1 + math.cos(math.pi * min(k, t_max) / t_max)) / 2
        assert lrs[k] == pytest.approx(want, rel=1e-9), k


def test_set_schedule_rejects_other_actions_and_bad_params() -> None:
    with pytest.raises(SpecError, match="reduce_lr"):
        parse_spec('{"action": "reduce_lr", "params": {"factor": 0.5}}', 10, 0.1)
    with pytest.raises(SpecError, match="T_max"):
        parse_spec('{"kind": "cosine"}', 10, 0.1)
    with pytest.raises(SpecError, match="JSON"):
        parse_spec('{"kind": ', 10, 0.1)


@pytest.mark.parametrize(("spec", "message"), [
    ("bogus", "unknown schedule kind"),
    ("warmup,cosine", "needs a length"),
    ("step", "needs step_size"),
    ("cosine:gamma=0.1", "takes no parameter 'gamma'"),
    ("gamma=0.1", "before any kind"),
    ("warmup:100%,cosine", "leaving no steps"),
    ("warmup:0.5,cosine", "whole number"),
    ("linear:end_factor=2", "torch refused"),
    ("warmup:5,onecycle", "only phase"),
])
def test_bad_specs_are_usage_errors(cli: Any, spec: str, message: str) -> None:
    r = cli("schedule", spec, "--steps", "50")
    assert r.code == 2, r
    assert message in r.err
    assert "Traceback" not in r.err


def test_table_lists_key_steps(cli: Any) -> None:
    r = cli("schedule", "warmup:10%,cosine", "step:step_size=30,gamma=0.1",
            "{\"kind\": \"multistep\", \"milestones\": [50]}", "--steps", "100")
    assert r.code == 0, r
    assert "SequentialLR" in r.out and "StepLR" in r.out and "MultiStepLR" in r.out
    lines = {ln.split()[1]: ln for ln in r.out.splitlines() if ln.startswith("│")}
    for step in ("0", "9", "10", "29", "30", "50", "99"):
        assert step in lines, r.out
    assert "0.01" in lines["30"]  # StepLR after its first cut


def test_json_output(cli: Any) -> None:
    r = cli("schedule", "exponential:gamma=0.5", "--steps", "4", "--lr", "1", "--json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["schedules"][0]["lrs"] == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_file(cli: Any, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / f"lr{suffix}"
    r = cli("schedule", "warmup:5%,cosine:eta_min=1e-6", "onecycle", "--steps", "200",
            "--plot", out, "--log-y")
    assert r.code == 0, r
    data = out.read_bytes()
    assert len(data) > 5000
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:2000]


def test_plot_rejects_unknown_suffix(cli: Any, tmp_path: Path) -> None:
    r = cli("schedule", "cosine", "--steps", "10", "--plot", tmp_path / "x.gif")
    assert r.code == 2 and ".png" in r.err


def test_without_torch_says_what_to_install(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    r = cli("schedule", "cosine", "--steps", "10")
    assert r.code == 2
    assert "pip install 'rhythmd[torch]'" in r.err


def test_usage_errors(cli: Any) -> None:
    assert cli("schedule", "cosine").code == 2  # --steps is required
    assert cli("schedule", "cosine", "--steps", "0").code == 2
    assert cli("schedule", "cosine", "--steps", "10", "--lr", "-1").code == 2


@pytest.mark.parametrize(("spec", "name"), [
    ("warmup:5%,cosine:eta_min=1e-6", "SequentialLR"),
    ("step:step_size=100,gamma=0.5", "StepLR"),
    ("multistep:milestones=30|60,gamma=0.1", "MultiStepLR"),
    ("onecycle:max_lr=0.1", "OneCycleLR"),
    ("onecycle:anneal_strategy=linear", "OneCycleLR"),
    ("exponential:gamma=0.99", "ExponentialLR"),
    ("constant", "constant"),
    ("poly:power=2", "PolynomialLR"),
    ("restarts:T_0=20%,T_mult=2,eta_min=1e-4", "CosineAnnealingWarmRestarts"),
    ("warmup:10,constant:20,step:step_size=25,gamma=0.5", "SequentialLR"),
])
def test_identification_names_what_the_cli_computed(spec: str, name: str) -> None:
    """The schedule tracker names the torch class behind a spec's LRs, with the class names
    the CLI prints (SequentialLR children included)."""
    import numpy as np

    from rhythmd.analysis.schedule import ScheduleTracker

    plan = parse_spec(spec, 1000, 0.1)
    t = ScheduleTracker()
    t.update_many(np.arange(1000), np.asarray(compute(plan)))
    d = t.describe()
    assert d["scheduler"] == name, d
    classes = [cls for cls, _ in plan.schedulers]
    if name == "SequentialLR":
        got = [c["scheduler"] for c in d["params"]["schedulers"]]
        assert got[0] == classes[0] == "LinearLR" and got[-1] == classes[-1], (got, classes)
    elif name != "constant":
        assert classes == [name]
