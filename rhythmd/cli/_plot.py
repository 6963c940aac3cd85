"""Figures for ``rhythmd analyze --plot`` and ``rhythmd schedule --plot`` (matplotlib, lazy).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change), so
it works headless and inside other programs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = (".png", ".svg", ".pdf")
KIND_COLORS = {"divergence": "#d62728", "stagnation": "#7f7f7f", "oscillation": "#ff7f0e",
               "slow_progress": "#9467bd", "spike": "#e377c2"}


def check_output(path: Path) -> None:
    """Fail early (usage error) on an unsupported suffix or a missing matplotlib."""
    from rhythmd.cli import CommandError

    if path.suffix.lower() not in FORMATS:
        raise CommandError(f"--plot {path}: the file name must end in "
                           f"{', '.join(FORMATS)}", 2)
    _figure_class()


def _figure_class() -> Any:
    from rhythmd.cli import CommandError

    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install 'rhythmd[plot]' "
                           "(in a checkout: pip install -e '.[plot]')", 2) from None
    return Figure


def _save(fig: Any, path: Path) -> None:
    from rhythmd.cli import CommandError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from None


@dataclass
class RunPlot:
    """What one analysed run contributes to the figure."""

    label: str
    columns: dict[str, tuple[np.ndarray, np.ndarray]]
    train: str | None
    val: str | None
    lr: str | None
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)


def plot_analysis(runs: list[RunPlot], path: Path) -> None:
    """Per run: a loss panel (train/val, log scale when positive, non-finite points marked
    with ``x`` at the panel's edge), an LR panel; diagnoses shaded, recommendations marked."""
    Figure = _figure_class()
    fig = Figure(figsize=(13, 6.5 * len(runs)), layout="constrained")
    axes = fig.subplots(2 * len(runs), 1, sharex=False, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1.6] * len(runs)})[:, 0]
    for i, run in enumerate(runs):
        ax_loss, ax_lr = axes[2 * i], axes[2 * i + 1]
        ax_lr.sharex(ax_loss)
        last = max((int(s.max()) for s, _ in run.columns.values() if s.size), default=1)
        _loss_panel(ax_loss, run)
        _lr_panel(ax_lr, run)
        for ax, labelled in ((ax_loss, True), (ax_lr, False)):
            _shade_diagnoses(ax, run.diagnoses, last, labelled)
            _mark_recommendations(ax, run.recommendations, labelled)
        ax_loss.set_title(run.label, loc="left", fontsize=10)
        handles, labels = ax_loss.get_legend_handles_labels()
        if handles:
            ax_loss.legend(handles, labels, fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax_lr.set_xlabel("step")
    _save(fig, path)


def _split(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    fin = np.isfinite(values)
    return steps[fin], values[fin], steps[~fin], values[~fin]


def _loss_panel(ax: Any, run: RunPlot) -> None:
    styles = {"train": {"lw": 1.0, "color": "#1f77b4"},
              "val": {"lw": 1.4, "color": "#2ca02c", "marker": "o", "ms": 3}}
    finite_all: list[np.ndarray] = []
    nonfinite: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    for role, name in (("train", run.train), ("val", run.val)):
        if not name or name not in run.columns:
            continue
        s, v = run.columns[name]
        fs, fv, ns, nv = _split(s, v)
        if fs.size:
            ax.plot(fs, fv, label=name, **styles[role])
            finite_all.append(fv)
        if ns.size:
            nonfinite.append((name, ns, nv, "#d62728" if role == "train" else "#8c564b"))
    if not finite_all and not nonfinite:
        ax.text(0.5, 0.5, "no train/val loss columns", transform=ax.transAxes, ha="center")
    allv = np.concatenate(finite_all) if finite_all else np.array([])
    if allv.size and float(allv.min()) > 0:
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3, which="both")
    # Non-finite points cannot be drawn at their value: mark them at the panel's edge (NaN
    # and +inf at the top, -inf at the bottom) in the x data coordinates.
    trans = ax.get_xaxis_transform()
    for row, (name, ns, nv, color) in enumerate(nonfinite):  # one row per metric
        top, bottom = 0.97 - 0.06 * row, 0.03 + 0.06 * row
        for kind, sel, y, marker in (("NaN", np.isnan(nv), top, "x"),
                                     ("+inf", np.isposinf(nv), top, "^"),
                                     ("-inf", np.isneginf(nv), bottom, "v")):
            if sel.any():
                ax.scatter(ns[sel], np.full(int(sel.sum()), y), transform=trans, marker=marker,
                           color=color, s=40, zorder=5, clip_on=False,
                           label=f"{name} {kind} ({int(sel.sum())})")


def _lr_panel(ax: Any, run: RunPlot) -> None:
    ax.set_ylabel("lr")
    ax.grid(True, alpha=0.3, which="both")
    if not run.lr or run.lr not in run.columns:
        ax.text(0.5, 0.5, "no lr column", transform=ax.transAxes, ha="center", va="center")
        return
    s, v = run.columns[run.lr]
    fs, fv, ns, _nv = _split(s, v)
    if fs.size:
        ax.plot(fs, fv, color="#17becf", lw=1.2, label=run.lr)
        lo, hi = float(fv.min()), float(fv.max())
        if lo > 0 and hi / lo > 20:
            ax.set_yscale("log")
    if ns.size:
        ax.scatter(ns, np.full(ns.size, 0.97), transform=ax.get_xaxis_transform(), marker="x",
                   color="#d62728", s=30, clip_on=False)


def _shade_diagnoses(ax: Any, diagnoses: list[dict[str, Any]], last: int,
                     labelled: bool) -> None:
    seen: set[str] = set()
    for d in diagnoses:
        kind = str(d.get("kind"))
        start = d.get("onset_step", d.get("detected_at_step"))
        if start is None:
            continue
        end = d.get("closed_at_step")
        end = last if end is None else end
        end = max(end, start + 1)
        color = KIND_COLORS.get(kind, "#bcbd22")
        label = f"{kind} ({d.get('severity', '')})" if labelled and kind not in seen else None
        seen.add(kind)
        ax.axvspan(start, end, color=color, alpha=0.15, lw=0, label=label)
        detected = d.get("detected_at_step")
        if detected is not None:
            ax.axvline(detected, color=color, lw=0.8, alpha=0.7)


def _mark_recommendations(ax: Any, recs: list[dict[str, Any]], labelled: bool) -> None:
    first = True
    for r in recs:
        step = r.get("step", r.get("issued_at_step"))
        if step is None:
            continue
        ax.axvline(step, color="black", ls="--", lw=1.0,
                   label="recommendation" if labelled and first else None)
        first = False
        if labelled:
            params = r.get("params") or {}
            text = f"{r.get('action')}(" + ", ".join(f"{k}={_g(v)}" for k, v in params.items())
            ax.annotate(text + ")", xy=(step, 0.03), xycoords=ax.get_xaxis_transform(),
                        rotation=90, fontsize=7, ha="right", va="bottom",
                        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def plot_schedules(curves: list[tuple[str, list[float]]], path: Path, *, log_y: bool = False,
                   title: str = "") -> None:
    """Overlay LR curves (one per spec) against the optimizer step."""
    Figure = _figure_class()
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, lrs in curves:
        ax.plot(np.arange(len(lrs)), lrs, lw=1.5, label=label, drawstyle="steps-post")
    if log_y and all(min(c) > 0 for _, c in curves):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("lr")
    ax.grid(True, alpha=0.3, which="both")
    ax.set_title(title, loc="left", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
