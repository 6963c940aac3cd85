"""RunAnalyzer contract: state round trip, determinism, bounded state."""

from __future__ import annotations

import json

import numpy as np

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.offline import read_csv_columns

from .analysis_helpers import CURVES, stream


def _batches(cols, size=50):
    hi = max(int(s.max()) for s, _ in cols.values())
    for e0 in range(1, hi + 1, size):
        b = {
            k: (s[(s >= e0) & (s < e0 + size)], v[(s >= e0) & (s < e0 + size)])
            for k, (s, v) in cols.items()
        }
        yield {k: x for k, x in b.items() if x[0].size}


def _dicts(an: RunAnalyzer) -> str:
    return json.dumps([d.to_dict() for d in an.diagnoses], allow_nan=True)


def test_state_round_trip_continues_identically() -> None:
    cols = read_csv_columns(CURVES / "digits_mlp__adamw__lr0.01__multistep__bs64__s1.csv")
    cfg = AnalysisConfig.from_run_config({"total_steps": 800})
    ref = RunAnalyzer(cfg)
    ref_events = [e.to_dict() for b in _batches(cols) for e in ref.feed(b)]
    for cut in (3, 9):
        an = RunAnalyzer(cfg)
        events = []
        for i, b in enumerate(_batches(cols)):
            if i == cut:
                blob = json.dumps(an.state_dict(), allow_nan=True)
                an = RunAnalyzer(AnalysisConfig())
                an.load_state_dict(json.loads(blob))
            events += [e.to_dict() for e in an.feed(b)]
        assert json.dumps(events, allow_nan=True) == json.dumps(ref_events, allow_nan=True)
        assert _dicts(an) == _dicts(ref)
        assert [s.to_dict() for s in an.schedule()] == [s.to_dict() for s in ref.schedule()]


def test_deterministic_ids() -> None:
    cols = read_csv_columns(CURVES / "digits_mlp__sgd__lr0.3__constant__bs64__s0.csv")
    a = [d.id for d in stream(cols)[0].diagnoses]
    b = [d.id for d in stream(cols)[0].diagnoses]
    assert a == b and len(set(a)) == len(a)
    assert all(i.split("-")[-1].isdigit() for i in a)


def test_batching_does_not_change_divergence_step() -> None:
    cols = read_csv_columns(CURVES / "digits_mlp__sgd__lr0.3__constant__bs64__s0.csv")
    flags = set()
    for size in (1, 7, 50, 800):
        an, _ = stream(cols, batch=size)
        flags.add(next(d.detected_at_step for d in an.diagnoses if d.kind == "divergence"))
    assert len(flags) == 1


def test_state_is_bounded() -> None:
    rng = np.random.default_rng(0)
    n = 60_000
    s = np.arange(1, n + 1)
    v = 2 + 0.5 * rng.normal(size=n)  # noisy, spiky, bouncing: many open/close cycles
    v[rng.random(n) < 0.01] *= 10
    an, _ = stream(
        {
            "train_loss": (s, v),
            "val_loss": (s[s % 10 == 0], v[s % 10 == 0]),
            "lr": (s, 0.1 * rng.random(n)),
        },
        batch=500,
    )
    size = len(json.dumps(an.state_dict(), allow_nan=True))
    assert size < 400_000
    assert len(an.diagnoses) <= 32 + 5


def test_diagnosis_to_dict_is_asdict_with_plain_evidence() -> None:
    import dataclasses

    from rhythmd.analysis.types import Diagnosis

    d = Diagnosis(id="x", kind="stagnation", metric="val_loss", detected_at_step=5,
                  onset_step=1, severity="high", confidence=0.5,
                  evidence={"a": np.float64(1.5), "b": (1, 2), "c": np.arange(2)},
                  message="m", status="closed", updated_at_step=7, closed_at_step=7)
    want = dataclasses.asdict(d)
    want["evidence"] = {"a": 1.5, "b": [1, 2], "c": [0, 1]}
    assert d.to_dict() == want
    assert type(d.to_dict()["evidence"]["a"]) is float


def test_the_branch_start_is_kept_and_survives_the_state() -> None:
    an = RunAnalyzer(AnalysisConfig(total_steps=400))
    s = np.arange(100)
    an.feed({"train_loss": (s, np.full(100, 1.0))})
    assert an.branch_start is None
    an.feed({"train_loss": (s[61:80], np.full(19, 1.0))}, branch=1, branch_start_step=61)
    again = RunAnalyzer()
    again.load_state_dict(json.loads(json.dumps(an.state_dict())))
    assert an.branch_start == again.branch_start == 61
