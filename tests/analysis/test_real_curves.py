"""Real curves (small copies in tests/data/curves) through the online path."""

from __future__ import annotations

import json

import pytest

from rhythmd.analysis.offline import analyze_csv, read_csv_columns

from .analysis_helpers import CURVES

LABELS = {j["run_id"]: j for j in map(json.loads, (CURVES / "labels.jsonl").open())}


def _first(diags, kind):
    return next((d.detected_at_step for d in diags if d.kind == kind), None)


@pytest.mark.parametrize(
    "run",
    ["digits_mlp__sgd__lr0.3__constant__bs64__s0", "digits_mlp__adam__lr0.5__constant__bs64__s0"],
)
def test_diverged_runs_flagged_in_time(run: str) -> None:
    diags, _ = analyze_csv(CURVES / f"{run}.csv", {"total_steps": 800})
    flag = _first(diags, "divergence")
    assert flag is not None and flag <= LABELS[run]["blowup_step"] + 20


def test_lucky_low_first_batch_is_not_divergence() -> None:
    run = "diabetes_mlp__adam__lr1e-05__constant__bs32__s0"
    diags, _ = analyze_csv(CURVES / f"{run}.csv", {"total_steps": 600})
    assert _first(diags, "divergence") is None


@pytest.mark.parametrize(
    "run",
    [
        "digits_mlp__sgd__lr0.01__multistep__bs64__s0",
        "digits_mlp__adamw__lr0.01__multistep__bs64__s1",
    ],
)
def test_stagnation_within_ten_evals_of_onset(run: str) -> None:
    diags, segs = analyze_csv(CURVES / f"{run}.csv", {"total_steps": 800})
    onset = LABELS[run]["stagnation_onset"]
    flag = _first(diags, "stagnation")
    assert flag is not None and onset <= flag <= onset + 10 * 20
    assert [s.start_step for s in segs if s.kind == "step"] == [401, 601]


def test_oscillating_run_flagged() -> None:
    run = "digits_mlp__adamw__lr0.03__cosine__bs64__s0"
    diags, segs = analyze_csv(CURVES / f"{run}.csv", {"total_steps": 800})
    d = next(d for d in diags if d.kind == "oscillation")
    assert d.evidence["cause"] in ("lr_too_large", "eval_noise")
    assert segs[-1].kind == "cosine"


def test_nanogpt_data_spikes_are_not_divergence() -> None:
    diags, _ = analyze_csv(CURVES / "nanogpt_windowwarmup_seed0.csv")
    assert _first(diags, "divergence") is None
    assert any(d.kind == "spike" for d in diags)


def test_csv_reader_handles_nonfinite_and_empty(tmp_path) -> None:
    p = tmp_path / "x.csv"
    p.write_text(
        "step,train_loss,lr,val_loss,val_acc\n1,2.3,0.1,,\n2,nan,0.1,inf,\n3,-inf,,"
        "bogus,\n,1,1,1,1\n"
    )
    cols = read_csv_columns(p)
    assert cols["train_loss"][0].tolist() == [1, 2, 3]
    assert cols["val_loss"][0].tolist() == [2, 3]
    diags, _ = analyze_csv(p)
    assert any(d.kind == "divergence" and d.severity == "critical" for d in diags)
