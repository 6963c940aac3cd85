"""Public value types of the analysis package: config, diagnoses, events, schedule segments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .metrics import declared_roles

KINDS = ("divergence", "stagnation", "oscillation", "slow_progress", "spike")


@dataclass
class AnalysisConfig:
    """Per-run analysis settings. Step counts are optimizer steps, eval counts are evaluations."""

    total_steps: int | None = None  # planned run length (steps); enables budget-aware tests
    train_metric: str = "train_loss"
    val_metric: str = "val_loss"
    val_mode: str | None = None  # "min" (loss) or "max" (score); None: from the name's role
    aux_val_metric: str | None = "val_acc"  # a score monitored when no loss-like eval arrives
    aux_val_mode: str = "max"
    lr_metric: str = "lr"
    roles: dict[str, str] = field(default_factory=dict)  # declared {metric: role} ("metrics")
    # divergence (train loss, per step; log scale, asinh once a loss <= 0 is seen)
    div_z: float = 5.0  # sigmas (start noise) above the starting level
    div_z_recent: float = 8.0  # sigmas above the trailing baseline alone (early warning)
    div_sigma_floor: float = 0.05  # noise floor in log units (5 % relative)
    div_baseline_steps: int = 64  # trailing baseline window (steps)
    div_trend_steps: int = 32  # Theil–Sen window for the sustained-rise test (steps)
    div_horizon_steps: int = 25  # early warning: projected to cross the bar within this (steps)
    div_recover_steps: int = 20  # steps back near the baseline before a divergence closes
    div_confirm_steps: int = 20  # a jump is a divergence once elevated this long (steps)
    div_extreme: float = 2.3  # ... or at once this far above the bar (log units, about 10x)
    spike_z: float = 8.0
    # stagnation (monitored metric, per point of the block series)
    stag_window_frac: float = 0.1  # window: this fraction of the budget (steps)
    stag_min_evals: int = 8  # ... and at least this many points (statistical power)
    stag_window_evals: int = 8  # points of the recent-rate window of slow progress
    collapse_min_progress: float = 0.5  # an eval metric that had gained this much (relative)
    # and fell back to its start is a divergence
    stag_alpha: float = 0.05  # Mann–Kendall one-sided level for "still improving"
    stag_min_gain: float = 0.01  # relative improvement that counts as progress
    stag_proj_gain: float = 0.02  # relative gain projected over the remaining budget
    pseudo_eval_steps: int = 50  # block length (steps) when train loss is the monitored metric
    # oscillation (monitored metric, per point of the block series)
    osc_window_evals: int = 8
    osc_min_evals: int = 8
    osc_min_amp: float = 0.045  # jitter (robust sigma of 2nd differences, relative view)
    osc_max_drift_ratio: float = 2.5  # bouncing, not descending: drift <= ratio * jitter
    osc_open_evals: int = 3
    osc_close_evals: int = 4  # consecutive points with jitter below the close bar
    osc_close_ratio: float = 0.7  # close bar = ratio * osc_min_amp (hysteresis)
    # slow progress
    slow_min_fraction: float = 0.25  # judge only after this fraction of total_steps
    slow_min_total_gain: float = 0.25  # projected relative gain from the start by the end
    slow_steady_ratio: float = 0.6  # ... or still falling at this fraction of its earlier rate
    slow_steady_max_ratio: float = 3.0  # (and not this much faster: recovering, not slow)
    slow_steady_log_gain: float = 0.4  # ... with this log gain projected over the remaining steps
    slow_max_total_log_gain: float = 2.08  # ... and under this log gain over the whole budget

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any] | None) -> AnalysisConfig:
        """Build from a run's config dict. Reads total_steps/max_steps/planned_steps/steps,
        metric names (train_metric, val_metric, val_mode, ...) and an optional "analysis" dict
        of overrides for any field; unknown keys are ignored."""
        cfg = cls()
        if not run_config:
            return cfg
        rc = dict(run_config)
        for key in ("total_steps", "max_steps", "planned_steps", "num_training_steps", "steps"):
            v = rc.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                cfg.total_steps = int(v)
                break
        names = {f.name for f in dataclasses.fields(cls)}
        for src in (rc, rc.get("analysis") or {}):
            if not isinstance(src, dict):
                continue
            for k, v in src.items():
                if k in names and k not in ("total_steps", "roles") and v is not None:
                    setattr(cfg, k, type(getattr(cfg, k))(v) if _scalar(getattr(cfg, k)) else v)
        ov = rc.get("analysis")
        if isinstance(ov, dict) and isinstance(ov.get("total_steps"), int):
            cfg.total_steps = ov["total_steps"]
        cfg.roles = declared_roles(rc)
        if cfg.val_mode not in ("min", "max", None):
            cfg.val_mode = None
        if cfg.aux_val_mode not in ("min", "max"):
            cfg.aux_val_mode = "max"
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnalysisConfig:
        """From :meth:`to_dict` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)


@dataclass
class Diagnosis:
    """One detected condition. Steps are optimizer steps; ``status`` is "open" or "closed"."""

    id: str
    kind: str
    metric: str
    detected_at_step: int
    onset_step: int
    severity: str  # "info" | "warning" | "high" | "critical"
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    status: str = "open"
    updated_at_step: int = 0
    closed_at_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies, several times slower, and every
        # diagnosis event of a batch is turned into a dict
        return {"id": self.id, "kind": self.kind, "metric": self.metric,
                "detected_at_step": self.detected_at_step, "onset_step": self.onset_step,
                "severity": self.severity, "confidence": self.confidence,
                "evidence": _plain(self.evidence), "message": self.message,
                "status": self.status, "updated_at_step": self.updated_at_step,
                "closed_at_step": self.closed_at_step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        return cls(**d)


@dataclass
class DiagnosisEvent:
    """A lifecycle change of a diagnosis: "opened", "updated" or "closed" at ``step``."""

    type: str
    diagnosis: Diagnosis
    step: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "diagnosis": self.diagnosis.to_dict(), "step": int(self.step)}


@dataclass
class ScheduleSegment:
    """A piece of the LR schedule identified from the lr stream (steps inclusive)."""

    kind: str  # constant|warmup|step|linear_decay|exponential|cosine|one_cycle|increase|unknown
    start_step: int
    end_step: int
    lr_start: float
    lr_end: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"] = _plain(self.params)
        return d


def _plain(v: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types (recursively)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):
        return _plain(v.tolist())
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return float(v)
    return str(v)
