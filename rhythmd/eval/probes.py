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

This module holds the catalogue (the groups of probes and their registry); the probe type is
in :mod:`.probe_types`, the curves in :mod:`.probe_curves`, the problem runs in
:mod:`.probe_problems` and the runner in :mod:`.probe_runner`.

Use::

    from rhythmd.eval.probes import catalogue, run_probe
    for probe in catalogue(seed=0):
        result = run_probe(probe, batch_steps=50)
        result.passed, result.diagnoses, result.actions
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rhythmd.eval.probe_curves import (
    _classifier,
    _pair,
    _rng,
    _Run,
    _scaled,
    _series,
    _spikes,
    _steps,
    effective_steps,
    ema,
    every,
    lr_constant,
    lr_cosine_restarts,
    lr_linear_decay,
    lr_one_cycle,
    lr_step,
    lr_warmup_cosine,
    minibatch_noise,
    ou_noise,
    power_law,
    sigmoid_law,
)
from rhythmd.eval.probe_problems import _MUST
from rhythmd.eval.probe_runner import ActionRecord, DiagnosisRecord, ProbeResult, run_probe
from rhythmd.eval.probe_types import (
    ACTING,
    DIVERGENCE_FIXES,
    NO_ACTION,
    Catch,
    Probe,
    Series,
)

__all__ = ["ACTING", "DIVERGENCE_FIXES", "NO_ACTION", "ActionRecord", "Catch",
           "DiagnosisRecord", "Probe", "ProbeResult", "Series", "catalogue", "get_probe",
           "group_names", "lr_constant", "lr_cosine_restarts", "lr_linear_decay", "lr_one_cycle",
           "lr_step", "lr_warmup_cosine", "run_probe"]


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
