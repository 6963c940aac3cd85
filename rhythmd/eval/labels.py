"""Post-hoc outcome labels of one training curve (the dev corpus's fixed criteria).

Pure functions, no I/O. ``label_run`` reproduces the labels of the ``dev`` curve corpus
(divergence version 3, spikes, stagnation, oscillation, healthy) from a run's per-step train
loss and its evaluations. All windows are counted as the criteria count them: train-loss
windows in recorded steps, validation windows in evaluations.

One generalisation, identical on positive losses: the relative thresholds of the stagnation
rule (1 % of ``B_s``) and of the oscillation rule (3 % of the window's median) use absolute
values, so that a validation loss that goes negative (Gaussian NLL) is judged by the same
relative change instead of never (or always) meeting them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

BLOWUP_X_REF = 3.0  # R_t above this many ref: blow-up
DEAD_PEAK_X_REF = 1.5  # excursion of a dead run: max R_t >= this many ref
DEAD_END_X_TRIVIAL = 0.97  # a dead run ends at E >= this many T
RECOVERED_END_X_TRIVIAL = 0.9  # a recovered blow-up ends at E < this many T
R_WINDOW_STEPS = 5  # trailing median of the train loss, full windows only
SPIKE_CONTEXT_STEPS = 20  # spike reference: median of the 20 steps before
SPIKE_X_MEDIAN = 3.0
SPIKE_RECOVERY_STEPS = 100
SPIKE_RECOVERED_X_MEDIAN = 1.5
STAG_MEDIAN_EVALS = 3
STAG_REL_GAIN = 0.01
STAG_MIN_REST_FRACTION = 0.3
OSC_WINDOW_EVALS = 8
OSC_PATH_X_NET = 4.0
OSC_MEAN_STEP_REL = 0.03
HEALTHY_BEFORE_FRACTION = 0.8


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _num(x: float | None) -> float | None:
    """``x`` as a JSON-safe float (None for None and non-finite)."""
    return float(x) if _finite(x) else None


def trailing_median(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing median over full windows (NaN before the first full one or if any is NaN)."""
    out = np.full(values.shape, np.nan)
    if values.size >= window:
        win = np.lib.stride_tricks.sliding_window_view(values, window)
        ok = np.isfinite(win).all(axis=1)
        med = np.full(win.shape[0], np.nan)
        if ok.any():
            med[ok] = np.median(win[ok], axis=1)
        out[window - 1 :] = med
    return out


def divergence(steps: np.ndarray, loss: np.ndarray, trivial_loss: float) -> dict[str, Any]:
    """Divergence fields (version 3) from the per-step train loss."""
    n = loss.size
    finite = np.isfinite(loss)
    first = float(loss[0]) if n else math.nan
    ref = max(first, trivial_loss) if math.isfinite(first) else trivial_loss
    r = trailing_median(loss, R_WINDOW_STEPS)
    tail = loss[n - math.ceil(0.1 * n) :] if n else loss
    end = float(np.median(tail)) if tail.size and np.isfinite(tail).all() else math.nan
    with np.errstate(invalid="ignore"):
        above3 = np.flatnonzero(r > BLOWUP_X_REF * ref)
        above15 = np.flatnonzero(r > DEAD_PEAK_X_REF * ref)
    nonfinite_step = int(steps[np.argmin(finite)]) if not finite.all() else None
    r_fin = r[np.isfinite(r)]
    peak = float(r_fin.max()) if r_fin.size else math.nan
    kind: str | None = None
    blowup: int | None = None
    if nonfinite_step is not None:
        kind = "nonfinite"
        blowup = nonfinite_step
        if above3.size:
            blowup = min(blowup, int(steps[above3[0]]))
    elif above3.size:
        kind = "blowup"
        blowup = int(steps[above3[0]])
    elif (
        math.isfinite(end)
        and end >= DEAD_END_X_TRIVIAL * trivial_loss
        and math.isfinite(peak)
        and peak >= DEAD_PEAK_X_REF * ref
    ):
        kind = "dead"
        blowup = int(steps[above15[0]])
    recovered = (
        kind == "blowup" and math.isfinite(end) and end < RECOVERED_END_X_TRIVIAL * trivial_loss
    )
    return {
        "diverged": kind is not None,
        "divergence_kind": kind,
        "blowup_step": blowup,
        "nonfinite_step": nonfinite_step,
        "recovered": bool(recovered),
        "first_train_loss": _num(first),
        "trivial_loss": float(trivial_loss),
        "ref_loss": float(ref),
        "end_train_median": _num(end),
        "end_over_trivial": _num(end / trivial_loss) if trivial_loss else None,
        "peak_over_ref": _num(peak / ref) if ref else None,
        "peak_over_first": _num(peak / first) if first else None,
    }


