"""Marks drawn over a chart's series: event markers on the branch where each event happened,
and points of a dimmed series that lie off the chart's scale.

An event on the surviving line is a vertical line across the plot. An event on a branch that a
rollback later abandoned is a pin on that branch's dimmed curve (never a line over the curve
that replaced it), and a rollback is an arrow from the abandoned branch's last point back to
where the surviving branch resumed.
"""

from __future__ import annotations

import numpy as np

from rhythmd.web import fmt, svg

PIN = 7
"""Half the height of a pin (pixels)."""


def markers(chart: svg.Chart, scale: svg.Scale, top: int, bottom: int) -> list[str]:
    out = []
    label_slots: list[tuple[float, float]] = []
    left, right = svg.MARGIN_LEFT, svg.MARGIN_LEFT + chart.pw
    pins = [s for s in chart.series if not s.scaled]
    for m in chart.markers:
        x = float(chart.px(m.step))
        if not left - 1 <= x <= right + 1:
            continue
        extra = "".join(f' data-{svg.attr(k)}="{svg.attr(v)}"' for k, v in m.extra.items())
        where = "on-abandoned" if m.abandoned else "on-surviving"
        head = (f'<g class="marker {svg.attr(m.kind)}-marker {where}" data-step="{m.step}" '
                f'data-ref-id="{svg.attr(m.ref_id)}"{extra}><title>{svg.attr(m.title)}</title>')
        if m.kind == "rollback":
            body = _rollback(chart, m, scale, x, top, bottom, pins)
        elif m.abandoned:
            y = next((v for v in (chart.y_at(p, m.step, scale) for p in pins) if v is not None),
                     float(top + PIN))
            body = (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - PIN:.1f}" y2="{y + PIN:.1f}"/>'
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>')
        else:
            paint = (f' stroke="{svg.attr(m.color)}"', f' fill="{svg.attr(m.color)}"') \
                if m.color else ("", "")
            body = (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"{paint[0]}/>'
                    f'<path d="M{x - 5:.1f},{bottom} L{x + 5:.1f},{bottom} '
                    f'L{x:.1f},{bottom - 8}Z"{paint[1]}/>')
        label = ""
        if chart.show_labels and m.label:
            width = 6.5 * len(m.label) + 8
            row = sum(1 for a, b in label_slots if a < x + width and x < b)
            label_slots.append((x, x + width))
            ly = top + 50 + 12 * (row % 4)
            label = f'<text x="{x + 4:.1f}" y="{ly}">{svg.attr(m.label)}</text>'
        out.append(head + body + label + "</g>")
    return out


def _rollback(chart: svg.Chart, m: svg.Marker, scale: svg.Scale, x: float, top: int,
              bottom: int, pins: list[svg.Series]) -> str:
    """An arrow from the abandoned branch's last point to the resume point of the surviving
    curve; a short tick on the bottom axis when the chart has no such curves."""
    tick = (f'<path d="M{x - 5:.1f},{bottom} L{x + 5:.1f},{bottom} L{x:.1f},{bottom - 8}Z"/>')
    surviving = [s for s in chart.series if s.scaled]
    y_to = next((v for v in (chart.y_at(s, m.step, scale) for s in surviving) if v is not None),
                None)
    if m.from_step is None or y_to is None:
        return tick
    x_from = float(chart.px(m.from_step))
    y_from = next((v for v in (chart.y_at(p, m.from_step, scale) for p in pins) if v is not None),
                  float(top))
    lift = max(12.0, abs(x_from - x) * 0.15)
    peak = max(float(top), min(y_from, y_to) - lift)
    return (f'<path class="rollback-arrow" d="M{x_from:.1f},{y_from:.1f} Q{(x + x_from) / 2:.1f},'
            f'{peak:.1f} {x:.1f},{y_to:.1f}" fill="none" data-from-step="{m.from_step}"/>'
            f'<circle cx="{x:.1f}" cy="{y_to:.1f}" r="4"/>{tick}')


def offscale(chart: svg.Chart, s: svg.Series, scale: svg.Scale, top: int, bottom: int
             ) -> list[str]:
    """One marker at the plot's top or bottom edge per run of consecutive points of ``s``
    beyond the scale; its title holds the true extreme value."""
    v = s.values
    finite = np.isfinite(v)
    above = finite & (v > scale.hi)
    below = finite & (v < scale.lo)
    out = []
    for side, mask in (("above", above), ("below", below)):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
            vals = v[run]
            k = int(run[np.argmax(vals)] if side == "above" else run[np.argmin(vals)])
            true = float(v[k])
            s0, s1 = int(s.steps[run[0]]), int(s.steps[run[-1]])
            xa, xb = (float(p) for p in chart.px(np.array([s0, s1])))
            y = top if side == "above" else bottom
            tip = y - 6 if side == "above" else y + 6
            span = f"steps {s0}–{s1}" if s1 > s0 else f"step {s0}"
            title = (f"{s.label}: {fmt.num(true)} at step {int(s.steps[k])} "
                     f"({span} {side} the chart's scale)")
            out.append(
                f'<g class="offscale-marker" data-side="{side}" data-step="{s0}" '
                f'data-end-step="{s1}" data-value="{true!r}" data-series="{svg.attr(s.key)}">'
                f'<title>{svg.attr(title)}</title>'
                f'<line x1="{xa:.1f}" x2="{max(xb, xa):.1f}" y1="{y}" y2="{y}"/>'
                f'<path d="M{xa - 4:.1f},{y} L{xa + 4:.1f},{y} L{xa:.1f},{tip}Z"/>'
                f'<text x="{xa + 6:.1f}" y="{y + 12 if side == "above" else y - 4}">'
                f'{svg.attr(fmt.num(true))}</text></g>')
    return out
