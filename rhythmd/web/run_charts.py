"""The run page's charts: loss, validation, learning rate and other metrics on one step axis,
with diagnoses as shaded regions and recommendations, changes and rollbacks as markers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rhythmd.web import data as webdata
from rhythmd.web import fmt
from rhythmd.web.chart_data import data_block
from rhythmd.web.html import KIND_LABELS, e
from rhythmd.web.svg import PALETTE, Chart, Marker, Overlay, Reference, Region, Series


def regions(d: webdata.RunData) -> list[Region]:
    last = d.x_domain[1]
    seen_at: dict[str, int] = {}  # last step each diagnosis was opened/updated at (event log)
    for it in d.timeline:
        if it.get("kind") in ("diagnosis_opened", "diagnosis_updated") and isinstance(
                it.get("step"), int):
            ref = str(it.get("ref_id"))
            seen_at[ref] = max(seen_at.get(ref, 0), int(it["step"]))
    out = []
    for g in d.diagnoses:
        start = g.get("onset_step")
        if start is None:
            start = g.get("detected_at_step", 0)
        closed = g.get("closed_at_step")
        is_open = g.get("status") == "open" or closed is None
        # a rollback closes a diagnosis at the resume step, before its onset: the region then
        # spans what was seen (onset to the last update) on the abandoned branch, drawn fainter
        seen = [v for v in (g.get("updated_at_step"), g.get("detected_at_step"), start,
                            seen_at.get(str(g["id"]))) if isinstance(v, int)]
        end = max([last if is_open else int(closed), *seen])
        out.append(Region(int(start), int(end), str(g.get("kind")), str(g["id"]),
                          KIND_LABELS.get(str(g.get("kind")), str(g.get("kind"))),
                          f"{g.get('kind')} ({g.get('severity')}, {g.get('status')}): "
                          f"{fmt.text(str(g.get('message', '')))} — click for evidence", is_open,
                          closed is not None and int(closed) < int(start)))
    return out


def _markers(d: webdata.RunData) -> list[Marker]:
    """Recommendations issued, changes applied or rejected, rollbacks; each on its branch."""
    out = []
    for r in d.recommendations:
        params = r.get("params") or {}
        args = ", ".join(f"{k}={fmt.value(v)}" for k, v in params.items())
        extra = {"action": str(r.get("action")), "status": str(r.get("status"))}
        if r.get("issued_at_step") is not None:
            step = int(r["issued_at_step"])
            on, gone = webdata.branch_of(d.branches, step, r.get("created_at"))
            out.append(Marker(step, "recommendation", f"▲ {r.get('action')}",
                              f"recommended {r.get('action')}({args}) by {r.get('author')} "
                              f"[{r.get('status')}] on branch {on}: {r.get('reason', '')}",
                              str(r["id"]), {**extra, "on-branch": str(on)}, gone))
        if r.get("status") in ("applied", "rejected") and r.get("applied_step") is not None:
            step = int(r["applied_step"])
            on, gone = webdata.branch_of(d.branches, step, r.get("updated_at"))
            lr = ""
            if r.get("lr_before") is not None:
                lr = f" lr {fmt.value(r.get('lr_before'))} → {fmt.value(r.get('lr_after'))}"
            kind = "applied" if r["status"] == "applied" else "rejected"
            out.append(Marker(step, kind, f"✓ {r.get('action')}"
                              if kind == "applied" else f"✗ {r.get('action')}",
                              f"{r.get('action')} {r['status']} at step {step} on branch "
                              f"{on}{lr}", str(r["id"]), {**extra, "on-branch": str(on)}, gone))
    # a branch that resumes right after an applied revert is that revert, not a rollback
    reverts = {int(r["applied_step"]) + 1: r for r in d.recommendations
               if r.get("action") == "revert" and r.get("status") == "applied"
               and r.get("applied_step") is not None}
    left_at = {br: int(seg.steps.max()) for br, seg in d.abandoned if seg.steps.size}
    for b in d.branches:
        if b.get("branch", 0) == 0 or b.get("start_step") is None:
            continue
        rev = reverts.get(int(b["start_step"]))
        what = "revert" if rev is not None else "rollback"
        why = f": {rev.get('reason')}" if rev is not None else ""
        frm = left_at.get(int(b["branch"]))
        left = f", leaving step {frm}" if frm is not None else ""
        out.append(Marker(int(b["start_step"]), "rollback", f"↺ {what} → branch {b['branch']}",
                          f"{what}: branch {b['branch']} resumed at step {b['start_step']} "
                          f"(from branch {b.get('parent_branch')}{left}){why}",
                          str(b["branch"]), {"branch": str(b["branch"])}, from_step=frm))
    return out


def _schedule_overlays(segments: list[dict[str, Any]]) -> list[Overlay]:
    out = []
    for s in segments:
        try:
            s0, s1 = int(s["start_step"]), int(s["end_step"])
            l0, l1 = float(s["lr_start"]), float(s["lr_end"])
        except (KeyError, TypeError, ValueError):
            continue
        if s1 < s0 or not (math.isfinite(l0) and math.isfinite(l1)):
            continue
        kind = str(s.get("kind"))
        params = s.get("params") or {}
        steps = np.linspace(s0, s1, 48)
        u = (steps - s0) / max(s1 - s0, 1)
        if kind == "constant":
            values = np.full_like(steps, l0)
        elif kind == "exponential" and l0 > 0 and l1 > 0:
            values = l0 * (l1 / l0) ** u
        elif kind == "cosine":
            t_max, eta = params.get("T_max"), params.get("eta_min")
            if isinstance(t_max, (int, float)) and isinstance(eta, (int, float)) and t_max > 0:
                amp = (l0 - eta)
                values = eta + amp * (1 + np.cos(np.pi * (steps - s0) / t_max)) / 2
            else:
                values = l1 + (l0 - l1) * (1 + np.cos(np.pi * u)) / 2
        else:
            values = l0 + (l1 - l0) * u
        title = (f"identified {kind}: steps {s0}–{s1}, lr {fmt.num(l0)} → {fmt.num(l1)}"
                 + (f" {fmt.value(params)}" if params else ""))
        out.append(Overlay(steps, values, kind, kind, title))
    return out


def _series(s: webdata.SeriesData, label: str, color: str, **kw: Any) -> Series:
    return Series(s.name, label, s.steps, s.values, color, **kw)


def charts(d: webdata.RunData) -> str:
    regs, markers = regions(d), _markers(d)
    panels: list[tuple[str, str, Chart, list[webdata.SeriesData]]] = []

    def chart(cid: str, y_label: str, **kw: Any) -> Chart:
        c = Chart(cid, d.x_domain, y_label=y_label, show_labels=not panels, **kw)
        c.regions, c.markers = regs, markers
        return c

    r = d.roles
    loss_names = [n for n in (r.train, r.val if r.val_mode == "min" else None) if n]
    if loss_names:
        c = chart("chart-loss", "loss")
        for i, n in enumerate(loss_names):
            c.series.append(_series(d.series[n], n, PALETTE[i]))
        for br, seg in d.abandoned:
            c.series.append(_series(seg, f"{seg.name} before rollback → branch {br}", "#9ca3af",
                                    css="series abandoned-series", dashed=True, scaled=False))
        panels.append(("panel-loss", "Loss", c, [d.series[n] for n in loss_names]))
    val_names = [n for n in (r.val if r.val_mode == "max" else None, r.aux) if n]
    if val_names:
        c = chart("chart-val", "validation", log_ratio=1e9, height=200)
        for i, n in enumerate(val_names):
            c.series.append(_series(d.series[n], n, PALETTE[(i + 2) % len(PALETTE)]))
        panels.append(("panel-val", "Validation metric", c, [d.series[n] for n in val_names]))
    if r.lr:
        c = chart("chart-lr", "learning rate", log_ratio=10.0, height=200)
        c.series.append(_series(d.series[r.lr], r.lr, PALETTE[3]))
        c.overlays = _schedule_overlays(d.schedule)
        if d.configured_lr is not None:
            value, source = d.configured_lr
            c.references.append(Reference(value, f"configured lr {fmt.num(value)}",
                                          f"the LR before any change: {source}", "configured-lr"))
        panels.append(("panel-lr", "Learning rate", c, [d.series[r.lr]]))
    for i, n in enumerate(d.extra):
        c = chart(f"chart-extra-{i}", n, height=170)
        c.series.append(_series(d.series[n], n, PALETTE[(i + 4) % len(PALETTE)]))
        panels.append((f"panel-extra-{i}", n, c, [d.series[n]]))
    if not panels:
        return ('<section class="charts" id="charts"><p class="empty">No metrics yet: the '
                'charts appear with the first batch.</p></section>')
    out = ['<section class="charts" id="charts"><h2>Metrics</h2>', _chart_legend()]
    for pid, title, c, shown in panels:
        notes = []
        for s in shown:
            bad = int((~np.isfinite(s.values)).sum())
            if s.downsampled:
                notes.append(f"{s.name}: {s.steps.size} of {s.total_points} points shown "
                             "(min/max per bucket; every non-finite point kept)")
            if bad:
                notes.append(f"{s.name}: {bad} non-finite point{'s' if bad > 1 else ''} "
                             "(red markers on the edge)")
        note = "".join(f'<div class="note">{e(n)}</div>' for n in notes)
        data = data_block(c, smooth=pid != "panel-lr")
        out.append(f'<figure class="panel" id="{e(pid)}"><figcaption>{e(title)}</figcaption>'
                   f'<div class="chart-wrap">{c.render()}{data}</div>{note}</figure>')
    out.append("</section>")
    return "".join(out)


def _chart_legend() -> str:
    items = [("swatch region diag-divergence", "divergence"),
             ("swatch region diag-stagnation", "stagnation"),
             ("swatch region diag-oscillation", "oscillation"),
             ("swatch region diag-slow_progress", "slow progress"),
             ("swatch region diag-spike", "spike"),
             ("swatch mark recommendation", "recommendation"),
             ("swatch mark applied", "applied"), ("swatch mark rollback", "rollback"),
             ("swatch mark nonfinite", "NaN / Inf")]
    return ('<ul class="chart-legend">' + "".join(
        f'<li><span class="{c}"></span>{e(t)}</li>' for c, t in items) + "</ul>")

