"""Probe streams: realistic synthetic training runs, each with the verdict a careful ML
engineer expects (issue 14), and a runner that streams one through the analyzer and the
policy as the daemon would.

Pure numpy, seeded, no I/O. Curves follow a loss law in *effective steps*
(``tau = cumsum(lr / lr_ref)``: a too-small LR is the same run in slow motion) with a power-law
decay, an optional LR-proportional noise floor (the loss sits higher while the LR is high and
drops when it decays, as under StepLR or a cosine tail), multiplicative minibatch noise per step
on the train loss, and a validation curve with its own smaller noise that is correlated in
steps (an Ornstein–Uhlenbeck process: the same validation set, a model that changed little).
Validation is computed for every step and sampled at the evaluation cadence, so the variants of
one group share the same underlying curve. LR schedules are computed like the torch schedulers.

Use::

    from rhythmd.eval.probes import catalogue, run_probe
    for probe in catalogue(seed=0):
        result = run_probe(probe, batch_steps=50)
        result.passed, result.diagnoses, result.actions
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent, RunAnalyzer
from rhythmd.analysis.metrics import is_eval_name
from rhythmd.policy import TRIAL_ACTIONS, PolicyConfig, decide, run_context

Series = dict[str, tuple[np.ndarray, np.ndarray]]
NO_ACTION = "no_action"
DIVERGENCE_FIXES = frozenset({"rollback", "warmup", "reduce_lr"})
ACTING = frozenset({"reduce_lr", "increase_lr", "warmup", "set_schedule", "rollback", "stop"})
"""The actions the policy issues; each changes the run (its LR, its weights or its end), so on a
no-action probe any issued recommendation counts as acting on it."""


# ------------------------------------------------------------------------------ types
@dataclass(frozen=True)
class Catch:
    """A true problem: an acceptable diagnosis kind detected, and an acceptable action
    issued in answer to a diagnosis of an acceptable kind, at steps in
    ``[from_step, by_step]`` (optimizer steps)."""

    kinds: frozenset[str]
    actions: frozenset[str]
    from_step: int  # the problem exists from here (onset); earlier flags are not a catch
    by_step: int  # deadline

    def describe(self) -> str:
        return (f"{'|'.join(sorted(self.kinds))} -> {'|'.join(sorted(self.actions))} "
                f"in [{self.from_step}, {self.by_step}]")


@dataclass
class Probe:
    """One synthetic stream with its expected verdict.

    ``series``: metric name -> (steps int64 increasing, values float64), as a client sends
    them. ``run_config``: what the client declares (``total_steps``; ``metrics``: role per
    metric name, "min" | "max" | "objective" | "ignore", only where the probe declares them).
    ``expect``: ``"no_action"`` or a :class:`Catch`. ``group``/``variant``: probes of one group
    share the underlying curve (the variants change the evaluation cadence, the scale or the
    names), so their verdicts should agree.
    """

    name: str
    family: str
    description: str
    series: Series
    run_config: dict[str, Any]
    expect: str | Catch
    group: str
    variant: str = "base"
    seed: int = 0

    @property
    def must_catch(self) -> bool:
        return isinstance(self.expect, Catch)

    def expectation(self) -> str:
        """One line: "no action" or the acceptable kinds, actions and step window."""
        return self.expect.describe() if isinstance(self.expect, Catch) else "no action"

    @property
    def last_step(self) -> int:
        return max(int(s[-1]) for s, _ in self.series.values() if s.size)


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


# -------------------------------------------------------------------- the catalogue
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


@dataclass
class _Group:
    """The probes of one underlying curve: a shared generator and labels."""

    name: str
    seed: int
    rng: np.random.Generator

    def probe(self, name: str, family: str, description: str, series: Series,
              total_steps: int, expect: str | Catch = NO_ACTION, variant: str = "base",
              metrics: dict[str, str] | None = None) -> Probe:
        cfg: dict[str, Any] = {"total_steps": int(total_steps)}
        if metrics:
            cfg["metrics"] = dict(metrics)
        return Probe(name, family, description, series, cfg, expect, self.name, variant,
                     self.seed)


_GroupBuild = Callable[[_Group], list[Probe]]
_GROUPS: dict[str, _GroupBuild] = {}


def _group(name: str) -> Callable[[_GroupBuild], _GroupBuild]:
    """Register a builder of one group's probes under ``name`` (also its noise stream)."""
    def register(build: _GroupBuild) -> _GroupBuild:
        _GROUPS[name] = build
        return build
    return register


