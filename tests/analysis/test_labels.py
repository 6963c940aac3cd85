"""The post-hoc labeller reproduces the dev corpus's labels and its fixed criteria."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rhythmd.eval.labels import label_run

from .analysis_helpers import CURVES

T_DIGITS = 2.3024778340109533
T_DIABETES = 0.9999999268717381
# Fields of the dev corpus's labels.jsonl for the dev curves copied into tests/data/curves.
DEV: dict[str, dict[str, Any]] = {
    "diabetes_mlp__adam__lr1e-05__constant__bs32__s0": {
        "T": T_DIABETES,
        "diverged": False,
        "divergence_kind": None,
        "blowup_step": None,
        "spike_steps": [],
        "stagnation_onset": None,
        "oscillation_onset": None,
        "healthy": True,
        "healthy_strict": True,
        "end_train_median": 0.8553315,
        "peak_over_ref": 1.1988600876705544,
    },
    "digits_mlp__adam__lr0.5__constant__bs64__s0": {
        "T": T_DIGITS,
        "diverged": True,
        "divergence_kind": "blowup",
        "blowup_step": 5,
        "recovered": False,
        "spike_steps": [33, 194, 195, 206],
        "stagnation_onset": None,
        "oscillation_onset": None,
        "healthy": False,
        "end_train_median": 2.337745,
        "peak_over_ref": 807.2426258261856,
    },
    "digits_mlp__adamw__lr0.01__multistep__bs64__s1": {
        "T": T_DIGITS,
        "diverged": False,
        "stagnation_onset": 460,
        "oscillation_onset": 260,
        "oscillation_first_window_end": 240,
        "healthy": False,
        "first_spike_step": 51,
        "spike_steps": [
            51,
            56,
            57,
            109,
            127,
            132,
            146,
            148,
            154,
            157,
            161,
            165,
            174,
            182,
            188,
            189,
            191,
            198,
            211,
            216,
            224,
            238,
            242,
            256,
            266,
            298,
            301,
        ],
    },
    "digits_mlp__adamw__lr0.03__cosine__bs64__s0": {
        "T": T_DIGITS,
        "diverged": False,
        "stagnation_onset": None,
        "oscillation_onset": 180,
        "oscillation_first_window_end": 160,
        "healthy": False,
        "end_train_median": 0.000457634,
        "peak_over_ref": 0.46556865093794786,
    },
    "digits_mlp__sgd__lr0.01__multistep__bs64__s0": {
        "T": T_DIGITS,
        "diverged": False,
        "spike_steps": [382, 562, 643],
        "stagnation_onset": 420,
        "oscillation_onset": None,
        "healthy": False,
        "healthy_strict": False,
        "end_train_median": 0.03163955,
    },
    "digits_mlp__sgd__lr0.3__constant__bs64__s0": {
        "T": T_DIGITS,
        "diverged": True,
        "divergence_kind": "blowup",
        "blowup_step": 132,
        "recovered": False,
        "spike_steps": [59, 74, 76, 80, 85, 114, 118, 119, 130, 132, 151, 156, 168],
        "stagnation_onset": None,
        "end_train_median": 2.3118749999999997,
        "peak_over_ref": 3.527445402237386,
    },
}


def _read(path: Path) -> tuple[list[int], list[float], list[int], list[float], list[float]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ev = [r for r in rows if r["val_loss"] != ""]
    acc = [float(r["val_acc"]) for r in ev if r.get("val_acc")]
    return (
        [int(r["step"]) for r in rows],
        [float(r["train_loss"]) for r in rows],
        [int(r["step"]) for r in ev],
        [float(r["val_loss"]) for r in ev],
        acc,
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return bool(a == b)


@pytest.mark.parametrize("run_id", sorted(DEV))
def test_reproduces_dev_labels(run_id: str) -> None:
    want = dict(DEV[run_id])
    st, tl, vs, vl, acc = _read(CURVES / f"{run_id}.csv")
    got = label_run(st, tl, vs, vl, want.pop("T"), acc or None)
    diff = {k: (got[k], v) for k, v in want.items() if not _same(got[k], v)}
    assert not diff


@pytest.mark.skipif(not os.environ.get("RHYTHMD_DEV_CORPUS"), reason="RHYTHMD_DEV_CORPUS unset")
def test_reproduces_the_whole_dev_corpus() -> None:
    root = Path(os.environ["RHYTHMD_DEV_CORPUS"])
    with (root / "labels.jsonl").open() as fh:
        labels = [json.loads(x) for x in fh]
    for lab in labels:
        st, tl, vs, vl, acc = _read(root / "runs" / f"{lab['run_id']}.csv")
        got = label_run(st, tl, vs, vl, lab["trivial_loss"], acc or None)
        diff = {
            k: (got.get(k), v)
            for k, v in lab.items()
            if k not in ("run_id", "task") and not _same(got.get(k), v)
        }
        assert not diff, (lab["run_id"], diff)


def _curve(n: int, f: Any) -> tuple[list[int], list[float]]:
    return list(range(1, n + 1)), [float(f(t)) for t in range(1, n + 1)]


def test_divergence_kinds() -> None:
    vs, vl = [100, 200, 300], [1.0, 0.9, 0.8]
    st, tl = _curve(300, lambda t: 1.0 if t < 100 else (math.nan if t == 150 else 0.5))
    lab = label_run(st, tl, vs, vl, trivial_loss=1.0)
    assert (lab["divergence_kind"], lab["nonfinite_step"], lab["blowup_step"]) == (
        "nonfinite",
        150,
        150,
    )
    # blow-up (R > 3 ref from step 102) that ends well below T: diverged and recovered
    st, tl = _curve(300, lambda t: 10.0 if 100 <= t < 120 else 0.2)
    lab = label_run(st, tl, vs, vl, trivial_loss=1.0)
    assert (lab["divergence_kind"], lab["blowup_step"], lab["recovered"]) == ("blowup", 102, True)
    # excursion to 2x ref, ends at T: dead; the same ending at 0.9 T is not diverged
    st, tl = _curve(300, lambda t: 2.0 if 50 <= t < 60 else (0.5 if t < 50 else 1.0))
    assert label_run(st, tl, vs, vl, trivial_loss=1.0)["divergence_kind"] == "dead"
    st, tl = _curve(300, lambda t: 2.0 if 50 <= t < 60 else (0.5 if t < 50 else 0.9))
    assert not label_run(st, tl, vs, vl, trivial_loss=1.0)["diverged"]
    # a single wild loss never counts: R is a 5-step median
    st, tl = _curve(300, lambda t: 1e6 if t == 40 else 0.5)
    lab = label_run(st, tl, vs, vl, trivial_loss=1.0)
    assert not lab["diverged"] and lab["spike_steps"] == [40]


def test_stagnation_and_oscillation_on_a_negative_loss() -> None:
    """The relative thresholds use |B_s| and |median|: a loss converging near -1 stagnates."""
    st, tl = _curve(1000, lambda t: 0.5)
    vs = list(range(10, 1001, 10))
    conv = [-1.0 + 2.0 * math.exp(-s / 50) for s in vs]
    lab = label_run(st, tl, vs, conv, trivial_loss=1.0)
    assert lab["stagnated"] and lab["stagnation_onset"] is not None
    assert lab["stagnation_onset"] <= 300 and not lab["oscillating"]
    # still improving by 2 %+ over the last 30 %: not stagnated
    lin = [-0.5 - 0.5 * s / 1000 for s in vs]
    assert not label_run(st, tl, vs, lin, trivial_loss=1.0)["stagnated"]
    zigzag = [-1.0 + (0.2 if k % 2 else 0.0) for k in range(len(vs))]
    lab = label_run(st, tl, vs, zigzag, trivial_loss=1.0)
    assert lab["oscillating"] and lab["oscillation_onset"] == vs[8]
    assert lab["oscillation_first_window_end"] == vs[7]
    assert not lab["healthy"]
    # the same zigzag 5x smaller (1 % of |median|) is below the 3 % bar
    small = [-1.0 + (0.01 if k % 2 else 0.0) for k in range(len(vs))]
    assert not label_run(st, tl, vs, small, trivial_loss=1.0)["oscillating"]


def test_trailing_median_needs_full_finite_windows() -> None:
    from rhythmd.eval.labels import trailing_median

    r = trailing_median(np.array([1.0, 2, 3, 4, 5, math.nan, 7, 8, 9, 10, 11]), 5)
    assert np.isnan(r[:4]).all() and r[4] == 3.0
    assert np.isnan(r[5:10]).all() and r[10] == 9.0
