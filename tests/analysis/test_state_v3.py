"""The analyzer state saved and restored at every batch continues exactly as one analyzer that
never stopped, on the benchmark streams (divergences opening and closing, evaluations, a
blow-up); the closed diagnoses are encoded once; version 2 states still load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.analyzer import STATE_VERSION
from rhythmd.eval.streams import STREAMS, ingest_stream


def _batches(name: str) -> list[tuple[int, dict, int]]:
    s = ingest_stream(name, 60_000, 500)
    return [(i, {x["name"]: (np.asarray(x["steps"], np.int64), np.asarray(x["values"], float))
                 for x in s.runs[i].bodies[j]["series"]}, s.runs[i].total_steps)
            for i, j in s.order]


def _events(events: list) -> str:
    return json.dumps([e.to_dict() for e in events])


def _v2(state: dict) -> dict:
    """The same state as version 2 wrote it."""
    old = dict(state, version=2, diags=json.loads(state["diags"]))
    old["div"] = dict(state["div"], ys=[])  # filled below by the caller's analyzer
    return old


@pytest.mark.parametrize("name", STREAMS)
def test_restored_every_batch_continues_identically(name: str) -> None:
    batches = _batches(name)
    ref: dict[int, RunAnalyzer] = {}
    live: dict[int, RunAnalyzer] = {}
    for i, batch, total in batches:
        cfg = AnalysisConfig.from_run_config({"total_steps": total})
        want = _events(ref.setdefault(i, RunAnalyzer(cfg)).feed(batch))
        an = live.setdefault(i, RunAnalyzer(cfg))
        restored = RunAnalyzer()
        restored.load_state_dict(json.loads(json.dumps(an.state_dict())))
        live[i] = restored
        assert _events(restored.feed(batch)) == want
    for i, an in ref.items():
        assert json.dumps(live[i].state_dict()) == json.dumps(an.state_dict())
        assert json.dumps([d.to_dict() for d in live[i].diagnoses]) == json.dumps(
            [d.to_dict() for d in an.diagnoses])


def test_version_2_state_loads_and_continues() -> None:
    batches = [(b, t) for i, b, t in _batches("divergent") if i == 0]
    cfg = AnalysisConfig.from_run_config({"total_steps": batches[0][1]})
    ref, an = RunAnalyzer(cfg), RunAnalyzer(cfg)
    half = len(batches) // 2
    for b, _ in batches[:half]:
        ref.feed(b)
        an.feed(b)
    state = an.state_dict()
    assert state["version"] == STATE_VERSION == 3 and isinstance(state["diags"], str)
    assert "ys" not in state["div"]
    old = _v2(state)
    old["div"]["ys"] = list(an.div.ys)
    twin = RunAnalyzer()
    twin.load_state_dict(json.loads(json.dumps(old)))
    for b, _ in batches[half:]:
        assert _events(twin.feed(b)) == _events(ref.feed(b))
    assert json.dumps(twin.state_dict()) == json.dumps(ref.state_dict())


def test_closed_diagnoses_are_encoded_once_and_pruned() -> None:
    batches = [(b, t) for i, b, t in _batches("divergent") if i == 0]
    an = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": batches[0][1]}))
    for b, _ in batches:
        an.feed(b)
        an.state_dict()
    closed = {d.id for d in an.diagnoses if d.status == "closed"}
    assert len(closed) > 1 and set(an._encoded) == closed
    assert an.state_dict()["diags"] == json.dumps([d.to_dict() for d in an.diagnoses])


def test_unknown_state_version_is_refused() -> None:
    state = RunAnalyzer().state_dict()
    with pytest.raises(ValueError):
        RunAnalyzer().load_state_dict(dict(state, version=1))