def spike_steps(steps: np.ndarray, loss: np.ndarray) -> list[int]:
    """Steps t (t > 20) with L_t > 3 x median of the 20 before, recovered within 100 steps."""
    r = trailing_median(loss, R_WINDOW_STEPS)
    bad = ~np.isfinite(loss)
    out: list[int] = []
    for i in range(SPIKE_CONTEXT_STEPS, loss.size):
        if steps[i] <= SPIKE_CONTEXT_STEPS:
            continue
        ctx = loss[i - SPIKE_CONTEXT_STEPS : i]
        if not np.isfinite(ctx).all():
            continue
        m = float(np.median(ctx))
        if not loss[i] > SPIKE_X_MEDIAN * m:
            continue
        for j in range(i, min(i + SPIKE_RECOVERY_STEPS, loss.size - 1) + 1):
            if bad[j]:
                break
            if j > i and r[j] <= SPIKE_RECOVERED_X_MEDIAN * m:
                out.append(int(steps[i]))
                break
    return out


def stagnation_onset(val_steps: np.ndarray, val: np.ndarray, last_step: int) -> int | None:
    """First eval step s whose best-so-far smoothed val loss is within 1 % of the end's best,
    with at least 30 % of the run (in steps) left after it."""
    if val.size == 0:
        return None
    v = np.array(
        [np.median(val[max(0, k - STAG_MEDIAN_EVALS + 1) : k + 1]) for k in range(val.size)]
    )
    b = np.fmin.accumulate(v)
    b_end = b[-1]
    for k in range(val.size):
        s = int(val_steps[k])
        if last_step - s < STAG_MIN_REST_FRACTION * last_step:
            break
        if b[k] - b_end < STAG_REL_GAIN * abs(b[k]):
            return s
    return None


def oscillation(val_steps: np.ndarray, val: np.ndarray) -> tuple[int | None, int | None]:
    """(onset, first window end): end steps of the first two consecutive flagged windows."""
    w = OSC_WINDOW_EVALS
    prev = False
    for k in range(w - 1, val.size):
        win = val[k - w + 1 : k + 1]
        flagged = False
        if np.isfinite(win).all():
            d = np.abs(np.diff(win))
            net = abs(win[-1] - win[0])
            flagged = bool(
                d.sum() >= OSC_PATH_X_NET * net
                and d.mean() >= OSC_MEAN_STEP_REL * abs(float(np.median(win)))
            )
        if flagged and prev:
            return int(val_steps[k]), int(val_steps[k - 1])
        prev = flagged
    return None, None


def label_run(
    steps: Sequence[int],
    train_loss: Sequence[float],
    val_steps: Sequence[int],
    val_loss: Sequence[float],
    trivial_loss: float,
    val_acc: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """All labels of one run (the fields of the dev corpus's ``labels.jsonl``, less ids).

    ``steps``/``train_loss``: every recorded step (1-based, ascending) and its minibatch loss;
    ``val_steps``/``val_loss``: the evaluation steps and the validation metric to minimise;
    ``trivial_loss``: T, the train loss of the best constant predictor.
    """
    st = np.asarray(steps, dtype=np.int64)
    tl = np.asarray(train_loss, dtype=np.float64)
    vs = np.asarray(val_steps, dtype=np.int64)
    vl = np.asarray(val_loss, dtype=np.float64)
    last = int(st[-1]) if st.size else 0
    div = divergence(st, tl, trivial_loss)
    spikes = spike_steps(st, tl)
    stag = osc = osc_first = None
    if not div["diverged"]:
        stag = stagnation_onset(vs, vl, last)
        osc, osc_first = oscillation(vs, vl)
    cut = HEALTHY_BEFORE_FRACTION * last
    healthy = (
        not div["diverged"]
        and not (stag is not None and stag < cut)
        and not (osc is not None and osc < cut)
    )
    fin = vl[np.isfinite(vl)]
    accs = [a for a in (val_acc or []) if _finite(a)]
    return {
        "n_steps": int(st.size),
        "last_step": last,
        "n_evals": int(vs.size),
        "diverged": div["diverged"],
        "divergence_kind": div["divergence_kind"],
        "blowup_step": div["blowup_step"],
        "nonfinite_step": div["nonfinite_step"],
        "recovered": div["recovered"],
        "recovered_spike": bool(spikes),
        "spike_steps": spikes,
        "first_spike_step": spikes[0] if spikes else None,
        "stagnated": stag is not None,
        "stagnation_onset": stag,
        "oscillating": osc is not None,
        "oscillation_onset": osc,
        "oscillation_first_window_end": osc_first,
        "healthy": healthy,
        "healthy_strict": healthy and not (spikes and spikes[0] < cut),
        "final_val_loss": _num(float(vl[-1])) if vl.size else None,
        "best_val_loss": float(fin.min()) if fin.size else None,
        "final_val_acc": _num(val_acc[-1]) if val_acc else None,
        "best_val_acc": max(accs) if accs else None,
        **{
            k: div[k]
            for k in (
                "first_train_loss",
                "trivial_loss",
                "ref_loss",
                "end_train_median",
                "end_over_trivial",
                "peak_over_ref",
                "peak_over_first",
            )
        },
    }
