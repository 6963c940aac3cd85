"""A chart's content as JSON for the interactive view (uPlot, ``static/rhythmd-charts.js``).

The server-rendered SVG is the page's chart; when scripts run, the JSON next to it (a
``<script type="application/json">`` data block, never executed) is drawn with uPlot instead:
the same series, scale, regions, markers and reference lines, plus zoom, hover values and
smoothing.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from rhythmd.web.svg import Chart, attr, choose_scale

SPARSE = 0.5
"""A series with fewer points than this share of the chart's steps (within its own span) is
drawn with dots, its gaps bridged (evaluations every N steps)."""


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _sparse(own: np.ndarray, steps: np.ndarray) -> bool:
    """Fewer points than :data:`SPARSE` of the chart's steps within the series' own span."""
    if own.size == 0:
        return False
    inside = int(np.count_nonzero((steps >= own.min()) & (steps <= own.max())))
    return bool(own.size < SPARSE * inside)


def chart_spec(c: Chart, smooth: bool = True) -> dict[str, Any]:
    """The chart as plain data: one step axis, each series aligned to it (None where it has
    no point or a non-finite one), the y range of the server's scale; ``smooth``: whether the
    smoothing control applies (not to a learning rate)."""
    steps = np.unique(np.concatenate([s.steps for s in c.series] or [np.empty(0, np.int64)]))
    scale = choose_scale(c.scaled_arrays(), c.y_mode, c.log_ratio)
    series = []
    for s in c.series:
        col: list[float | None] = [None] * steps.size
        for i, v in zip(np.searchsorted(steps, s.steps).tolist(), s.values.tolist(), strict=True):
            col[i] = _finite(v)
        series.append({"key": s.key, "label": s.label, "color": s.color, "dash": s.dashed,
                       "scaled": s.scaled, "sparse": _sparse(s.steps, steps),
                       "values": col})
    return {
        "id": c.chart_id, "x": [int(x) for x in steps.tolist()],
        "x_range": [c.x0, c.x1], "y_range": [scale.lo, scale.hi], "log": scale.log,
        "y_label": c.y_label, "smooth": smooth, "series": series,
        "regions": [{"start": r.start, "end": r.end, "kind": r.kind, "id": r.ref_id,
                     "title": r.title, "abandoned": r.abandoned} for r in c.regions],
        "markers": [{"step": m.step, "kind": m.kind, "title": m.title,
                     "abandoned": m.abandoned, "color": m.color} for m in c.markers],
        "references": [{"value": _finite(r.value), "label": r.label} for r in c.references],
    }


def data_block(c: Chart, smooth: bool = True) -> str:
    """The ``<script type="application/json">`` block of a chart; ``<``, ``>`` and ``&`` are
    escaped inside the JSON so that no string can close the block."""
    text = json.dumps(chart_spec(c, smooth), separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<script type="application/json" class="chart-data" data-for="{attr(c.chart_id)}">'
            f"{text}</script>")