@_group("healthy")
def _healthy(g: _Group) -> list[Probe]:
    """One healthy classifier (AdamW, warmup + cosine) at four eval cadences and two scales."""
    n = 5000
    run = _classifier(g.rng, lr_warmup_cosine(n, 1e-3, 100, 0.0), 1e-3, n)
    desc = ("healthy classifier, AdamW 1e-3 with 100 warmup steps and cosine to 0, train "
            "2.3 -> 0.3, val 2.3 -> 0.57")
    out = [g.probe(f"healthy_every_{k}", "cadence", f"{desc}; val every {k} steps",
                   _series(run, k), n, variant=f"every_{k}") for k in (1, 10, 100, 1000)]
    for factor, tag in ((1e-3, "1e-3"), (1e3, "1e3")):
        out.append(g.probe(f"healthy_scale_{tag}", "scale",
                           f"{desc}; losses x{tag}, val every 100 steps",
                           _scaled(_series(run, 100), factor, ("train_loss", "val_loss")), n,
                           variant=f"scale_{tag}"))
    return out


@_group("nanogpt_spikes")
def _nanogpt(g: _Group) -> list[Probe]:
    n = 5000
    lr = lr_warmup_cosine(n, 6e-4, 200, 0.1)
    tau = effective_steps(lr, 6e-4)
    train = power_law(tau, 10.9, 2.85, 60.0, 0.8) * minibatch_noise(g.rng, n, 0.015)
    train = _spikes(train, [700, 1400, 2150, 3050, 3900], [2.6, 2.2, 2.8, 2.4, 3.0],
                    [1, 1, 3, 5, 6])
    val = power_law(tau, 10.9, 2.95, 60.0, 0.8) * np.exp(ou_noise(g.rng, n, 0.003, 100.0))
    run = _Run(_steps(n), lr, train, val, n)
    desc = ("GPT-2-small-like LM, AdamW 6e-4, 200 warmup steps + cosine to 6e-5, loss 10.9 -> "
            "3.2, five 2.2-3x spikes (1, 1, 3, 5, 6 steps) that recover")
    return [g.probe("nanogpt_spikes", "spikes", f"{desc}; val every 250 steps",
                    _series(run, 250), n),
            g.probe("nanogpt_spikes_every_5", "cadence",
                    f"{desc}; val every 5 steps (a dense-validation record run)",
                    _series(run, 5), n, variant="every_5")]


@_group("acc_only")
def _accuracy_only(g: _Group) -> list[Probe]:
    """Only validation accuracy and the LR are reported (StepLR, ResNet-style)."""
    n = 6000
    lr = lr_step(n, 0.1, 2000, 0.1)
    tau = effective_steps(lr, 0.1)
    err = sigmoid_law(tau, 0.9, 0.04, 300.0, 2.0) + 0.05 * ema(lr / 0.1, 150.0)
    acc = np.clip(1.0 - err + ou_noise(g.rng, n, 0.004, 40.0), 0.0, 1.0)
    steps = _steps(n)
    desc = ("SGD 0.1, StepLR x0.1 every 2,000 steps, accuracy 0.15 -> 0.95, eval every 100 "
            "steps")
    out = []
    for name in ("val_acc", "val_top1", "eval/accuracy"):
        series = {"lr": _pair(steps, lr), name: every(steps, acc, 100)}
        out.append(g.probe(f"acc_only_{name.replace('/', '_')}", "metric_role",
                           f"only validation accuracy (named {name!r}, undeclared) and the LR: "
                           + desc, series, n, variant=name))
    series = {"lr": _pair(steps, lr), "val_error": every(steps, 1.0 - acc, 100)}
    out.append(g.probe("acc_only_error_declared", "metric_role",
                       "the same run reporting its error rate 1 - accuracy as 'val_error', "
                       "declared 'min': " + desc, series, n, variant="error",
                       metrics={"val_error": "min"}))
    return out


