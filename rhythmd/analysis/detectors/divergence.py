"""Early divergence of the train loss (per step), and loss spikes that recover."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import stats
from ..types import AnalysisConfig
from .base import Signal, Stateful, lr_evidence, lr_phrase, signal
from .divergence_bulk import DivergenceBulkPath

_TINY = 1e-300
_SQRT2 = math.sqrt(2.0)  # 1 / tanh(asinh(1)): the floor is div_sigma_floor at the first loss


class DivergenceDetector(DivergenceBulkPath, Stateful):
    """Early divergence of the train loss (per step).

    Scale: ``y = asinh(loss / |first loss|)`` while every loss is positive (log-like above the
    first loss, linear below it; a huge value stays finite); once a loss <= 0 appears (a
    Gaussian NLL, a contrastive or RL loss) ``y = asinh((loss - m0) / s0)`` with ``m0`` and
    ``s0`` the level and a shift-free scale of the first steps. The noise floor is relative to
    the level: ``div_sigma_floor`` at or above the first loss, shrinking with the level below
    it, so a late 10x rise from a loss far below its start is as visible as an early one.
    A blow-up is a median-of-5 level above the starting
    bar (``div_z`` start-noise sigmas) or ``div_z_recent`` sigmas above the trailing baseline,
    or a significant Theil–Sen rise projected to cross the bar within ``div_horizon_steps``.

    A level that jumps is first reported as a ``spike``; it becomes a divergence only when it
    stays elevated for ``div_confirm_steps`` steps, or sits more than ``div_extreme`` (log
    units, about 10x) above the bar. A spike that comes back within that window closes with
    ``recovered: true``. Non-finite losses open a critical divergence at once. With
    ``watch_level=False`` (an objective that may legitimately rise) only non-finite values count.
    """

    def __init__(self, cfg: AnalysisConfig, metric: str, watch_level: bool = True) -> None:
        self.cfg = cfg
        self.metric = metric
        self.watch_level = watch_level
        self.scale: float | None = None  # |first loss| (log mode)
        self.signed = False  # a loss <= 0 was seen: asinh((x - m0) / s0)
        self.m0 = 0.0
        self.s0 = 1.0
        self.y0 = math.nan
        self.init: list[float] = []
        self.init_x: list[float] = []
        self.sig0_cache = math.nan
        self.ys: list[float] = []
        self.xs: list[float] = []
        self.ss: list[int] = []
        self.count = 0
        self.base_med = math.nan
        self.base_sig = math.nan
        self.base_sig_raw = math.nan  # unfloored, for one-step spike z-scores
        self.elev_start: int | None = None
        self.active = False
        self.critical = False
        self.open_base = math.nan
        self.ok_run = 0
        self.severity = ""
        self.spike_open = False
        self.pending: dict[str, Any] | None = None  # a jump waiting to persist or recover
        self.best_m5 = math.inf  # lowest median-of-5 level so far (y units)
        self.open_test = ""  # the test that opened the current divergence
        self.n_nonfinite = 0

    # ------------------------------------------------------------------ scale
    def _y(self, x: float) -> float:
        if self.signed:
            z = (x - self.m0) / self.s0
            return math.asinh(stats._BIG if z > stats._BIG else (-stats._BIG if z < -stats._BIG
                                                                 else z))
        z = x / (self.scale or 1.0)
        return math.asinh(z if z < stats._BIG else stats._BIG)

    def _loss(self, y: float) -> float:
        w = math.sinh(min(max(y, -700.0), 700.0))
        return float(w * self.s0 + self.m0) if self.signed else float(w * (self.scale or 1.0))

    def _floor(self, y: float) -> float:
        """Noise floor (y units) at level ``y``: ``div_sigma_floor`` in relative terms."""
        f = self.cfg.div_sigma_floor
        if self.signed or not math.isfinite(y):
            return f
        return max(min(f, f * _SQRT2 * math.tanh(abs(y))), 1e-300)

    def _go_signed(self) -> None:
        """Switch to the signed scale and re-express the kept window on it."""
        ref = self.init_x[:10] or self.xs[:10]
        self.m0 = stats.median(ref)
        spread = 4.0 * stats.diff_sigma(ref) if len(ref) >= 3 else 0.0
        self.s0 = max(abs(self.m0), spread, 1e-12 * max(abs(x) for x in ref), _TINY)
        self.signed = True
        self.init = [self._y(x) for x in self.init_x]
        self.ys = [self._y(x) for x in self.xs]
        self.y0 = self._start_level()
        self.sig0_cache = math.nan
        self._refresh_baseline()

    def _start_level(self) -> float:
        if len(self.init) >= 5:  # first loss, robustified against a lucky first batch
            return min(stats.median(self.init[:5]), self.init[0] + 2 * self._sig0())
        return self.init[0] if self.init else math.nan

    # ------------------------------------------------------------------
    def reset_recent(self, keep_before_step: int) -> None:
        """Drop points at or after ``keep_before_step`` (rollback)."""
        keep = [i for i, s in enumerate(self.ss) if s < keep_before_step]
        self.ys = [self.ys[i] for i in keep]
        self.xs = [self.xs[i] for i in keep]
        self.ss = [self.ss[i] for i in keep]
        self.elev_start = None
        self.active = False
        self.critical = False
        self.ok_run = 0
        self.spike_open = False
        self.pending = None
        self.best_m5 = min(self.ys[-5:], default=math.inf) if len(self.ys) >= 5 else math.inf
        self.base_med = math.nan
        self._refresh_baseline()

    def _back_bar(self) -> tuple[float, float]:
        """(learned, back): the run counts as having learned once its median-of-5 level went
        below ``learned`` (a quarter of the starting loss, or 3 start-noise sigmas); a level above
        ``back`` after that means it lost what it learned (back at its starting level)."""
        s0 = self._sig0()
        if self.signed:
            return self.y0 - max(math.log(4.0), 3 * s0), self.y0 - 2 * s0
        return min(self._y(self._loss(self.y0) / 4.0), self.y0 - 3 * s0), self.y0 - 2 * s0

    def _sig0(self) -> float:
        """Noise of the starting level (y units) from the first 10 steps, capped."""
        f = self.cfg.div_sigma_floor
        if len(self.init) < 5:
            return 2 * f
        if len(self.init) >= 10 and math.isfinite(self.sig0_cache):
            return self.sig0_cache
        if len(self.init) < 10:  # few points: conservative (spread or step noise, >= 2 floors)
            sd = max(stats.robust_sigma(self.init), stats.diff_sigma(self.init))
            return max(2 * f, min(sd, 0.3))
        v = max(f, min(stats.diff_sigma(self.init), 0.3))  # step noise, robust to a fast trend
        self.sig0_cache = v
        return v

    def _refresh_baseline(self) -> None:
        b = self.ys[-(self.cfg.div_baseline_steps + 5) : -5]
        if len(b) >= 8:
            self.base_med = stats.median(b)
            self.base_sig_raw = stats.robust_sigma(b)
            self.base_sig = max(self.base_sig_raw, self._floor(self.base_med))
        else:  # too few points yet: the starting level is the baseline
            self.base_med = math.nan
            self.base_sig = math.nan
            self.base_sig_raw = math.nan

    def _nonfinite(self, step: int, x: float, ctx: dict[str, Any]) -> list[Signal]:
        self.n_nonfinite += 1
        self.ok_run = 0
        if self.active and self.critical:  # already open as critical: only counted
            return []
        ev = {"test": "nonfinite", "cause": "nonfinite", "value": x,
              "nonfinite_count": self.n_nonfinite, "recovered": False, **lr_evidence(ctx, step)}
        msg = f"{self.metric} is non-finite ({x}) at step {step}"
        out: list[Signal] = []
        if not self.active:
            self.active, self.critical, self.severity = True, True, "critical"
            self.open_base = self.base_med if math.isfinite(self.base_med) else self.y0
            onset = self.elev_start if self.elev_start is not None else step
            if self.pending is not None:
                onset = min(onset, int(self.pending["since"]))
            out.append(signal("open", "divergence", self.metric, step, onset, "critical", 1.0,
                              ev, msg))
            out.extend(self._end_spike(step, "spike became a non-finite divergence", False))
        elif not self.critical:
            self.critical, self.severity = True, "critical"
            out.append(signal("update", "divergence", self.metric, step, step, "critical", 1.0,
                              ev, msg))
        return out

    def _end_spike(self, step: int, why: str, recovered: bool) -> list[Signal]:
        pend, self.pending = self.pending, None
        if not self.spike_open:
            return []
        self.spike_open = False
        ev: dict[str, Any] = {"recovered": recovered}
        if recovered:
            ev["recovered_at_step"] = int(step)
        if pend is not None:
            ev["elevated_steps"] = int(step - pend["since"])
            ev["peak_loss"] = self._loss(pend["peak"])
        return [signal("close", "spike", self.metric, step, step, "info", 1.0, ev, why)]

    def update(self, step: int, x: float, ctx: dict[str, Any]) -> list[Signal]:
        """Consume the train loss ``x`` at ``step``; ``ctx`` carries the lr phase."""
        cfg = self.cfg
        if not math.isfinite(x):
            return self._nonfinite(step, x, ctx)
        if not self.watch_level:
            return []
        if self.scale is None:
            self.scale = abs(x) if abs(x) > 1e-12 else 1.0
        self.xs.append(x)
        self.ss.append(int(step))
        if len(self.init_x) < 10:
            self.init_x.append(x)
        if x <= 0 and not self.signed:
            self._go_signed()  # re-expresses the window and the start, this point included
            y = self.ys[-1]
        else:
            y = self._y(x)
            self.ys.append(y)
            if len(self.init) < len(self.init_x):
                self.init.append(y)
                self.y0 = self._start_level()
        cap = cfg.div_baseline_steps + cfg.div_trend_steps + 8
        if len(self.ys) > 2 * cap:
            self.ys, self.ss, self.xs = self.ys[-cap:], self.ss[-cap:], self.xs[-cap:]
        self.count += 1
        last = sorted(self.ys[-5:])
        k = len(last)
        m5 = (last[k // 2] if k % 2 else 0.5 * (last[k // 2 - 1] + last[k // 2])) if k >= 3 \
            else last[0]
        sig = self.base_sig if math.isfinite(self.base_sig) else self._sig0()
        base = self.base_med if math.isfinite(self.base_med) else self.y0
        elevated = m5 > base + 3 * sig
        if elevated:
            if self.elev_start is None:
                self.elev_start = int(step)
        else:
            self.elev_start = None
        if (self.count % 8 == 0 or not math.isfinite(self.base_med)) and not self.active \
                and not elevated:
            self._refresh_baseline()
            if math.isfinite(self.base_med):
                base, sig = self.base_med, self.base_sig
        bar = self.y0 + cfg.div_z * self._sig0()
        has_base = math.isfinite(self.base_med)
        if k >= 5:
            self.best_m5 = min(self.best_m5, m5)
        if self.active:
            return self._track(step, m5, sig, ctx)
        test = ""
        ev: dict[str, Any] = {}
        learned, back = self._back_bar()
        extreme = m5 > max(bar, base) + cfg.div_extreme
        if m5 > bar:
            test = "above_start"
        elif has_base and m5 > base + cfg.div_z_recent * sig:
            test = "level_jump"
        elif self.best_m5 < learned and m5 > back:
            test = "back_at_start"
        elif elevated and len(self.ys) >= cfg.div_trend_steps:
            n = cfg.div_trend_steps
            slope, lo, _ = stats.theil_sen(np.asarray(self.ss[-n:], float),
                                           np.asarray(self.ys[-n:]), 0.90)
            span = self.ss[-1] - self.ss[-n] if n > 1 else 1
            if lo > 0 and slope * span > cfg.div_z * sig \
                    and (bar - m5) / slope <= cfg.div_horizon_steps:
                test = "sustained_rise"
                ev.update({"theil_sen_slope_per_step": slope, "slope_lo90": lo,
                           "projected_steps_to_bar": (bar - m5) / slope, "window_steps": span})
        out: list[Signal] = []
        if self.pending is not None:
            # a jump under watch: a divergence if the level stays up, a spike if it comes back
            pend = self.pending
            if not elevated and not test:
                return self._end_spike(step, f"{self.metric} spike recovered at step {step}", True)
            pend["peak"] = max(pend["peak"], m5)
            pend["points"] += 1
            if not extreme and (step - pend["since"] < cfg.div_confirm_steps
                                or pend["points"] < 3):
                return out
            test = test or str(pend["test"])
            ev["persisted_steps"] = int(step - pend["since"])
            return self._open(step, x, m5, base, sig, test, ev, ctx)
        if test in ("level_jump", "back_at_start", "sustained_rise") and not extreme:
            since = self.elev_start if self.elev_start is not None else int(step)
            self.pending = {"since": since, "peak": m5, "points": 1, "test": test}
            if not self.spike_open:
                self.spike_open = True
                out.append(signal(
                    "open", "spike", self.metric, step, since, "info",
                    stats.normal_confidence((m5 - base) / sig - cfg.div_z_recent),
                    {"z": (m5 - base) / sig, "loss": x, "baseline_loss": self._loss(base),
                     "cause": test, "recovered": False},
                    f"{self.metric} jumped to {self._loss(m5):.4g} at step {step}; a "
                    f"divergence if it stays up for {cfg.div_confirm_steps} steps"))
            return out
        if test:
            ev["persisted_steps"] = int(step - (self.elev_start or step))
            return self._open(step, x, m5, base, sig, test, ev, ctx)
        return self._one_step_spike(step, x, y, base, sig)

    def _open(self, step: int, x: float, m5: float, base: float, sig: float, test: str,
              ev: dict[str, Any], ctx: dict[str, Any]) -> list[Signal]:
        cfg = self.cfg
        z = (m5 - base) / sig
        l0 = self._loss(self.y0)
        ratio = self._loss(m5) / l0 if l0 > 0 else math.inf
        sev = "high" if ratio >= 3 or z >= 2 * cfg.div_z_recent else "warning"
        bar = self.y0 + cfg.div_z * self._sig0()
        cause = "extreme" if m5 > max(bar, base) + cfg.div_extreme and test != "sustained_rise" \
            else test
        ev.update({"test": test, "cause": cause, "recovered": False, "z_vs_baseline": z,
                   "level_over_start": ratio, "baseline_loss": self._loss(base),
                   "median5_loss": self._loss(m5), "noise_sigma": sig,
                   "start_loss": l0, "scale": "signed" if self.signed else "log",
                   **lr_evidence(ctx, step)})
        # recovery means back to the level it had learned, not to a baseline that crept up
        open_base = min(base, self._back_bar()[0]) if test == "back_at_start" else base
        self.active, self.severity, self.open_base, self.ok_run = True, sev, open_base, 0
        self.open_test = test
        onset = self.elev_start if self.elev_start is not None else int(step)
        if self.pending is not None:
            onset = min(onset, int(self.pending["since"]))
        why = {"sustained_rise": "sustained rise", "above_start": "above its starting level",
               "level_jump": "level jumped",
               "back_at_start": "back at its starting level after it had learned"}[test]
        msg = (f"{self.metric} blowing up: {why}, median-5 loss {self._loss(m5):.4g} "
               f"({ratio:.2f}x start, z={z:.1f}) at step {step}{lr_phrase(ev)}")
        out = [signal("open", "divergence", self.metric, step, onset, sev,
                      stats.normal_confidence(z - cfg.div_z + 2), ev, msg)]
        return out + self._end_spike(step, "spike became a divergence", False)

    def _one_step_spike(self, step: int, x: float, y: float, base: float,
                        sig: float) -> list[Signal]:
        cfg = self.cfg
        sig_spike = max(self.base_sig_raw, 0.2 * self._floor(self.base_med)) \
            if math.isfinite(self.base_sig_raw) else sig
        zy = (y - base) / sig_spike
        if self.spike_open and zy < 3:
            self.spike_open = False
            return [signal("close", "spike", self.metric, step, step, "info", 1.0,
                           {"recovered_at_step": int(step), "recovered": True},
                           "loss spike recovered")]
        if not self.spike_open and zy > cfg.spike_z and len(self.ys) > 20:
            self.spike_open = True
            return [signal("open", "spike", self.metric, step, step, "info",
                           stats.normal_confidence(zy - cfg.spike_z),
                           {"z": zy, "loss": x, "baseline_loss": self._loss(base),
                            "cause": "one_step", "recovered": False},
                           f"one-step {self.metric} spike to {x:.4g} at step {step} "
                           f"(z={zy:.1f}); not a divergence unless it persists")]
        return []

    def start_loss(self) -> float | None:
        """The level of the untrained model, in loss units: the starting level, or the very
        first loss when lower (a blow-up in the first steps inflates the former); None
        before the first loss."""
        if not self.init_x or not math.isfinite(self.y0):
            return None
        v = min(self._loss(self.y0), self.init_x[0])
        return v if math.isfinite(v) else None

    def blowup_bound(self) -> float | None:
        """The train loss above which one step is a blow-up beyond doubt: ``div_extreme``
        (about 10x) above both the start bar and the trailing baseline (once it exists), in
        loss units; None before five steps, for an objective, or on the signed scale. The
        client's local reflex may act on it without waiting for the daemon."""
        if not self.watch_level or self.signed or len(self.init) < 5:
            return None
        bar = self.y0 + self.cfg.div_z * self._sig0()
        base = self.base_med if math.isfinite(self.base_med) else self.y0
        bound = self._loss(max(bar, base) + self.cfg.div_extreme)
        return bound if math.isfinite(bound) and bound > 0 else None

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The attributes, less ``ys``: the window on the detector's scale is ``_y`` of
        ``xs``, point for point, and is rebuilt on load (a quarter less state to encode)."""
        d = super().state_dict()
        del d["ys"]
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        super().load_state_dict(d)
        if "ys" not in d:  # (older states carry it)
            self.ys = [self._y(x) for x in self.xs]

    def _track(self, step: int, m5: float, sig: float, ctx: dict[str, Any]) -> list[Signal]:
        """Update or close an open divergence."""
        band = 0.0 if self.open_test == "back_at_start" else 3 * sig
        if m5 <= self.open_base + band:
            self.ok_run += 1
        else:
            self.ok_run = 0
        if self.ok_run >= self.cfg.div_recover_steps:
            self.active = self.critical = False
            self.elev_start = None
            self.ok_run = 0
            self._refresh_baseline()
            return [signal("close", "divergence", self.metric, step, step, self.severity, 1.0,
                           {"recovered_at_step": int(step), "median5_loss": self._loss(m5),
                            "recovered": True},
                           f"{self.metric} back to its pre-divergence level at step {step}")]
        if self.critical:
            return []
        l0 = self._loss(self.y0)
        ratio = self._loss(m5) / l0 if l0 > 0 else math.inf
        sev = "high" if ratio >= 3 else self.severity
        if sev != self.severity:
            self.severity = sev
            return [signal("update", "divergence", self.metric, step, step, sev, 0.99,
                           {"level_over_start": ratio, "median5_loss": self._loss(m5)},
                           f"{self.metric} at {ratio:.2f}x its starting level at step {step}")]
        return []
