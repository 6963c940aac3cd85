"""What the pages show, read through the service (no HTTP round trip, no HTML here).

The pages draw what the API serves: the same service calls behind ``/v1``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, metrics

log = logging.getLogger("rhythmd.web")

@dataclass
class SeriesData:
    name: str
    steps: np.ndarray
    values: np.ndarray
    total_points: int
    downsampled: bool


@dataclass
class Roles:
    """Which metric plays which part: train loss, validation metric(s), learning rate."""

    train: str | None
    val: str | None
    val_mode: str
    aux: str | None
    aux_mode: str
    lr: str | None


@dataclass
class RunData:
    run: dict[str, Any]
    metrics: list[dict[str, Any]]
    roles: Roles
    series: dict[str, SeriesData]
    abandoned: list[tuple[int, SeriesData]]  # (branch, train points superseded by a rollback)
    diagnoses: list[dict[str, Any]]
    recommendations: list[dict[str, Any]]
    branches: list[dict[str, Any]]
    schedule: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    state: str
    x_domain: tuple[int, int]
    extra: list[str] = field(default_factory=list)  # other metric names, charted below
    configured_lr: tuple[float, str] | None = None  # (value, where it comes from)


def run_state(run: dict[str, Any]) -> str:
    """The one status word a person wants (the service's ``state``)."""
    return str(run["state"])


def roles_for(run: dict[str, Any], names: list[str]) -> Roles:
    """Metric roles from the run's analysis config; otherwise the conventional names (aliases
    included) and the name-based roles of :mod:`rhythmd.analysis.metrics`, the analysis' own
    rules."""
    cfg = AnalysisConfig.from_run_config(run.get("config") or None)
    have = set(names)
    lower = {n.lower(): n for n in reversed(names)}  # conventional names match any case

    def pick(configured: str | None, known: tuple[str, ...], guess: Any) -> str | None:
        if configured and configured in have:
            return configured
        return next((lower[k] for k in known if k in lower), None) or next(
            (n for n in names if guess(n)), None)

    def loss(n: str) -> bool:
        return metrics.infer_role(n) == "min"

    lr = pick(cfg.lr_metric, metrics.LR_NAMES, metrics.is_lr_name)
    train = pick(cfg.train_metric, metrics.TRAIN_LOSS_NAMES,
                 lambda n: loss(n) and not metrics.is_eval_name(n) and n != lr)
    val = pick(cfg.val_metric, metrics.VAL_LOSS_NAMES, metrics.is_val_loss_name)
    aux = pick(cfg.aux_val_metric, metrics.VAL_SCORE_NAMES, metrics.is_val_score_name)
    if aux in {train, val, lr}:
        aux = None
    val_role = metrics.infer_role(val) if val else None
    val_mode = cfg.val_mode or (val_role if val_role in ("min", "max") else "min")
    return Roles(train, val, val_mode, aux, cfg.aux_val_mode, lr)


def read_series(service: Any, run_id: str, name: str, max_points: int, *,
                branch: int | str = "latest", start_step: int | None = None) -> SeriesData:
    view = service.read_metric(run_id, name, branch=branch, start_step=start_step,
                               max_points=max_points)
    return SeriesData(name, np.asarray(view.steps, dtype=np.int64),
                      np.asarray(view.values, dtype=np.float64), int(view.total_points),
                      bool(view.downsampled))


def load_run(service: Any, run_id: str, max_points: int, max_extra: int = 6) -> RunData:
    """Everything the run page draws. Raises the service's NotFoundError for unknown runs."""
    run = service.get_run(run_id)
    metrics = service.list_metrics(run_id)
    names = [m["name"] for m in metrics]
    roles = roles_for(run, names)
    wanted = [n for n in (roles.train, roles.val, roles.aux, roles.lr) if n]
    extra = [n for n in names if n not in wanted][:max_extra]
    series = {n: read_series(service, run_id, n, max_points) for n in wanted + extra}
    branches = service.list_branches(run_id)
    abandoned: list[tuple[int, SeriesData]] = []
    if roles.train and 1 < len(branches) <= 8:
        abandoned = _abandoned(service, run_id, roles.train, branches, max_points)
    diagnoses = service.list_diagnoses(run_id)
    recs = service.list_recommendations(run_id)
    schedule = service.schedule(run_id)
    timeline = service.timeline(run_id)
    steps = [int(s.steps.min()) for s in series.values() if s.steps.size]
    ends = [int(s.steps.max()) for s in series.values() if s.steps.size]
    ends += [int(s.steps.max()) for _, s in abandoned if s.steps.size]
    x0 = min(steps) if steps else 0
    x1 = max(ends) if ends else (run.get("last_step") or 1)
    lr_series = series.get(roles.lr) if roles.lr else None
    return RunData(run, metrics, roles, series, abandoned, diagnoses, recs, branches, schedule,
                   timeline, run_state(run), (x0, max(x1, x0 + 1)), extra,
                   configured_lr(run, lr_series, recs, branches))


CONFIG_LR_KEYS = ("lr", "learning_rate", "base_lr")


def configured_lr(run: dict[str, Any], lr: SeriesData | None, recs: list[dict[str, Any]],
                  branches: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The run's LR before any change: the run config's ``lr`` (``learning_rate``,
    ``base_lr``) when it has one, else the highest LR logged before the first applied change
    or rollback (the peak of a warmup, the start of a decay)."""
    config = run.get("config") or {}
    for key in CONFIG_LR_KEYS:
        v = config.get(key) if isinstance(config, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            return float(v), f"run config {key}"
    if lr is None or not lr.steps.size:
        return None
    changed = [int(r["applied_step"]) for r in recs
               if r.get("status") == "applied" and r.get("applied_step") is not None]
    changed += [int(b["start_step"]) for b in branches
                if b.get("branch") and b.get("start_step") is not None]
    before = lr.steps < min(changed) if changed else np.ones(lr.steps.size, dtype=bool)
    vals = lr.values[before & np.isfinite(lr.values)]
    if not vals.size:
        return None
    where = f"before step {min(changed)}" if changed else "so far"
    return float(vals.max()), f"the highest logged LR {where}"


def branch_of(branches: list[dict[str, Any]], step: int, when: float | None) -> tuple[int, bool]:
    """The branch an event at ``step`` and wall time ``when`` happened on (the last one
    created by then), and whether a later rollback abandoned it there (a branch created after
    the event resumed at or before ``step``)."""
    if when is None:
        return (max((int(b["branch"]) for b in branches), default=0), False)
    made = [b for b in branches if float(b.get("created_at") or 0.0) <= when]
    on = max((int(b["branch"]) for b in made), default=0)
    later = [b for b in branches if float(b.get("created_at") or 0.0) > when
             and b.get("start_step") is not None and int(b["start_step"]) <= step]
    return on, bool(later)


def _abandoned(service: Any, run_id: str, name: str, branches: list[dict[str, Any]],
               max_points: int) -> list[tuple[int, SeriesData]]:
    """For each rollback, the parent branch's train points from the resume step on: the steps
    that were thrown away (drawn faintly, so a rollback is visible on the loss curve)."""
    out = []
    for b in branches:
        parent, start = b.get("parent_branch"), b.get("start_step")
        if b["branch"] == 0 or parent is None or start is None:
            continue
        try:
            seg = read_series(service, run_id, name, max_points, branch=int(parent),
                              start_step=int(start))
        except Exception:  # the parent may hold no point of this metric after ``start``
            continue
        if seg.steps.size:
            out.append((int(b["branch"]), seg))
    return out


def load_compare(service: Any, run_ids: list[str], max_points: int,
                 metric: str | None) -> tuple[list[dict[str, Any]], list[str],
                                              dict[str, dict[str, SeriesData]], list[str]]:
    """Runs (in the order asked), errors for unknown ids, and per chart key the series of each
    run: ``train``, ``val``, ``lr`` by role, and ``metric`` when one is named."""
    from rhythmd.errors import NotFoundError

    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    charts: dict[str, dict[str, SeriesData]] = {"train": {}, "val": {}, "lr": {}}
    if metric:
        charts["metric"] = {}
    all_names: set[str] = set()
    for rid in run_ids:
        try:
            run = service.get_run(rid)
            names = [m["name"] for m in service.list_metrics(rid)]
        except NotFoundError:
            errors.append(rid)
            continue
        runs.append(run)
        all_names.update(names)
        roles = roles_for(run, names)
        for key, name in (("train", roles.train), ("val", roles.val or roles.aux),
                          ("lr", roles.lr), ("metric", metric if metric in names else None)):
            if name:
                charts[key][rid] = read_series(service, rid, name, max_points)
    return runs, errors, charts, sorted(all_names)