@_group("acc_collapse")
def _accuracy_collapse(g: _Group) -> list[Probe]:
    n = 6000
    onset = 2000
    lr = lr_constant(n, 0.1)
    tau = effective_steps(lr, 0.1)
    acc = 1.0 - sigmoid_law(tau, 0.9, 0.2, 300.0, 2.0) + ou_noise(g.rng, n, 0.004, 40.0)
    steps = _steps(n)
    after = steps > onset
    # within ~150 steps to chance (10 classes) and stays there, as after a blow-up
    w = np.clip((steps[after] - onset) / 150.0, 0.0, 1.0)
    acc[after] = (1 - w) * acc[after] + w * (0.1 + g.rng.normal(0.0, 0.004, after.sum()))
    series = {"lr": _pair(steps, lr), "val_acc": every(steps, np.clip(acc, 0, 1), 100)}
    return [g.probe("acc_collapse", "divergence",
                    "accuracy-only run (val_acc every 100 steps, SGD 0.1 constant) rising "
                    "0.15 -> 0.8, collapsing at step 2,000 to chance (0.1) and staying there",
                    series, n, Catch(frozenset({"divergence"}), DIVERGENCE_FIXES, onset,
                                     onset + 500))]


@_group("gaussian_nll")
def _gaussian_nll(g: _Group) -> list[Probe]:
    n = 4000
    lr = lr_warmup_cosine(n, 1e-3, 100, 0.05)
    tau = effective_steps(lr, 1e-3)
    train = power_law(tau, 1.4, -0.2, 100.0, 1.5) + g.rng.normal(0.0, 0.06, n)
    val = power_law(tau, 1.45, -0.1, 100.0, 1.5) + ou_noise(g.rng, n, 0.006, 60.0)
    run = _Run(_steps(n), lr, train, val, n)
    return [g.probe("gaussian_nll_signed", "scale_sign",
                    "heteroscedastic regression, Gaussian NLL (signed): train 1.4 -> -0.2 with "
                    "additive noise, val 1.45 -> -0.09, val every 50 steps", _series(run, 50),
                    n)]


@_group("mse_small")
def _mse(g: _Group) -> list[Probe]:
    n = 5000
    lr = lr_one_cycle(n, 3e-3)
    tau = effective_steps(lr, 1e-3)
    train = power_law(tau, 1e-3, 1.0e-5, 40.0, 1.0) * minibatch_noise(g.rng, n, 0.25)
    val = power_law(tau, 1e-3, 1.6e-5, 40.0, 1.0) * np.exp(ou_noise(g.rng, n, 0.02, 60.0))
    run = _Run(_steps(n), lr, train, val, n)
    return [g.probe("mse_small", "scale_sign",
                    "regression MSE 1e-3 -> 2e-5 (val), OneCycleLR max 3e-3, 25 % minibatch "
                    "noise, val every 100 steps", _series(run, 100), n)]


@_group("infonce")
def _infonce(g: _Group) -> list[Probe]:
    n = 8000
    lr = lr_warmup_cosine(n, 0.3, 400, 0.0)
    tau = effective_steps(lr, 0.3)
    train = power_law(tau, math.log(256), 1.3, 200.0, 0.9) * minibatch_noise(g.rng, n, 0.02)
    run = _Run(_steps(n), lr, train, None, n)
    return [g.probe("infonce", "scale_sign",
                    "SimCLR-like contrastive InfoNCE, batch 256: train loss ln 256 = 5.5 -> "
                    "~1.6, warmup 400 + cosine, no validation stream", _series(run, None), n)]


