"""One run (``/runs/{run_id}``): header, charts, diagnoses with evidence, recommendations,
timeline."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rhythmd.errors import NotFoundError
from rhythmd.web import data as webdata
from rhythmd.web import fmt
from rhythmd.web.access import Denied, covers, viewer
from rhythmd.web.html import (
    DEFAULT_MAX_POINTS,
    KIND_LABELS,
    MaxPointsQuery,
    RefreshQuery,
    badge,
    e,
    fmt_time,
    kv_table,
    page,
    token,
)
from rhythmd.web.run_charts import charts, regions

router = APIRouter(include_in_schema=False)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request, run_id: str,
    max_points: MaxPointsQuery = DEFAULT_MAX_POINTS,
    refresh: RefreshQuery = None,
) -> HTMLResponse:
    service = request.app.state.service
    try:
        principal = viewer(request)
    except Denied as denied:
        return denied.response
    try:
        if not covers(principal, service.get_run(run_id).get("project")):
            raise NotFoundError(run_id)  # another project's run: as if it did not exist
        d = webdata.load_run(service, run_id, max_points)
    except NotFoundError:
        return page("Run not found", "run", f'<h1>Run not found</h1><p class="error">No run '
                    f'<code>{e(run_id)}</code> on this daemon. <a href="/">All runs</a></p>',
                    status_code=404)
    run = d.run
    name = str(run.get("name") or run_id)
    live = run.get("status") == "running" and d.state != "lost"
    content = [_run_header(d, name), '<div id="run-live" data-live-region>',
               charts(d), '<div class="cols">', _diagnoses(d), _evidence(d), "</div>",
               _recommendations(d), _timeline(d), "</div>"]
    return page(name, "run", "".join(content), live=live, refresh_ms=refresh)


def _run_header(d: webdata.RunData, name: str) -> str:
    run = d.run
    tags = run.get("tags") or {}
    facts: dict[str, str] = {
        "run id": f"<code>{e(run['run_id'])}</code>",
        "project": e(run.get("project") or "—"),
        "last step": e(run.get("last_step") if run.get("last_step") is not None else "—"),
        "points": e(run.get("n_points", 0)),
        "branch": e(run.get("branch", 0)),
        "created": fmt_time(run.get("created_at")),
        "updated": fmt_time(run.get("updated_at")),
    }
    lr = d.series.get(d.roles.lr) if d.roles.lr else None
    if lr is not None and lr.values.size:
        facts["current lr"] = e(fmt.num(float(lr.values[-1])))
    if d.schedule:
        facts["schedule"] = e(" → ".join(str(s.get("kind")) for s in d.schedule))
    dl = "".join(f"<div><dt>{e(k)}</dt><dd>{v}</dd></div>" for k, v in facts.items())
    tag_html = ""
    if isinstance(tags, dict) and tags:
        tag_html = '<div class="tags" id="run-tags">' + "".join(
            f'<span class="tag">{e(k)}={e(fmt.value(v))}</span>' for k, v in tags.items()
        ) + "</div>"
    config = run.get("config")
    cfg_html = ""
    if config:
        cfg_html = (f'<details id="run-config"><summary>config</summary>'
                    f'{kv_table(config)}</details>')
    return (f'<section class="run-header"><p class="crumbs"><a href="/">Runs</a> /</p>'
            f'<h1><span id="run-name">{e(name)}</span> {badge(d.state, "run-status")}</h1>'
            f'<dl class="facts">{dl}</dl>{tag_html}{cfg_html}</section>')


def _diagnoses(d: webdata.RunData) -> str:
    if not d.diagnoses:
        return ('<section id="diagnoses-section"><h2>Diagnoses</h2><p class="empty" '
                'id="no-diagnoses">No diagnosis: the rhythm looks fine so far.</p></section>')
    by_id = {r.ref_id: r for r in regions(d)}
    rows = []
    for g in d.diagnoses:
        closed = g.get("closed_at_step")
        region = by_id.get(str(g["id"]))
        span = f"{region.start}–{region.end}" if region else str(g.get("onset_step"))
        status = str(g.get("status"))
        if closed is not None:
            status += f" at {closed}"
            if region and closed < region.start:
                status += " (rollback)"
        kind = str(g.get("kind"))
        rows.append(
            f'<tr class="diag-row diag-{token(kind)}" data-diag-id="{e(g["id"])}" '
            f'data-kind="{e(kind)}" data-status="{e(g.get("status"))}" tabindex="0">'
            f'<td><span class="kind-dot diag-{token(kind)}"></span>'
            f'{e(KIND_LABELS.get(kind, kind))}</td><td>{e(span)}</td>'
            f'<td>{e(g.get("severity"))}</td><td>{e(status)}</td>'
            f'<td>{e(fmt.text(str(g.get("message"))))}</td></tr>')
    return ('<section id="diagnoses-section"><h2>Diagnoses</h2>'
            '<p class="hint">Click a row or a shaded region for its evidence.</p>'
            '<table id="diagnoses" class="data clickable"><thead><tr><th>Kind</th>'
            '<th>Steps</th><th>Severity</th><th>Status</th><th>Message</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></section>")


def _evidence(d: webdata.RunData) -> str:
    parts = ['<aside id="evidence-panel" aria-live="polite"><h2>Evidence</h2>'
             '<p id="evidence-empty" class="hint">Select a diagnosis to see the statistics, '
             'windows and tests behind it.</p>']
    for g in d.diagnoses:
        ev = g.get("evidence") or {}
        facts = {"kind": g.get("kind"), "metric": g.get("metric"),
                 "onset step": g.get("onset_step"), "detected at step": g.get("detected_at_step"),
                 "updated at step": g.get("updated_at_step"),
                 "closed at step": g.get("closed_at_step"), "severity": g.get("severity"),
                 "confidence": g.get("confidence"), "status": g.get("status")}
        recs = [r for r in d.recommendations if r.get("diagnosis_id") == g["id"]]
        rec_html = ""
        if recs:
            rec_html = "<h4>Recommendations</h4><ul>" + "".join(
                f'<li>{e(r.get("action"))} {e(fmt.value(r.get("params") or {}))} — '
                f'{e(r.get("status"))}</li>' for r in recs) + "</ul>"
        parts.append(
            f'<div class="evidence" data-evidence-for="{e(g["id"])}" hidden>'
            f'<h3>{e(g["id"])}</h3><p class="message">{e(fmt.text(str(g.get("message"))))}</p>'
            f'{kv_table({k: v for k, v in facts.items() if v is not None}, "kv facts")}'
            f'<h4>Evidence</h4>{kv_table(ev, "kv evidence-table") if ev else "<p>none</p>"}'
            f'{rec_html}</div>')
    parts.append("</aside>")
    return "".join(parts)


def _recommendations(d: webdata.RunData) -> str:
    if not d.recommendations:
        return ('<section id="recommendations-section"><h2>Recommendations</h2>'
                '<p class="empty">None issued.</p></section>')
    rows = []
    for r in d.recommendations:
        lr = ""
        if r.get("lr_before") is not None or r.get("lr_after") is not None:
            lr = f"{fmt.value(r.get('lr_before'))} → {fmt.value(r.get('lr_after'))}"
        rows.append(
            f'<tr class="rec-row" data-rec-id="{e(r["id"])}" data-action="{e(r.get("action"))}" '
            f'data-status="{e(r.get("status"))}"><td>{e(r.get("action"))}</td>'
            f'<td>{e(fmt.value(r.get("params") or {}))}</td>'
            f'<td>{badge(str(r.get("status")))}</td><td>{e(r.get("issued_at_step"))}</td>'
            f'<td>{e(r.get("applied_step"))}</td><td>{e(lr)}</td><td>{e(r.get("author"))}</td>'
            f'<td>{e(r.get("reason"))}{" — " + e(r.get("note")) if r.get("note") else ""}</td>'
            "</tr>")
    return ('<section id="recommendations-section"><h2>Recommendations</h2>'
            '<table id="recommendations" class="data"><thead><tr><th>Action</th><th>Params</th>'
            '<th>Status</th><th>Issued at</th><th>Applied at</th><th>LR before → after</th>'
            '<th>Author</th><th>Reason</th></tr></thead><tbody>' + "".join(rows)
            + "</tbody></table></section>")


def _timeline(d: webdata.RunData) -> str:
    if not d.timeline:
        return ('<section id="timeline-section"><h2>Timeline</h2><p class="empty">Nothing '
                'happened yet.</p></section>')
    diag_ids = {str(g["id"]) for g in d.diagnoses}
    items = []
    for it in d.timeline:
        kind = str(it.get("kind"))
        ref = it.get("ref_id")
        diag = (f' data-diag-id="{e(ref)}" tabindex="0"'
                if kind.startswith("diagnosis_") and str(ref) in diag_ids else "")
        step = it.get("step")
        detail = it.get("detail") or {}
        det = ""
        if isinstance(detail, dict) and detail and not kind.startswith("diagnosis_"):
            det = f"<details><summary>details</summary>{kv_table(detail)}</details>"
        wt = it.get("wall_time")
        items.append(
            f'<li class="timeline-item tl-{token(kind)}" data-kind="{e(kind)}" '
            f'data-step="{e("" if step is None else step)}" data-ref-id="{e(ref or "")}"{diag}>'
            f'<span class="tl-step">{"step " + e(step) if step is not None else ""}</span>'
            f'<span class="tl-time">{fmt_time(wt) if wt else ""}</span>'
            f'<span class="tl-kind">{e(kind.replace("_", " "))}</span>'
            f'<span class="tl-title">{e(fmt.text(str(it.get("title"))))}</span>{det}</li>')
    return ('<section id="timeline-section"><h2>Timeline</h2><ol id="timeline">'
            + "".join(items) + "</ol></section>")

