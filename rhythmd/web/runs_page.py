"""The runs list (``/``): filters, a sortable table, selection for compare, paging."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from rhythmd.errors import InvalidInputError
from rhythmd.web import fmt
from rhythmd.web.access import Denied, viewer
from rhythmd.web.html import KIND_LABELS, RefreshQuery, badge, e, fmt_time, page, run_href, token
from rhythmd.web.overview import Overview, overviews, severity_rank

router = APIRouter(include_in_schema=False)

LIVE_STATES = ("running", "healthy", "diverging", "stagnating", "oscillating", "slow")
STATUS_FILTERS = ("running", "finished", "failed", "stopped", "lost", "healthy", "diverging",
                  "stagnating", "oscillating", "slow")


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    project: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    refresh: RefreshQuery = None,
) -> HTMLResponse:
    service = request.app.state.service
    try:
        principal = viewer(request)
    except Denied as denied:
        return denied.response
    project = project or None
    if principal is not None and principal.project != "*":
        project = principal.project  # a project token sees its project only
    status = status if status in STATUS_FILTERS else None
    limit = min(limit, request.app.state.settings.max_page_size)
    try:
        rows, total = service.list_runs(project, status, limit, offset)
    except InvalidInputError as exc:
        return page("Runs", "runs", f'<p class="error">{e(exc)}</p>', status_code=422)
    seen = overviews(service, rows)
    live = any(r["state"] in LIVE_STATES or r.get("status") == "running" for r in rows)
    body = [_filters(project, status)]
    body.append('<form id="compare-form" action="/compare" method="get">'
                '<div class="toolbar"><button type="submit" id="compare-button" disabled>'
                'Compare selected</button> <span class="hint">tick runs to overlay them on one '
                'chart</span></div>')
    body.append('<table id="runs-table" class="sortable data"><thead><tr>'
                '<th class="select"><span class="sr">select</span></th>'
                '<th data-sort="text">Name</th><th data-sort="text">Project</th>'
                '<th data-sort="text">Status</th>'
                '<th data-sort="num" title="the worst diagnosis">Trouble</th>'
                '<th data-sort="num" title="changes applied to the training">Changes</th>'
                '<th data-sort="num">Last step</th>'
                '<th data-sort="num">Best val</th><th data-sort="num">Points</th>'
                '<th data-sort="num" aria-sort="descending">Last update</th></tr></thead>'
                '<tbody id="runs-body" data-live-region>')
    for r in rows:
        body.append(_run_row(r, seen[str(r["run_id"])]))
    if not rows:
        body.append('<tr class="empty"><td colspan="10">No runs yet. Start one with '
                    '<code>POST /v1/runs</code> or the Python hook.</td></tr>')
    body.append("</tbody></table></form>")
    body.append(_pager(project, status, limit, offset, total, len(rows)))
    return page("Runs", "runs", "<h1>Runs</h1>" + "".join(body), live=live, refresh_ms=refresh)


def _filters(project: str | None, status: str | None) -> str:
    opts = ['<option value="">any status</option>']
    for s in STATUS_FILTERS:
        sel = " selected" if s == status else ""
        opts.append(f'<option value="{e(s)}"{sel}>{e(s)}</option>')
    return ('<form class="filters" id="filters" method="get" action="/">'
            f'<label>Project <input name="project" value="{e(project or "")}"></label> '
            f'<label>Status <select name="status">{"".join(opts)}</select></label> '
            '<button type="submit">Filter</button></form>')


def _run_row(run: dict[str, Any], o: Overview) -> str:
    rid = str(run["run_id"])
    name = str(run.get("name") or rid)
    state = str(run["state"])
    tags = run.get("tags") or {}
    tag_html = "".join(f'<span class="tag">{e(k)}={e(fmt.value(v))}</span>'
                       for k, v in list(tags.items())[:6]) if isinstance(tags, dict) else ""
    if o.best_val is not None:
        metric, value, step = o.best_val
        at = f" @ {step}" if step is not None else ""
        best = (f'<td class="best-val" data-value="{value!r}" title="{e(metric)}">'
                f'{e(fmt.num(value))}<span class="muted">{e(at)}</span></td>')
    else:
        best = '<td class="best-val muted" data-value="">—</td>'
    marks = "".join(f' <span class="badge mark-{m}" data-badge="{m}">{m}</span>'
                    for m in o.badges(run))
    last = run.get("last_step")
    updated = run.get("updated_at") or 0.0
    return (f'<tr class="run-row" data-run-id="{e(rid)}" data-state="{e(state)}">'
            f'<td class="select"><input type="checkbox" name="runs" value="{e(rid)}" '
            f'class="run-select" aria-label="select {e(name)}"></td>'
            f'<td data-value="{e(name.lower())}"><a class="run-link" href="{e(run_href(rid))}">'
            f'{e(name)}</a> <code class="run-id muted">{e(rid)}</code>'
            f'<div class="tags">{tag_html}</div></td>'
            f'<td data-value="{e(run.get("project") or "")}">{e(run.get("project") or "—")}</td>'
            f'<td class="status" data-value="{e(state)}">{badge(state)}{marks}</td>'
            f'{_trouble(o)}'
            f'<td class="changes" data-value="{o.changes}">{o.changes or "—"}</td>'
            f'<td class="last-step" data-value="{"" if last is None else last}">'
            f'{"—" if last is None else e(last)}</td>{best}'
            f'<td data-value="{e(run.get("n_points", 0))}">{e(run.get("n_points", 0))}</td>'
            f'<td data-value="{updated:.3f}">{fmt_time(updated)}</td></tr>')


def _trouble(o: Overview) -> str:
    """The worst diagnosis: kind and severity, open or closed, and how many there were."""
    if o.worst is None:
        return '<td class="trouble muted" data-value="-1">—</td>'
    d = o.worst
    kind, sev = str(d.get("kind")), str(d.get("severity"))
    rank = severity_rank(d)
    more = f" (+{len(o.diagnoses) - 1})" if len(o.diagnoses) > 1 else ""
    return (f'<td class="trouble" data-value="{rank[0] * 2 + rank[1]}" data-kind="{e(kind)}" '
            f'data-severity="{e(sev)}" data-status="{e(d.get("status"))}" '
            f'title="{e(fmt.text(str(d.get("message") or "")))}">'
            f'<span class="kind-dot diag-{token(kind)}"></span>'
            f'{e(KIND_LABELS.get(kind, kind))} <span class="sev sev-{token(sev)}">{e(sev)}</span>'
            f'<span class="muted">{e(more)}</span></td>')


def _pager(project: str | None, status: str | None, limit: int, offset: int, total: int,
           shown: int) -> str:
    def link(off: int, text: str) -> str:
        q = {k: v for k, v in (("project", project), ("status", status)) if v}
        q.update(limit=str(limit), offset=str(off))
        return f'<a href="/?{e(urlencode(q))}">{e(text)}</a>'

    parts = [f'<span id="runs-count">{offset + 1 if shown else 0}–{offset + shown} of '
             f'{total}</span>']
    if offset > 0:
        parts.insert(0, link(max(0, offset - limit), "← newer"))
    if offset + shown < total:
        parts.append(link(offset + limit, "older →"))
    return f'<nav class="pager">{" ".join(parts)}</nav>'