@_group("gan")
def _gan(g: _Group) -> list[Probe]:
    """A generator loss that rises while the GAN trains well."""
    n = 10000
    steps = _steps(n)
    t = steps / n
    lr = lr_constant(n, 2e-4)
    g_loss = (0.7 + 2.0 * np.log1p(9 * t) / math.log(10)) * minibatch_noise(g.rng, n, 0.2) \
        * np.exp(ou_noise(g.rng, n, 0.08, 200.0))
    d_loss = (0.45 + 0.93 * np.exp(-t / 0.15)) * minibatch_noise(g.rng, n, 0.15)
    fid = power_law(steps.astype(float), 320.0, 28.0, 400.0, 0.9) \
        * np.exp(ou_noise(g.rng, n, 0.03, 300.0))
    out = []
    for variant, (gn, dn), declared in (("declared", ("g_loss", "d_loss"), True),
                                        ("g_loss", ("g_loss", "d_loss"), False),
                                        ("loss_G", ("loss_G", "loss_D"), False)):
        series = {"lr": _pair(steps, lr), gn: _pair(steps, g_loss), dn: _pair(steps, d_loss),
                  "fid": every(steps, fid, 1000)}
        roles = {gn: "objective", dn: "objective", "fid": "min"} if declared else None
        how = "roles declared" if declared else "undeclared, conventional names"
        out.append(g.probe(f"gan_{variant}", "objective",
                           f"DCGAN-like: generator loss {gn} rising 0.7 -> 2.7 while the "
                           f"discriminator loss {dn} falls, Adam 2e-4 constant, FID every "
                           f"1,000 steps falling 320 -> 30 ({how})", series, n, variant=variant,
                           metrics=roles))
    return out


@_group("ppo")
def _ppo(g: _Group) -> list[Probe]:
    """PPO's losses: one hovers around 0, two rise while the agent improves."""
    n = 2000  # PPO updates
    steps = _steps(n)
    t = steps / n
    lr = lr_linear_decay(n, 3e-4)
    pg = 0.01 * np.sin(2 * np.pi * t * 3) * np.exp(-t) + g.rng.normal(0.0, 0.012, n)
    value = (5.0 + 25.0 * t / (t + 0.3)) * minibatch_noise(g.rng, n, 0.3)
    entropy = -(1.4 - 0.8 * t) + g.rng.normal(0.0, 0.02, n)
    reward = 20.0 + 380.0 * (1 - np.exp(-t / 0.35)) + ou_noise(g.rng, n, 15.0, 20.0)
    names = ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss",
             "rollout/ep_rew_mean")
    series: Series = {"lr": _pair(steps, lr)}
    for name, vals in zip(names, (pg, value, entropy, reward), strict=True):
        series[name] = _pair(steps, vals)
    roles = dict(zip(names, ("objective", "objective", "objective", "max"), strict=True))
    return [g.probe(f"ppo_{variant}", "objective",
                    "PPO (Stable-Baselines3 names): policy-gradient loss hovering around 0 "
                    "with sign changes, value loss rising 5 -> 25 as returns grow, entropy "
                    "loss rising -1.4 -> -0.6, episode reward 20 -> 400; LR annealed linearly "
                    f"to 0 ({variant})", {k: _pair(*v) for k, v in series.items()}, n,
                    variant=variant, metrics=roles if variant == "declared" else None)
            for variant in ("declared", "undeclared")]


@_group("warmup_rise")
def _warmup_rise(g: _Group) -> list[Probe]:
    n = 5000
    run = _classifier(g.rng, lr_warmup_cosine(n, 3e-4, 500, 0.0), 3e-4, n, tau0_steps=300.0)
    bump = 1.0 + 0.18 * np.exp(-((run.steps - 250.0) / 110.0) ** 2)
    run.train = run.train * bump
    run.val = run.val * bump if run.val is not None else None
    return [g.probe("warmup_rise", "schedule",
                    "Adam, 500 warmup steps then cosine: the loss rises ~10 % around step 250 "
                    "while the LR grows, then falls 2.3 -> 0.5; val every 100 steps",
                    _series(run, 100), n)]


