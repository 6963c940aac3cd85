"""Validation oscillation (per evaluation block)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import stats
from ..metrics import is_error_rate_name
from ..types import AnalysisConfig
from .base import Signal, signal
from .series import SeriesDetector


class OscillationDetector(SeriesDetector):
    """Validation oscillation over the last ``osc_window_evals`` points of the block series.

    On the series' relative view (log of a positive metric, else values over a shift-free
    scale; a bounded score on the view of itself or of its complement, whichever bounces
    less): jitter (robust sigma of second differences) at least ``osc_min_amp``, with
    alternation (sign-change rate of differences >= 0.5, and a negative lag-1 autocorrelation of
    the differences or a high-frequency share of the periodogram of the residuals around a
    Savitzky–Golay quadratic trend), and bouncing rather than descending (drift <=
    ``osc_max_drift_ratio`` x jitter). ``evidence.cause``: ``"lr_too_large"`` when the train
    loss averaged over the same blocks bounces comparably, else ``"eval_noise"``.
    """

    def __init__(self, cfg: AnalysisConfig, metric: str, mode: str) -> None:
        super().__init__(cfg, metric, mode)
        self.train_blocks: list[float] = []  # mean train loss over each block of the series
        self.tb_sum = 0.0
        self.tb_n = 0
        self.on = 0
        self.off = 0
        self.active = False
        self.onset: int | None = None

    def truncate(self, before_step: int) -> None:
        """Forget points at or after ``before_step`` (rollback)."""
        n0 = len(self.series.s)
        self.series.truncate(before_step)
        drop = n0 - len(self.series.s)
        if drop and self.train_blocks:
            self.train_blocks = self.train_blocks[: max(len(self.train_blocks) - drop, 0)]
        self.tb_sum, self.tb_n = 0.0, 0
        self.active, self.on, self.off = False, 0, 0

    def update(self, step: int, value: float, ctx: dict[str, Any]) -> list[Signal]:
        if not math.isfinite(value):
            return []
        tm = ctx.get("train_mean")
        if isinstance(tm, float) and math.isfinite(tm):
            self.tb_sum += tm
            self.tb_n += 1
        if not self.series.add(step, self.orientation.orient(value)):
            return []
        self.train_blocks.append(self.tb_sum / self.tb_n if self.tb_n else math.nan)
        self.tb_sum, self.tb_n = 0.0, 0
        if len(self.train_blocks) > 128:
            self.train_blocks = self.train_blocks[-64:]
        cfg = self.cfg
        v = self.series.v[-cfg.osc_window_evals :]
        if len(v) < cfg.osc_min_evals:
            return []
        y = self.series.view(np.asarray(v))
        amp = stats.curvature_sigma(y)
        bound = self.orientation.bound or self._rate_bound(v)
        if bound:
            # a bounded score (or error rate) must bounce relative to itself and to its
            # complement: near the bound, binomial evaluation noise (accuracy 0.89 +- 0.01) is
            # a 10 % bounce of the error rate but 1 % of the accuracy; near zero the other way
            score = np.log(np.clip(bound - np.asarray(v), bound * 1e-6, None))
            amp_s = stats.curvature_sigma(score)
            if amp_s < amp:
                y, amp = score, amp_s
        out: list[Signal] = []
        alt: dict[str, float] = {}
        if self.active:  # hysteresis: stays open while the jitter stays near the bar
            keep = amp >= cfg.osc_close_ratio * cfg.osc_min_amp
            self.off = 0 if keep else self.off + 1
        elif amp >= cfg.osc_min_amp and _flagged(alt, y, amp, cfg.osc_max_drift_ratio):
            self.on += 1
            self.off = 0
            if self.onset is None:
                self.onset = self.series.s[-len(v)]
        else:
            self.off += 1
            self.on = 0
            self.onset = None
        if not self.active and self.on >= cfg.osc_open_evals:
            if not alt:  # (osc_open_evals <= 0 only: opening without a flagged point)
                _flagged(alt, y, amp, cfg.osc_max_drift_ratio)
            out.append(self._open(step, v, amp, alt))
        elif self.active and self.off >= cfg.osc_close_evals:
            self.active = False
            self.onset = None
            self.on = 0
            out.append(signal("close", "oscillation", self.metric, step, step, "warning", 1.0,
                              {"rel_jitter": amp}, f"{self.metric} settled at step {step}"))
        return out

    def _rate_bound(self, v: list[float]) -> float | None:
        """1 (or 100) for a loss-like metric named as an error rate (``val_error``, ``wer``)
        whose values lie within that bound: the complement of a score."""
        if self.mode != "min" or not is_error_rate_name(self.metric) or not v:
            return None
        top = max(v)
        return 1.0 if top <= 1.0 else (100.0 if top <= 100.0 else None)

    def _open(self, step: int, v: list[float], amp: float, alt: dict[str, float]) -> Signal:
        cfg = self.cfg
        tb = self.train_blocks[-len(v):]
        amp_t = math.nan
        alt_t: dict[str, float] = {}
        t = np.asarray(tb, float)
        t = t[np.isfinite(t)]
        if t.size >= 5:
            tv = np.log(t) if bool(np.all(t > 0)) else t / max(stats.array_median(np.abs(t)),
                                                                 1e-300)
            amp_t = stats.curvature_sigma(tv)
            alt_t = stats.alternation_stats(t)
        lr_like = math.isfinite(amp_t) and (
            amp_t >= 0.5 * amp
            or (amp_t >= 0.5 * cfg.osc_min_amp and alt_t.get("diff_lag1_autocorr", 0) <= -0.25)
        )
        cause = "lr_too_large" if lr_like else "eval_noise"
        ev = {"cause": cause, "rel_jitter": amp, "train_rel_jitter": amp_t,
              "window_evals": len(v), "window_start_step": self.series.s[-len(v)], **alt}
        self.active = True
        why = ("train loss bounces too: lr too large" if cause == "lr_too_large"
               else "train loss is smooth: likely evaluation noise (small val set)")
        return signal("open", "oscillation", self.metric, step,
                      self.onset if self.onset is not None else step,
                      "warning" if cause == "eval_noise" else "high",
                      min(0.99, 0.5 + amp / (4 * cfg.osc_min_amp)), ev,
                      f"{self.metric} oscillating ({amp:.1%} relative jitter over {len(v)} "
                      f"points); {why}")


def _flagged(alt: dict[str, float], y: np.ndarray, amp: float, max_drift_ratio: float) -> bool:
    """Whether a window whose jitter ``amp`` clears the bar alternates and bounces rather than
    descends; fills ``alt`` with the bounce statistics (and ``drift_over_jitter``). Only
    computed when the jitter clears the bar and no oscillation is open: the rest of the time
    nothing reads them."""
    alt.update(stats.alternation_stats(y))
    slope, _, _ = stats.theil_sen(np.arange(y.size, dtype=float), y, 0.90)
    drift = abs(slope) * (y.size - 1)  # net trend over the window (relative units)
    alt["drift_over_jitter"] = drift / amp if amp > 0 else math.inf
    bouncy = alt["sign_change_rate"] >= 0.5 and (
        alt["diff_lag1_autocorr"] <= -0.25 or alt["hf_power_share"] >= 0.5
    )
    return bouncy and drift <= max_drift_ratio * amp
