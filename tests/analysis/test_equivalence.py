"""The vectorised ``RunAnalyzer.feed`` is exactly the per-point reference implementation
(``tests/analysis/reference``): same events, schedule segments and final state, whatever
the batch size. Whole corpora: ``python -m tests.analysis.equivalence DIR``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rhythmd.analysis.offline import read_csv_columns
from rhythmd.eval.streams import synthetic

from .analysis_helpers import CURVES
from .equivalence import BATCHES, compare, variants

CSVS = sorted(CURVES.glob("*.csv"))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("path", CSVS, ids=[p.stem[:40] for p in CSVS])
def test_real_curves_identical(path, batch: int) -> None:
    cols = read_csv_columns(path)
    rc = {"total_steps": max(int(s.max()) for s, _ in cols.values() if s.size)}
    for _, cc in variants(cols):
        assert compare(cc, rc, batch) == []


def _synthetic_cols(n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    s, loss, lr = synthetic(n, seed)
    return {"train_loss": (s, loss), "lr": (s, lr)}


@pytest.mark.parametrize("batch", [12, 333, 1000])
def test_synthetic_train_only_with_spikes_and_restarts(batch: int) -> None:
    cols = _synthetic_cols(6000, 3)
    s, loss = cols["train_loss"]
    loss = loss.copy()
    loss[2000:2040] *= np.linspace(1, 6, 40)  # divergence that recovers
    loss[[900, 3100, 3101, 4500]] *= [20, 9, 9, 1e300]  # spikes, a huge finite value
    loss[5000:5003] = [math.nan, math.inf, -math.inf]
    lr = cols["lr"][1].copy()
    lr[3000:] = lr[3000:] * 0.1  # a milestone
    lr[[100, 200]] = [math.nan, -1.0]  # ignored lr points
    cols = {"train_loss": (s, loss), "lr": (s, lr)}
    for rc in ({}, {"total_steps": 6000}):
        assert compare(cols, rc, batch) == []


def test_unsorted_repeats_branches_and_val_switch() -> None:
    cols = _synthetic_cols(3000, 1)
    s, loss = cols["train_loss"]
    lr = cols["lr"][1]
    rng = np.random.default_rng(0)
    feeds = []
    for i0 in range(0, 2000, 100):
        sl = slice(i0, i0 + 100)
        perm = rng.permutation(100)
        b = {
            "train_loss": (np.r_[s[sl][perm], s[sl][:5]], np.r_[loss[sl][perm], loss[sl][:5]]),
            "lr": (s[sl], lr[sl]),
        }
        if i0 >= 1000:
            v = s[sl][s[sl] % 50 == 0]
            b["val_loss"] = (v, loss[v - 1] * 0.9)
        feeds.append({"batch": b})
    feeds.append({"batch": {"train_loss": (s[1500:1600], loss[1500:1600] * 3)}, "branch": 1})
    feeds.append(
        {
            "batch": {"train_loss": (s[1600:2600], loss[1600:2600])},
            "branch": 2,
            "branch_start_step": 1400,
        }
    )
    feeds.append({"batch": {"train_loss": (s[2600:2700], loss[2600:2700])}, "branch": 1})
    assert compare({}, {"total_steps": 3000}, 0, feeds=feeds) == []