@_group("cosine_tail")
def _cosine_tail(g: _Group) -> list[Probe]:
    n = 6000
    run = _classifier(g.rng, lr_warmup_cosine(n, 1e-3, 200, 0.0), 1e-3, n, tau0_steps=60.0,
                      alpha=1.4, lr_floor=0.05, val_sigma=0.004)
    return [g.probe("cosine_tail_flat", "schedule",
                    "warmup + cosine to 0: validation converged by ~40 % and flat for the rest "
                    "while the LR decays (the schedule's own end, not an LR problem); val "
                    "every 100 steps", _series(run, 100), n)]


@_group("warm_restarts")
def _warm_restarts(g: _Group) -> list[Probe]:
    n = 7000
    run = _classifier(g.rng, lr_cosine_restarts(n, 0.05, 1000, 2, 1e-4), 0.05, n,
                      lr_floor=0.5, train_sigma=0.1)
    return [g.probe("warm_restarts", "schedule",
                    "SGDR: CosineAnnealingWarmRestarts T_0=1,000 T_mult=2, SGD 0.05; the loss "
                    "jumps up after each restart and falls lower each cycle; val every 100 "
                    "steps", _series(run, 100), n)]


@_group("noisy_val")
def _noisy_val(g: _Group) -> list[Probe]:
    n = 5000
    run = _classifier(g.rng, lr_warmup_cosine(n, 1e-3, 100, 0.0), 1e-3, n, val_sigma=0.12,
                      val_corr_steps=15.0)
    return [g.probe("noisy_val_40", "noise",
                    "healthy run whose validation set has 40 samples: val loss noise ~12 % "
                    "per eval (independent between evals 50 steps apart), smooth train loss",
                    _series(run, 50), n)]


@_group("amp_skips")
def _amp_skips(g: _Group) -> list[Probe]:
    n = 5000
    skipped = np.zeros(n, bool)
    skipped[[0, 1, 2, 3, 4, 999, 1877, 2950, 3610, 4420]] = True
    sched_index = np.cumsum(~skipped) - 1  # the scheduler does not step on a skipped step
    lr = lr_warmup_cosine(n, 1e-3, 100, 0.0)[np.maximum(sched_index, 0)]
    run = _classifier(g.rng, lr, 1e-3, n)
    for i in np.flatnonzero(skipped):
        if i > 0:
            run.train[i] = run.train[i - 1]
    grad_norm = 1.5 * minibatch_noise(g.rng, n, 0.2)
    grad_norm[skipped] = np.inf
    series = _series(run, 100)
    series["grad_norm"] = _pair(run.steps, grad_norm)
    return [g.probe("amp_skipped_steps", "noise",
                    "mixed precision with GradScaler: 10 skipped steps (5 at the start, 5 "
                    "later) with an infinite grad norm, the LR held and the loss repeated",
                    series, n)]


@_group("long_budget")
def _long_budget(g: _Group) -> list[Probe]:
    total = 100_000
    n = 12_000
    lr = lr_warmup_cosine(total, 3e-4, 2000, 0.1)[:n]
    run = _classifier(g.rng, lr, 3e-4, total, start=7.0, train_floor=1.8, val_floor=1.9,
                      tau0_steps=800.0, alpha=0.6, lr_floor=0.0, train_sigma=0.03,
                      val_sigma=0.003, val_corr_steps=200.0)
    return [g.probe("long_budget_early", "budget",
                    "a 100,000-step LM-like run judged at 12 % of its budget (first 12,000 "
                    "steps streamed): loss 7 -> ~2.8, still falling as a power law; warmup "
                    "2,000 + cosine; val every 500 steps", _series(run, 500), total)]


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


