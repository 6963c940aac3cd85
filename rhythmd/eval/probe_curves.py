"""The curves the probes are built from: LR schedules computed like the torch schedulers,
loss laws in effective steps, correlated noise, and a classifier run's per-step truth."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from rhythmd.eval.probe_types import Series


# ----------------------------------------------------------------------- LR schedules
# Each returns the LR of optimizer steps 0..n-1 (the LR after ``i`` scheduler steps).
def lr_constant(n_steps: int, lr: float) -> np.ndarray:
    return np.full(n_steps, float(lr))


def lr_warmup_cosine(n_steps: int, peak_lr: float, warmup_steps: int,
                     min_ratio: float = 0.1, decay_steps: int | None = None) -> np.ndarray:
    """nanoGPT's ``get_lr``: linear warmup to ``peak_lr``, cosine to ``min_ratio * peak_lr``
    at ``decay_steps`` (default: the end), constant after."""
    i = np.arange(n_steps, dtype=np.float64)
    decay = float(decay_steps or n_steps)
    min_lr = peak_lr * min_ratio
    ratio = np.clip((i - warmup_steps) / max(decay - warmup_steps, 1.0), 0.0, 1.0)
    out = min_lr + 0.5 * (1.0 + np.cos(np.pi * ratio)) * (peak_lr - min_lr)
    warm = i < warmup_steps
    out[warm] = peak_lr * (i[warm] + 1) / (warmup_steps + 1)
    return out


def lr_step(n_steps: int, lr: float, step_size: int, gamma: float = 0.1) -> np.ndarray:
    """torch ``StepLR``: ``lr * gamma ** (i // step_size)``."""
    return lr * gamma ** (np.arange(n_steps) // step_size)


def lr_one_cycle(n_steps: int, max_lr: float, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> np.ndarray:
    """torch ``OneCycleLR`` (``anneal_strategy="cos"``, two phases)."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    i = np.arange(n_steps, dtype=np.float64)
    up_end = float(pct_start * n_steps) - 1.0
    down_end = float(n_steps - 1)

    def cos_anneal(start: float, end: float, pct: np.ndarray) -> np.ndarray:
        return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1.0)

    up = cos_anneal(initial, max_lr, np.clip(i / up_end, 0.0, 1.0))
    down = cos_anneal(max_lr, final, np.clip((i - up_end) / (down_end - up_end), 0.0, 1.0))
    return np.where(i <= up_end, up, down)


def lr_cosine_restarts(n_steps: int, lr: float, t0_steps: int, t_mult: int = 1,
                       eta_min: float = 0.0) -> np.ndarray:
    """torch ``CosineAnnealingWarmRestarts`` stepped once per optimizer step."""
    out = np.empty(n_steps)
    start, period = 0, t0_steps
    while start < n_steps:
        t_cur = np.arange(min(period, n_steps - start), dtype=np.float64)
        out[start:start + t_cur.size] = eta_min + (lr - eta_min) * (
            1.0 + np.cos(np.pi * t_cur / period)) / 2.0
        start += period
        period *= t_mult
    return out


def lr_linear_decay(n_steps: int, lr: float, end_factor: float = 0.0) -> np.ndarray:
    """Linear annealing to ``end_factor * lr`` (torch ``LinearLR`` from 1, CleanRL's PPO)."""
    return lr * (1.0 - (1.0 - end_factor) * np.arange(n_steps) / n_steps)


# ------------------------------------------------------------------------ curve pieces
def _rng(seed: int, group: str) -> np.random.Generator:
    """One generator per (seed, group): a group's variants share their noise."""
    return np.random.default_rng([seed, zlib.crc32(group.encode())])


def effective_steps(lr: np.ndarray, lr_ref: float) -> np.ndarray:
    """Training progress in steps at the reference LR: ``cumsum(lr / lr_ref)``."""
    return np.cumsum(lr / lr_ref)


def power_law(tau: np.ndarray, start: float, floor: float, tau0_steps: float,
              alpha: float) -> np.ndarray:
    """``floor + (start - floor) * (1 + tau / tau0) ** -alpha`` (start at tau = 0)."""
    return floor + (start - floor) * (1.0 + tau / tau0_steps) ** -alpha


def sigmoid_law(tau: np.ndarray, start: float, floor: float, tau0_steps: float,
                beta: float) -> np.ndarray:
    """``floor + (start - floor) / (1 + (tau / tau0) ** beta)``: a slow start (an accuracy
    near chance for the first evaluations), then a power-law approach to ``floor``."""
    return floor + (start - floor) / (1.0 + (tau / tau0_steps) ** beta)


def ema(x: np.ndarray, memory_steps: float) -> np.ndarray:
    """Exponential moving average over steps, started at 0 (a quantity that builds up)."""
    a = 1.0 / max(memory_steps, 1.0)
    out = np.empty_like(x, dtype=np.float64)
    acc = 0.0
    for i, v in enumerate(x.tolist()):
        acc += a * (v - acc)
        out[i] = acc
    return out


def ou_noise(rng: np.random.Generator, n_steps: int, sigma: float,
             corr_steps: float) -> np.ndarray:
    """Stationary Ornstein–Uhlenbeck noise per step: stddev ``sigma``, correlation time
    ``corr_steps`` (evaluations a few steps apart are nearly the same draw)."""
    rho = math.exp(-1.0 / max(corr_steps, 1e-9))
    eps = rng.standard_normal(n_steps) * sigma * math.sqrt(1.0 - rho * rho)
    out = np.empty(n_steps)
    x = float(rng.standard_normal() * sigma)
    for i, e in enumerate(eps.tolist()):
        x = rho * x + e
        out[i] = x
    return out


def minibatch_noise(rng: np.random.Generator, n_steps: int, rel_sigma: float) -> np.ndarray:
    """Multiplicative per-step factor: log-normal with relative stddev ``rel_sigma``."""
    return np.exp(rng.standard_normal(n_steps) * rel_sigma - 0.5 * rel_sigma ** 2)


def every(steps: np.ndarray, values: np.ndarray, every_steps: int) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """The points at steps that are multiples of ``every_steps`` (an evaluation cadence)."""
    keep = steps % every_steps == 0
    return steps[keep].astype(np.int64), values[keep].astype(np.float64)


def _steps(n_steps: int) -> np.ndarray:
    """Optimizer steps 1..n (step ``i`` was taken with the LR of scheduler index ``i - 1``)."""
    return np.arange(1, n_steps + 1, dtype=np.int64)


def _pair(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(steps, np.int64).copy(), np.asarray(values, np.float64).copy()


def _scaled(series: Series, factor: float, names: tuple[str, ...]) -> Series:
    return {k: (s, v * factor if k in names else v) for k, (s, v) in series.items()}


def _spikes(values: np.ndarray, starts: list[int], heights: list[float],
            lengths_steps: list[int]) -> np.ndarray:
    """Multiply ``values`` at step indices ``starts`` by recovering spikes: the first step
    ``height`` x, then decaying geometrically back to ~1.05x over ``lengths_steps``."""
    out = values.copy()
    for i0, h, length in zip(starts, heights, lengths_steps, strict=True):
        k = np.arange(length, dtype=np.float64)
        decay = math.log(1.05 / h) / max(length - 1, 1) if length > 1 else 0.0
        out[i0:i0 + length] *= h * np.exp(decay * k)
    return out



@dataclass
class _Run:
    """The per-step truth of one group: steps, LR, train loss, validation at every step."""

    steps: np.ndarray
    lr: np.ndarray
    train: np.ndarray
    val: np.ndarray | None
    total_steps: int


def _classifier(rng: np.random.Generator, lr: np.ndarray, lr_ref: float, total_steps: int,
                start: float = 2.3, train_floor: float = 0.2, val_floor: float = 0.42,
                tau0_steps: float = 150.0, alpha: float = 0.9, lr_floor: float = 0.15,
                train_sigma: float = 0.08, val_sigma: float = 0.01,
                val_corr_steps: float = 60.0) -> _Run:
    """A cross-entropy classifier (10 classes: starts near ln 10 = 2.3). ``lr_floor``: the
    extra loss (absolute, at ``lr_ref``) that the LR's noise keeps while the LR is high."""
    n = lr.size
    tau = effective_steps(lr, lr_ref)
    noise_floor = lr_floor * ema(lr / lr_ref, 100.0)
    base = power_law(tau, start, train_floor, tau0_steps, alpha)
    train = (base + noise_floor * (base - train_floor + 0.3) / (start + 0.3)
             ) * minibatch_noise(rng, n, train_sigma)
    vbase = power_law(tau, start, val_floor, tau0_steps, alpha)
    val = (vbase + noise_floor * (vbase - val_floor + 0.3) / (start + 0.3)
           ) * np.exp(ou_noise(rng, n, val_sigma, val_corr_steps))
    return _Run(_steps(n), lr, train, val, total_steps)


def _series(run: _Run, val_every_steps: int | None) -> Series:
    """``lr`` and ``train_loss`` per step, ``val_loss`` every ``val_every_steps`` steps."""
    out: Series = {"lr": _pair(run.steps, run.lr), "train_loss": _pair(run.steps, run.train)}
    if run.val is not None and val_every_steps:
        out["val_loss"] = every(run.steps, run.val, val_every_steps)
    return out
