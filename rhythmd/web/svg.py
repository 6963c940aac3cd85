"""Server-side SVG charts: numpy in, an escaped ``<svg>`` string out.

One :class:`Chart` is one panel: line series on a step axis shared by every panel of a page,
diagnoses as shaded regions, recommendations/applied changes/rollbacks as vertical markers,
and every non-finite point drawn explicitly (a red marker on the top edge for NaN and +Inf,
on the bottom edge for -Inf, with the count of consecutive non-finite points). Nothing is
silently dropped: the line breaks at a non-finite point and the marker says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

from rhythmd.web import fmt
from rhythmd.web import svg_marks as marks

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#db2777", "#ca8a04",
           "#4b5563", "#dc2626", "#65a30d", "#7c3aed", "#0f766e")
"""Series colours (compare page: one per run)."""

WIDTH = 960
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 68, 16, 26, 28
DOTS_BELOW = 80
"""Series with at most this many points are drawn with a dot per point (sparse evaluations)."""


def attr(value: object) -> str:
    """An attribute value, escaped (quotes included)."""
    return escape(str(value), quote=True)


def nonfinite_label(v: float) -> str:
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


@dataclass
class Series:
    key: str
    label: str
    steps: np.ndarray
    values: np.ndarray
    color: str = PALETTE[0]
    css: str = "series"
    dashed: bool = False
    dots: bool | None = None  # None: automatic (sparse series get dots)
    scaled: bool = True  # False: drawn on the others' scale, off-scale points clipped and marked


@dataclass
class Region:
    """A shaded step interval (a diagnosis: onset to close, or to the last step)."""

    start: int
    end: int
    kind: str
    ref_id: str
    label: str
    title: str
    open: bool = False
    abandoned: bool = False  # seen on a branch that a rollback abandoned (drawn fainter)


@dataclass
class Marker:
    """A vertical marker at a step: recommendation issued/applied, rollback."""

    step: int
    kind: str  # "recommendation", "applied", "rejected", "rollback"
    label: str
    title: str
    ref_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    abandoned: bool = False  # happened on a branch a rollback later abandoned: pinned to it
    from_step: int | None = None  # a rollback: the last step of the branch it left
    color: str | None = None  # a colour of its own (the run's, on the compare page)


@dataclass
class Reference:
    """A horizontal reference line (the configured learning rate)."""

    value: float
    label: str
    title: str
    kind: str = "reference"


@dataclass
class Overlay:
    """A polyline drawn over the plot (a schedule segment), with a small label."""

    steps: np.ndarray
    values: np.ndarray
    kind: str
    label: str
    title: str


@dataclass
class Scale:
    lo: float
    hi: float
    log: bool

    def fwd(self, v: np.ndarray) -> np.ndarray:
        return np.log10(v) if self.log else v

    @property
    def flo(self) -> float:
        return math.log10(self.lo) if self.log else self.lo

    @property
    def fhi(self) -> float:
        return math.log10(self.hi) if self.log else self.hi


LINEAR_LIMIT = 1e300
"""A linear axis spans at most [-1e300, 1e300] (so that its span, padding and tick steps stay
finite); values beyond are drawn at the edge."""
LOG_LIMITS = (1e-290, 1e290)
"""A log axis is used only for values inside these bounds (its padding stays finite and > 0)."""
MIN_SPAN = 1e-290
"""Ranges narrower than this (denormals) are drawn as one value."""


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (linear axis); total over finite floats."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n - 1, 1)
    if not math.isfinite(raw) or raw < MIN_SPAN:
        return [lo, hi]
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50 and math.isfinite(t):
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades (with 2 and 5 when the range spans few decades) inside [lo, hi]."""
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = d1 - d0
    mults = (1, 2, 5) if decades <= 3 else (1,)
    stride = max(1, decades // 8)
    ticks = [m * 10.0 ** d for d in range(d0, d1 + 1, stride) for m in mults]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)] or [lo, hi]