def _must_group(name: str) -> _GroupBuild:
    family, build, kinds, actions, cad, cad2, desc = _MUST[name]

    def probes(g: _Group) -> list[Probe]:
        run, onset, deadline = build(g.rng)
        catch = Catch(kinds, actions, int(onset), int(deadline))
        base = _series(run, cad)
        return [g.probe(name, family, f"{desc}; val every {cad} steps", base, run.total_steps,
                        catch),
                g.probe(f"{name}_scale_1e-3", family,
                        f"{desc}; losses x1e-3, val every {cad} steps",
                        _scaled(base, 1e-3, ("train_loss", "val_loss")), run.total_steps,
                        catch, "scale_1e-3"),
                g.probe(f"{name}_every_{cad2}", family, f"{desc}; val every {cad2} steps",
                        _series(run, cad2), run.total_steps, catch, f"every_{cad2}")]
    return probes


for _name in _MUST:
    _group(_name)(_must_group(_name))


def catalogue(seed: int = 0, groups: tuple[str, ...] | None = None) -> list[Probe]:
    """Every probe (or those of ``groups``), no-action ones first, then must-catch ones;
    deterministic for a seed, each group drawing from its own ``(seed, group)`` stream."""
    probes = [p for name, build in _GROUPS.items() if groups is None or name in groups
              for p in build(_Group(name, seed, _rng(seed, name)))]
    return sorted(probes, key=lambda p: p.must_catch)


def group_names() -> list[str]:
    """The groups of the catalogue (one underlying curve each)."""
    return list(_GROUPS)


def get_probe(name: str, seed: int = 0) -> Probe:
    """One probe of the catalogue by name (KeyError if unknown)."""
    for p in catalogue(seed):
        if p.name == name:
            return p
    raise KeyError(name)


# ---------------------------------------------------------------------------- runner
@dataclass
class DiagnosisRecord:
    """A diagnosis the analyzer opened: id, kind, metric, step it was detected at (steps)."""

    id: str
    kind: str
    metric: str
    step: int
    severity: str
    cause: str | None = None  # ``evidence.cause`` (oscillation: lr_too_large / eval_noise)


@dataclass
class ActionRecord:
    """A recommendation the policy issued, at the step of the batch it answered."""

    action: str
    params: dict[str, Any]
    step: int
    reason: str
    diagnosis_id: str | None


