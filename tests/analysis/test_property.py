"""Property test: no input crashes the analysis, and its state always round-trips."""

from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhythmd.analysis import AnalysisConfig, RunAnalyzer

_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            0.0,
            -0.0,
            5e-324,
            1e-310,
            1e308,
            -1e308,
            float("nan"),
            float("inf"),
            float("-inf"),
            2.3,
            1.0,
        ]
    ),
)
_steps = st.integers(min_value=-5, max_value=400)
_metric = st.sampled_from(["train_loss", "val_loss", "val_acc", "lr", "grad_norm", "other"])


@st.composite
def _batch(draw):
    out = {}
    for name in draw(st.sets(_metric, max_size=4)):
        n = draw(st.integers(0, 30))
        steps = draw(st.lists(_steps, min_size=n, max_size=n))
        vals = draw(st.lists(_values, min_size=n, max_size=n))
        out[name] = (np.asarray(steps, np.int64), np.asarray(vals, np.float64))
    return out


@settings(
    max_examples=int(os.environ.get("RHYTHMD_HYPO_N", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    batches=st.lists(st.tuples(_batch(), st.integers(0, 2), st.none() | _steps), max_size=8),
    total=st.none() | st.integers(1, 500),
)
def test_no_input_crashes(batches, total) -> None:
    an = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": total} if total else None))
    branch = 0
    for batch, bump, start in batches:
        branch += bump
        events = an.feed(batch, branch=branch, branch_start_step=start)
        for e in events:
            json.dumps(e.to_dict(), allow_nan=True)
    blob = json.dumps(an.state_dict(), allow_nan=True)
    twin = RunAnalyzer()
    twin.load_state_dict(json.loads(blob))
    assert json.dumps([d.to_dict() for d in twin.diagnoses], allow_nan=True) == json.dumps(
        [d.to_dict() for d in an.diagnoses], allow_nan=True
    )
    for seg in an.schedule():
        json.dumps(seg.to_dict(), allow_nan=True)


@settings(max_examples=25, deadline=None)
@given(vals=st.lists(_values, min_size=1, max_size=300))
def test_single_stream_any_values(vals) -> None:
    an = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": len(vals)}))
    s = np.arange(1, len(vals) + 1)
    v = np.asarray(vals, np.float64)
    an.feed({"train_loss": (s, v), "val_loss": (s[::5], v[::5]), "lr": (s, np.abs(v))})
    for d in an.diagnoses:
        assert d.detected_at_step >= d.onset_step or d.kind in ("stagnation", "slow_progress")