def choose_scale(arrays: Sequence[np.ndarray], mode: str = "auto", log_ratio: float = 30.0,
                 ) -> Scale:
    """The y scale covering the finite values; log when asked, or (auto) when every value is
    positive and they span more than ``log_ratio``. Total over finite floats: denormals,
    ±1e308, a single value, none at all."""
    finite = [a[np.isfinite(a)] for a in arrays if a.size]
    vals = np.concatenate(finite) if finite else np.empty(0)
    if vals.size == 0:
        return Scale(0.0, 1.0, False)
    lo, hi = float(vals.min()), float(vals.max())
    in_log_range = LOG_LIMITS[0] <= lo and hi <= LOG_LIMITS[1]
    use_log = in_log_range and (mode == "log" or (mode == "auto" and hi / lo > log_ratio))
    if use_log:
        llo, lhi = math.log10(lo), math.log10(hi)
        pad = max((lhi - llo) * 0.05, 0.05)
        return Scale(10 ** (llo - pad), 10 ** (lhi + pad), True)
    lo = min(max(lo, -LINEAR_LIMIT), LINEAR_LIMIT)
    hi = min(max(hi, -LINEAR_LIMIT), LINEAR_LIMIT)
    if hi - lo < MIN_SPAN * max(1.0, abs(hi)):  # one value (or denormally close ones)
        mid = (lo + hi) / 2
        pad = abs(mid) * 0.1 if abs(mid) >= MIN_SPAN else 1.0
        lo2, top = mid - pad, mid + pad
    else:
        pad = (hi - lo) * 0.06
        lo2, top = lo - pad, hi + pad
    if lo >= 0 > lo2:
        lo2 = 0.0
    return Scale(lo2, top, False)