@dataclass
class ProbeResult:
    """What streaming a probe through the analyzer and the policy produced."""

    probe: str
    family: str
    expectation: str
    must_catch: bool
    passed: bool
    verdict: str  # one line: why it passed or failed
    diagnoses: list[DiagnosisRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    unexpected_diagnoses: list[str] = field(default_factory=list)  # no-action probes: ids
    # of diagnoses other than spikes and eval-noise oscillations
    caught_at_step: int | None = None  # must-catch: first step with kind and action in window
    stopped_at_step: int | None = None  # a ``stop`` was applied: the stream ended there
    steps_streamed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(series: Series, batch_steps: int) -> list[tuple[int, Series]]:
    """Consecutive step windows of ``batch_steps`` (first step of the window, its points)."""
    firsts = [int(s[0]) for s, _ in series.values() if s.size]
    if not firsts:
        return []
    lo = min(firsts)
    hi = max(int(s[-1]) for s, _ in series.values() if s.size)
    edges = [*range(lo, hi + 1, max(1, batch_steps)), hi + 1]
    cut = {k: np.searchsorted(s, edges, side="left") for k, (s, _) in series.items()}
    out = []
    for b in range(len(edges) - 1):
        batch = {k: (s[cut[k][b]:cut[k][b + 1]], v[cut[k][b]:cut[k][b + 1]])
                 for k, (s, v) in series.items() if cut[k][b + 1] > cut[k][b]}
        if batch:
            out.append((edges[b], batch))
    return out


def run_probe(probe: Probe, batch_steps: int = 50) -> ProbeResult:
    """Stream ``probe`` through ``RunAnalyzer`` and ``decide`` in consecutive windows of
    ``batch_steps`` steps. A recommendation counts as applied at the first step of the next
    batch (a client in apply mode), though the fixed stream does not change; an applied
    ``stop`` ends the stream."""
    analyzer = RunAnalyzer(AnalysisConfig.from_run_config(probe.run_config))
    policy = PolicyConfig.from_run_config(probe.run_config)
    history: list[dict[str, Any]] = []
    res = ProbeResult(probe.name, probe.family, probe.expectation(), probe.must_catch, False, "")
    for first, batch in _batches(probe.series, batch_steps):
        for h in history:
            if h["status"] == "pending":
                sched = getattr(analyzer, "sched", None)  # the LR the change was applied at
                lr = sched.last[1] if sched is not None and sched.last else None
                h["status"], h["applied_step"] = "applied", first
                h["lr_before"] = [lr] if lr is not None else None
                if h["action"] == "stop":
                    res.stopped_at_step = first
        if res.stopped_at_step is not None:
            break
        res.steps_streamed = max(int(s[-1]) for s, _ in batch.values())
        events: list[DiagnosisEvent] = analyzer.feed(batch)
        judging = any(h["status"] == "applied" and h["action"] in TRIAL_ACTIONS
                      for h in history) and any(is_eval_name(k) for k in batch)
        if not events and not judging:  # the daemon consults the policy on the same batches
            continue
        for e in events:
            if e.type == "opened":
                d = e.diagnosis
                cause = d.evidence.get("cause")
                res.diagnoses.append(DiagnosisRecord(d.id, d.kind, d.metric,
                                                     int(d.detected_at_step), d.severity,
                                                     None if cause is None else str(cause)))
        step = max((int(e.step) for e in events), default=res.steps_streamed)
        decision = decide(events, run_context(analyzer, step, history), policy)
        for h in history:  # the daemon expires the pending ones the policy cancels
            if h["id"] in decision.cancel and h["status"] == "pending":
                h["status"] = "expired"
        for spec in decision.issue:
            history.append({"id": str(len(history)), "action": spec.action, "status": "pending",
                            "issued_at_step": step, "applied_step": None, "note": None,
                            "diagnosis_id": spec.diagnosis_id, "params": dict(spec.params),
                            "author": "rhythmd"})
            res.actions.append(ActionRecord(spec.action, dict(spec.params), step, spec.reason,
                                            spec.diagnosis_id))
    _judge(probe, res)
    return res


def _judge(probe: Probe, res: ProbeResult) -> None:
    """Set ``passed``, ``verdict``, ``caught_at_step`` and ``unexpected_diagnoses``."""
    acting = res.actions  # every action the policy issues changes the run (see ACTING)
    if not isinstance(probe.expect, Catch):
        res.unexpected_diagnoses = [d.id for d in res.diagnoses if not (
            d.kind == "spike" or (d.kind == "oscillation" and d.cause == "eval_noise"))]
        res.passed = not acting
        res.verdict = ("no action" if not acting else
                       f"acted: {', '.join(f'{a.action}@{a.step}' for a in acting)}")
        return
    c = probe.expect
    seen = [d.step for d in res.diagnoses
            if d.kind in c.kinds and c.from_step <= d.step <= c.by_step]
    kind_of = {d.id: d.kind for d in res.diagnoses}
    acts = [a.step for a in acting if a.action in c.actions
            and kind_of.get(a.diagnosis_id or "") in c.kinds
            and c.from_step <= a.step <= c.by_step]
    if seen and acts:
        res.caught_at_step = max(min(seen), min(acts))
        res.passed = True
        res.verdict = f"caught at step {res.caught_at_step} (deadline {c.by_step})"
    elif seen:
        res.verdict = f"detected at step {min(seen)} but no acceptable action by {c.by_step}"
    else:
        res.verdict = f"not detected in [{c.from_step}, {c.by_step}]"
    early = [a for a in acting if a.step < c.from_step]
    if early:
        res.verdict += f"; acted before the onset: {', '.join(a.action for a in early)}"
