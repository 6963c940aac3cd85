"""The compare page (``/compare?runs=a,b``): several runs' curves on shared charts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from rhythmd.errors import InvalidInputError, NotFoundError
from rhythmd.web import data as webdata
from rhythmd.web import fmt
from rhythmd.web.access import Denied, may_see, viewer
from rhythmd.web.chart_data import data_block
from rhythmd.web.html import (
    DEFAULT_MAX_POINTS,
    KIND_LABELS,
    MaxPointsQuery,
    RefreshQuery,
    badge,
    e,
    page,
    run_href,
    token,
)
from rhythmd.web.overview import Overview, overviews
from rhythmd.web.svg import PALETTE, Chart, Marker, Series

router = APIRouter(include_in_schema=False)

MAX_COMPARE = 12


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    runs: Annotated[list[str], Query(max_length=2000)] = [],  # noqa: B006 (FastAPI query list)
    metric: Annotated[str | None, Query(max_length=256)] = None,
    max_points: MaxPointsQuery = DEFAULT_MAX_POINTS,
    refresh: RefreshQuery = None,
) -> HTMLResponse:
    service = request.app.state.service
    try:
        principal = viewer(request)
    except Denied as denied:
        return denied.response
    ids = list(dict.fromkeys(p.strip() for v in runs for p in v.split(",") if p.strip()))
    ids = ids[:MAX_COMPARE]
    if not ids:
        return page("Compare", "compare", '<h1>Compare runs</h1><p class="empty">Pick runs on '
                    'the <a href="/">runs list</a> (tick two or more) and press Compare.</p>')
    try:
        hidden = [i for i in ids if not may_see(service, principal, i)]
        found, missing, charts, names = webdata.load_compare(
            service, [i for i in ids if i not in hidden], max_points, metric or None)
        missing += hidden  # another project's runs read as unknown
    except (InvalidInputError, NotFoundError) as exc:
        return page("Compare", "compare", f'<p class="error">{e(exc)}</p>', status_code=422)
    colors = {str(r["run_id"]): PALETTE[i % len(PALETTE)] for i, r in enumerate(found)}
    seen = overviews(service, found)
    out = ['<h1>Compare runs</h1>', _run_list(found, colors, seen)]
    if missing:
        out.append('<p class="error" id="compare-missing">Unknown run ids: '
                   + ", ".join(f"<code>{e(m)}</code>" for m in missing) + "</p>")
    opts = ['<option value="">(train / validation / lr)</option>'] + [
        f'<option value="{e(n)}"{" selected" if n == metric else ""}>{e(n)}</option>'
        for n in names]
    out.append('<form class="filters" method="get" action="/compare">'
               f'<input type="hidden" name="runs" value="{e(",".join(ids))}">'
               f'<label>Add a chart of <select name="metric">{"".join(opts)}</select></label> '
               '<button type="submit">Show</button></form>')
    out.append('<div id="compare-live" data-live-region>')
    all_steps = [s.steps for per in charts.values() for s in per.values() if s.steps.size]
    x0 = min((int(a.min()) for a in all_steps), default=0)
    x1 = max((int(a.max()) for a in all_steps), default=1)
    titles = {"train": ("Train loss", "loss", 30.0), "val": ("Validation", "validation", 30.0),
              "lr": ("Learning rate", "learning rate", 10.0),
              "metric": (metric or "", metric or "", 30.0)}
    marks = _diagnosis_markers(found, colors, seen)
    any_chart = False
    for key, per in charts.items():
        if not per:
            continue
        any_chart = True
        title, ylab, ratio = titles[key]
        c = Chart(f"compare-{key}", (x0, max(x1, x0 + 1)), y_label=ylab, log_ratio=ratio,
                  legend=False)
        c.markers = marks
        for r in found:
            rid = str(r["run_id"])
            if rid in per:
                s = per[rid]
                c.series.append(Series(f"{rid}:{s.name}", f"{_label(r)} ({s.name})",
                                       s.steps, s.values, colors[rid]))
        data = data_block(c, smooth=key != "lr")
        out.append(f'<figure class="panel" id="compare-panel-{key}"><figcaption>{e(title)}'
                   f'</figcaption><div class="chart-wrap">{c.render()}{data}</div></figure>')
    if not any_chart:
        out.append('<p class="empty">These runs have no metrics yet.</p>')
    out.append("</div>")
    live = any(r.get("status") == "running" for r in found)
    return page("Compare", "compare", "".join(out), live=live, refresh_ms=refresh)


def _label(run: dict[str, Any]) -> str:
    """A run as the compare page names it: its name and its id (names need not be unique)."""
    rid = str(run["run_id"])
    name = str(run.get("name") or rid)
    return rid if name == rid else f"{name} · {rid}"


def _run_list(found: list[dict[str, Any]], colors: dict[str, str],
              seen: dict[str, Overview]) -> str:
    lines = []
    for r in found:
        rid = str(r["run_id"])
        name = str(r.get("name") or rid)
        o = seen[rid]
        trouble = ""
        if o.worst is not None:
            kind = str(o.worst.get("kind"))
            trouble = (f' <span class="trouble" data-kind="{e(kind)}">'
                       f'<span class="kind-dot diag-{token(kind)}"></span>'
                       f'{e(KIND_LABELS.get(kind, kind))} {e(o.worst.get("severity"))}</span>')
        marks = "".join(f' <span class="badge mark-{m}" data-badge="{m}">{m}</span>'
                        for m in o.badges(r))
        lines.append(f'<li class="compare-run" data-run-id="{e(rid)}"><svg width="22" '
                     f'height="10" aria-hidden="true"><line x1="0" x2="22" y1="5" y2="5" '
                     f'stroke="{colors[rid]}" stroke-width="3"/></svg> '
                     f'<a href="{e(run_href(rid))}">{e(name)}</a> '
                     f'<code class="run-id">{e(rid)}</code> '
                     f'<span class="muted">{e(r.get("project") or "")}</span> '
                     f'{badge(webdata.run_state(r))}{marks}{trouble}</li>')
    return '<ul id="compare-runs">' + "".join(lines) + "</ul>"


def _diagnosis_markers(found: list[dict[str, Any]], colors: dict[str, str],
                       seen: dict[str, Overview]) -> list[Marker]:
    """Each run's diagnoses at their onset, in the run's colour."""
    out = []
    for r in found:
        rid = str(r["run_id"])
        for g in seen[rid].diagnoses:
            step = g.get("onset_step", g.get("detected_at_step"))
            if not isinstance(step, int):
                continue
            kind = str(g.get("kind"))
            out.append(Marker(
                step, "diagnosis", "",
                f"{_label(r)}: {KIND_LABELS.get(kind, kind)} ({g.get('severity')}, "
                f"{g.get('status')}) at step {step}: {fmt.text(str(g.get('message') or ''))}",
                str(g.get("id")), {"run-id": rid, "kind": kind,
                                   "severity": str(g.get("severity"))}, color=colors[rid]))
    return out