class Chart:
    """One SVG panel. ``x_domain`` is shared by the panels of a page."""

    def __init__(self, chart_id: str, x_domain: tuple[int, int], *, height: int = 230,
                 y_mode: str = "auto", log_ratio: float = 30.0, show_labels: bool = False,
                 y_label: str = "", legend: bool = True) -> None:
        self.chart_id = chart_id
        x0, x1 = x_domain
        self.x0, self.x1 = float(x0), float(x1 if x1 > x0 else x0 + 1)
        self.height = height
        self.y_mode = y_mode
        self.log_ratio = log_ratio
        self.show_labels = show_labels
        self.y_label = y_label
        self.legend = legend
        self.series: list[Series] = []
        self.regions: list[Region] = []
        self.markers: list[Marker] = []
        self.overlays: list[Overlay] = []
        self.references: list[Reference] = []
        self.pw = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        self.ph = height - MARGIN_TOP - MARGIN_BOTTOM

    # geometry -------------------------------------------------------------------------------
    def px(self, steps: np.ndarray | float) -> np.ndarray:
        s = np.asarray(steps, dtype=float)
        return MARGIN_LEFT + (s - self.x0) / (self.x1 - self.x0) * self.pw

    def py(self, values: np.ndarray, scale: Scale) -> np.ndarray:
        """Pixel rows; values beyond the scale are drawn at its edge."""
        v = np.clip(np.asarray(values, dtype=float), scale.lo, scale.hi)
        v = scale.fwd(v)
        span = (scale.fhi - scale.flo) or 1.0
        return MARGIN_TOP + (1.0 - (v - scale.flo) / span) * self.ph

    # rendering ------------------------------------------------------------------------------
    def render(self) -> str:
        scale = choose_scale(self.scaled_arrays(), self.y_mode, self.log_ratio)
        top, bottom = MARGIN_TOP, MARGIN_TOP + self.ph
        out = [f'<svg class="chart" id="{attr(self.chart_id)}" viewBox="0 0 {WIDTH} '
               f'{self.height}" width="{WIDTH}" height="{self.height}" role="img" '
               f'data-x0="{self.x0:g}" data-x1="{self.x1:g}" data-left="{MARGIN_LEFT}" '
               f'data-width="{self.pw}" data-top="{top}" data-bottom="{bottom}" '
               f'data-yscale="{"log" if scale.log else "linear"}" '
               f'xmlns="http://www.w3.org/2000/svg">']
        out.append(f'<rect class="plot-bg" x="{MARGIN_LEFT}" y="{top}" width="{self.pw}" '
                   f'height="{self.ph}"/>')
        out.extend(self._regions(top))
        out.extend(self._axes(scale, top, bottom))
        out.extend(self._overlays(scale))
        out.extend(self._references(scale))
        for s in self.series:
            out.extend(self._series(s, scale))
        out.extend(marks.markers(self, scale, top, bottom))
        for s in self.series:
            out.extend(self._nonfinite(s, top, bottom))
            if not s.scaled:
                out.extend(marks.offscale(self, s, scale, top, bottom))
        if self.legend:
            out.extend(self._legend())
        out.append(f'<line class="crosshair" x1="0" x2="0" y1="{top}" y2="{bottom}"/>')
        out.append("</svg>")
        return "".join(out)

    def scaled_arrays(self) -> list[np.ndarray]:
        """What the y scale covers: the scaled series (the surviving branch), overlays and
        references; every series when none of those has a finite value."""
        arrays = ([s.values for s in self.series if s.scaled]
                  + [o.values for o in self.overlays]
                  + [np.array([r.value]) for r in self.references])
        if not any(np.isfinite(a).any() for a in arrays if a.size):
            arrays = [s.values for s in self.series]
        return arrays

    def y_at(self, series: Series, step: float, scale: Scale) -> float | None:
        """The pixel row of ``series`` at ``step`` (its last finite point at or before it)."""
        ok = np.isfinite(series.values) & (series.steps <= step)
        if scale.log:
            ok &= series.values > 0
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        return float(self.py(np.array([series.values[idx[-1]]]), scale)[0])

    def _references(self, scale: Scale) -> list[str]:
        out = []
        x0, x1 = MARGIN_LEFT, MARGIN_LEFT + self.pw
        for r in self.references:
            if not math.isfinite(r.value) or (scale.log and r.value <= 0):
                continue
            y = float(self.py(np.array([r.value]), scale)[0])
            out.append(f'<g class="reference-line {attr(r.kind)}" data-value="{r.value!r}">'
                       f'<title>{attr(r.title)}</title><line x1="{x0}" x2="{x1}" '
                       f'y1="{y:.1f}" y2="{y:.1f}"/><text x="{x1 - 4}" y="{y - 4:.1f}" '
                       f'text-anchor="end">'
                       f'{attr(r.label)}</text></g>')
        return out

    def _axes(self, scale: Scale, top: int, bottom: int) -> list[str]:
        out = ['<g class="axes">']
        ticks = log_ticks(scale.lo, scale.hi) if scale.log else nice_ticks(scale.lo, scale.hi)
        ys = self.py(np.array(ticks), scale)
        for t, y in zip(ticks, ys, strict=True):
            out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + self.pw}" '
                       f'y1="{y:.1f}" y2="{y:.1f}"/>'
                       f'<text class="tick ytick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}">'
                       f'{attr(fmt.num(t))}</text>')
        xt = [t for t in nice_ticks(self.x0, self.x1, 10) if self.x0 <= t <= self.x1]
        for t, x in zip(xt, self.px(np.array(xt)), strict=True):
            out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                       f'y2="{bottom}"/><text class="tick xtick" x="{x:.1f}" '
                       f'y="{bottom + 16}">{round(t)}</text>')
        out.append(f'<rect class="frame" x="{MARGIN_LEFT}" y="{top}" width="{self.pw}" '
                   f'height="{self.ph}"/>')
        if self.y_label:
            label = self.y_label + (" (log)" if scale.log else "")
            out.append(f'<text class="ylabel" x="{MARGIN_LEFT}" y="{top - 8}">'
                       f'{attr(label)}</text>')
        out.append("</g>")
        return out

    def _regions(self, top: int) -> list[str]:
        out = []
        slots: list[tuple[float, float]] = []
        for r in self.regions:
            xa, xb = (float(v) for v in self.px(np.array([r.start, r.end])))
            xa = max(xa, MARGIN_LEFT)
            xb = min(max(xb, xa + 3), MARGIN_LEFT + self.pw)
            out.append(
                f'<g class="diag-region diag-{attr(r.kind)}'
                f'{" on-abandoned" if r.abandoned else ""}" data-diag-id="{attr(r.ref_id)}" '
                f'data-kind="{attr(r.kind)}" data-start="{r.start}" data-end="{r.end}" '
                f'data-open="{str(r.open).lower()}" tabindex="0"><title>{attr(r.title)}</title>'
                f'<rect x="{xa:.1f}" y="{top}" width="{xb - xa:.1f}" height="{self.ph}"/>')
            if self.show_labels:
                width = 6.5 * len(r.label) + 6
                row = sum(1 for a, b in slots if a < xa + width and xa < b)
                slots.append((xa, xa + width))
                out.append(f'<text class="region-label" x="{xa + 3:.1f}" '
                           f'y="{top + 12 + 12 * (row % 3)}">{attr(r.label)}</text>')
            out.append("</g>")
        return out

    def _overlays(self, scale: Scale) -> list[str]:
        out = []
        for o in self.overlays:
            ok = np.isfinite(o.values) & ((o.values > 0) if scale.log else True)
            if ok.sum() < 2:
                continue
            xs, ys = self.px(o.steps[ok]), self.py(o.values[ok], scale)
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
            out.append(f'<g class="schedule-segment" data-kind="{attr(o.kind)}" '
                       f'data-start="{int(o.steps[0])}" data-end="{int(o.steps[-1])}">'
                       f'<title>{attr(o.title)}</title><polyline points="{pts}"/>')
            if xs[-1] - xs[0] > 50:
                out.append(f'<text class="schedule-label" x="{(xs[0] + xs[-1]) / 2:.1f}" '
                           f'y="{min(ys) - 5:.1f}">{attr(o.label)}</text>')
            out.append("</g>")
        return out

    def _series(self, s: Series, scale: Scale) -> list[str]:
        if s.steps.size == 0:
            return []
        ok = np.isfinite(s.values)
        if scale.log:
            ok &= s.values > 0
        xs = self.px(s.steps)
        ys = np.where(ok, self.py(np.where(ok, s.values, 1.0), scale), 0.0)
        parts: list[str] = []
        prev = False
        for x, y, good in zip(xs.tolist(), ys.tolist(), ok.tolist(), strict=True):
            if good:
                parts.append(f"{'L' if prev else 'M'}{x:.1f},{y:.1f}")
            prev = good
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out = [f'<g class="{attr(s.css)}" data-series="{attr(s.key)}" '
               f'data-points="{s.steps.size}"><title>{attr(s.label)}</title>'
               f'<path d="{" ".join(parts)}" stroke="{attr(s.color)}"{dash}/>']
        dots = s.dots if s.dots is not None else s.steps.size <= DOTS_BELOW
        if dots:
            for x, y, good in zip(xs.tolist(), ys.tolist(), ok.tolist(), strict=True):
                if good:
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                               f'fill="{attr(s.color)}"/>')
        out.append("</g>")
        return out

    def _nonfinite(self, s: Series, top: int, bottom: int) -> list[str]:
        bad = ~np.isfinite(s.values)
        if not bad.any():
            return []
        idx = np.flatnonzero(bad)
        kinds = np.where(np.isnan(s.values[idx]), 0, np.where(s.values[idx] > 0, 1, 2))
        # runs of consecutive non-finite points of one kind
        brk = np.flatnonzero((np.diff(idx) != 1) | (np.diff(kinds) != 0)) + 1
        out = []
        for seg in np.split(np.arange(idx.size), brk):
            i0, i1 = idx[seg[0]], idx[seg[-1]]
            v = float(s.values[i0])
            label = nonfinite_label(v)
            count = int(seg.size)
            s0, s1 = int(s.steps[i0]), int(s.steps[i1])
            xa, xb = (float(p) for p in self.px(np.array([s0, s1])))
            at_bottom = label == "-Inf"
            y = bottom if at_bottom else top
            tri = (f"M{xa - 5:.1f},{y - 8 if at_bottom else y + 8} L{xa + 5:.1f},"
                   f"{y - 8 if at_bottom else y + 8} L{xa:.1f},{y}Z")
            span = f"steps {s0}–{s1}" if count > 1 else f"step {s0}"
            text = label if count == 1 else f"{label} ×{count}"
            ty = y - 11 if at_bottom else y + 19
            out.append(
                f'<g class="nonfinite-marker" data-kind="{label}" data-step="{s0}" '
                f'data-end-step="{s1}" data-count="{count}" data-series="{attr(s.key)}">'
                f'<title>{attr(f"{s.label}: {label} at {span}")}</title>'
                f'<line x1="{xa:.1f}" x2="{max(xb, xa):.1f}" y1="{y}" y2="{y}"/>'
                f'<path d="{tri}"/><text x="{xa + 6:.1f}" y="{ty}">{attr(text)}</text></g>')
        return out

    def _legend(self) -> list[str]:
        names = [(s.label, s.color, s.dashed) for s in self.series]
        if len(self.overlays):
            names.append(("identified schedule", "#111827", True))
        out = ['<g class="legend">']
        x = MARGIN_LEFT + self.pw
        for label, color, dashed in reversed(names):
            text = label if len(label) <= 40 else label[:39] + "…"
            width = 28 + 6.5 * len(text)
            x -= width
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="11" y2="11" '
                       f'stroke="{attr(color)}" stroke-width="2.5"{dash}/>'
                       f'<text x="{x + 22:.1f}" y="15">{attr(text)}</text>')
        out.append("</g>")
        return out
