"""The problem runs of the catalogue (divergences, a plateau, a too-small LR, an
oscillation), each with its onset and deadline, and what is expected of them."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rhythmd.eval.probe_curves import (
    _classifier,
    _Run,
    lr_constant,
    lr_warmup_cosine,
    minibatch_noise,
    ou_noise,
)
from rhythmd.eval.probe_types import DIVERGENCE_FIXES


# --------------------------------------------------------------------- must-catch
def _div_nan(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n, total, onset = 600, 5000, 60
    run = _classifier(rng, lr_constant(n, 1.0), 0.1, total, tau0_steps=1500.0)
    grow = np.exp(np.clip(run.steps - onset, 0, None) / 14.0)
    run.train = run.train * grow
    val = run.val * grow if run.val is not None else grow
    first_bad = int(np.argmax(run.train > 1e4))
    run.train[first_bad] = np.inf
    run.train[first_bad + 1:] = np.nan
    val[first_bad:] = np.nan
    run.val = val
    return run, onset, int(run.steps[first_bad])


def _warmup_blowup(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n = total = 5000
    onset = 400
    # peak LR 10x the one that trains well (3e-3)
    run = _classifier(rng, lr_warmup_cosine(n, 3e-2, 1000, 0.1), 3e-3, total)
    rise = np.clip((run.steps - onset) / 60.0, 0.0, 1.0)
    # log-interpolate from the healthy curve to a chaotic level around 5 (far above the
    # starting 2.3) and stay there
    chaos = np.log(5.0) + ou_noise(rng, n, 0.25, 10.0)
    run.train = np.exp((1 - rise) * np.log(run.train) + rise * chaos)
    if run.val is not None:
        run.val = np.exp((1 - rise) * np.log(run.val) + rise * (chaos + 0.05))
    return run, onset, onset + 200


def _late_rise(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n = total = 5000
    onset = 3500
    lr = np.concatenate([lr_warmup_cosine(200, 1e-3, 200, 1.0), lr_constant(n - 200, 1e-3)])
    run = _classifier(rng, lr, 1e-3, total, train_floor=0.045, val_floor=0.3,
                      tau0_steps=100.0, alpha=1.2, lr_floor=0.0, train_sigma=0.12)
    rise = np.clip((run.steps - onset) / 100.0, 0.0, 1.0)
    run.train = run.train * np.exp(rise * math.log(10.0))
    if run.val is not None:
        run.val = run.val * np.exp(rise * math.log(2.7))
    return run, onset, onset + 200


def _plateau(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n = total = 10_000
    onset = 4000
    run = _classifier(rng, lr_constant(n, 0.05), 0.05, total)
    # a fast initial drop, then a slower approach that lands on the LR-noise floor at 40 % of
    # the budget (no slope left): flat from there
    t = run.steps.astype(float)
    landing = np.clip(1.0 - t / onset, 0.0, None) ** 2
    run.train = (0.55 + 1.2 * np.exp(-t / 150.0) + 0.55 * landing) * minibatch_noise(
        rng, n, 0.08)
    run.val = (0.7 + 1.05 * np.exp(-t / 150.0) + 0.55 * landing) * np.exp(
        ou_noise(rng, n, 0.006, 60.0))
    return run, onset, 7000


def _too_small_lr(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n = total = 10_000
    # SGD at 1e-3 where 0.1 trains well: the healthy run in slow motion
    run = _classifier(rng, lr_constant(n, 1e-3), 0.1, total, lr_floor=0.0)
    return run, 1, 5000


def _oscillation(rng: np.random.Generator) -> tuple[_Run, int, int]:
    n = total = 5000
    run = _classifier(rng, lr_constant(n, 0.3), 0.03, total, train_floor=0.5, val_floor=0.6,
                      tau0_steps=20.0, lr_floor=0.0, train_sigma=0.3)
    # overlapping catapults from step ~100-300 on, one every ~10 steps: each multiplies the
    # loss by x1.1-1.6 and relaxes over ~20 steps, so the loss wanders ~30 % (log sigma)
    # around a stalled level and evaluations 100 steps apart land at unrelated phases
    onset = int(rng.integers(100, 300))
    kicks = np.zeros(n)
    at = onset + np.cumsum(rng.exponential(8.0, n // 4).astype(int) + 2)
    at = at[at < n]
    kicks[at] = np.log(rng.uniform(1.1, 1.6, at.size))
    boost = np.zeros(n)
    acc, keep = 0.0, math.exp(-1.0 / 20.0)
    for i, k in enumerate(kicks.tolist()):
        acc = acc * keep + k
        boost[i] = acc
    run.train = run.train * np.exp(boost)
    if run.val is not None:
        run.val = run.val * np.exp(0.9 * boost)
    return run, onset, 2500


_MustBuild = Callable[[np.random.Generator], tuple[_Run, int, int]]
"""Builds a problem run: its per-step truth, the onset step and the deadline step."""
_MUST: dict[str, tuple[str, _MustBuild, frozenset[str], frozenset[str], int, int, str]] = {
    # name: (family, builder, kinds, actions, base cadence, second cadence, description)
    "div_nan": ("divergence", _div_nan, frozenset({"divergence"}), DIVERGENCE_FIXES, 100, 10,
                "SGD at 10x the stable LR: the loss falls for 60 steps, grows exponentially, "
                "turns inf then NaN (declared budget 5,000 steps; 600 streamed)"),
    "warmup_blowup": ("divergence", _warmup_blowup, frozenset({"divergence"}),
                      DIVERGENCE_FIXES, 100, 10,
                      "warmup to a peak LR 10x too high: at step 400, mid-warmup, the loss "
                      "climbs from ~1.3 to ~5 within 60 steps and stays there (finite)"),
    "late_rise": ("divergence", _late_rise, frozenset({"divergence"}), DIVERGENCE_FIXES, 100,
                  500, "a late sustained 10x rise: train loss 2.3 -> 0.06, then from step "
                  "3,500 up to 0.6 within 100 steps and held (val 0.33 -> 0.86)"),
    "plateau_constant_lr": ("stagnation", _plateau, frozenset({"stagnation"}),
                            frozenset({"reduce_lr"}), 100, 10,
                            "SGD 0.05 constant: lands on its LR-noise floor at 40 % of the "
                            "budget and stays flat (train ~0.55, val ~0.7)"),
    "too_small_lr": ("slow_progress", _too_small_lr, frozenset({"slow_progress"}),
                     frozenset({"increase_lr"}), 100, 500,
                     "SGD at 1e-3 where 0.1 trains well: the loss declines slowly and "
                     "steadily, 2.3 -> ~1.6 over the whole budget (the healthy run reaches "
                     "0.3)"),
    "osc_lr_too_large": ("oscillation", _oscillation, frozenset({"oscillation"}),
                         frozenset({"reduce_lr"}), 100, 10,
                         "SGD at 10x a good LR: from step ~100-300 on, overlapping catapults "
                         "(each x1.1-1.6, relaxing over ~20 steps, one every ~10 steps) that "
                         "never settle; train and validation loss bounce ~30 % together"),
}
