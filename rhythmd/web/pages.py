"""The daemon's web pages: runs list (``/``), one run (``/runs/{run_id}``), compare
(``/compare?runs=a,b``).

Pages are rendered on the server: HTML with every user string escaped (``html.escape``) and
SVG charts drawn by :mod:`rhythmd.web.svg` from downsampled series (``max_points``). A small
hand-written script (``static/rhythmd.js``) sorts tables, shows a diagnosis' evidence on click,
draws a crosshair and refreshes live pages. Nothing is loaded from outside the daemon; the
Content-Security-Policy forbids it, and inline scripts too.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from functools import lru_cache
from html import escape
from importlib import resources
from string import Template
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rhythmd import __version__
from rhythmd.api.encoding import encode_nonfinite
from rhythmd.auth import Decision
from rhythmd.errors import InvalidInputError, NotFoundError
from rhythmd.web import data as webdata
from rhythmd.web.svg import PALETTE, Chart, Marker, Overlay, Region, Series, fmt_num

try:  # authentication (RHYTHMD_AUTH=required): the pages apply the same rules as /v1
    from rhythmd.api.security import COOKIE, principal_of
except ImportError:  # pragma: no cover - without it, pages refuse to serve when auth is on
    COOKIE, principal_of = "rhythmd_token", None

router = APIRouter(include_in_schema=False)

DEFAULT_MAX_POINTS = 2000
REFRESH_MS = 5000
RefreshQuery = Annotated[int | None, Query(ge=500, le=3_600_000,
                                           description="Live refresh period (ms).")]
LIVE_STATES = ("running", "healthy", "diverging", "stagnating", "oscillating", "slow")
STATUS_FILTERS = ("running", "finished", "failed", "stopped", "lost", "healthy", "diverging",
                  "stagnating", "oscillating", "slow")
MAX_COMPARE = 12
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC_TYPES = {"rhythmd.css": "text/css; charset=utf-8",
                "rhythmd.js": "text/javascript; charset=utf-8"}
KIND_LABELS = {"divergence": "divergence", "stagnation": "stagnation",
               "oscillation": "oscillation", "slow_progress": "slow progress", "spike": "spike"}


def e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def token(value: object) -> str:
    """A safe CSS class fragment."""
    return re.sub(r"[^a-z0-9_-]", "", str(value).lower())[:32] or "unknown"


@lru_cache(maxsize=8)
def _resource(name: str) -> str:
    return resources.files("rhythmd.web").joinpath(name).read_text(encoding="utf-8")


def page(title: str, name: str, content: str, *, live: bool = False,
         refresh_ms: int | None = None, status_code: int = 200) -> HTMLResponse:
    """A whole page; ``live`` pages refresh their live regions every ``refresh_ms``."""
    attrs = f' data-refresh="{int(refresh_ms or REFRESH_MS)}"' if live else ""
    html = Template(_resource("templates/base.html")).substitute(
        title=e(title), page=e(name), body_attrs=attrs, content=content, version=e(__version__))
    return HTMLResponse(html, status_code=status_code, headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


def fmt_time(ts: float | None) -> str:
    """A ``<time>`` element (UTC text; the script shows local time and age)."""
    if ts is None or not math.isfinite(ts):
        return "—"
    iso = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time data-ts="{ts:.3f}" title="{e(iso)}">{e(iso)}</time>'


def fmt_value(v: Any) -> str:
    """Plain text of a JSON-like value (floats shortened, non-finite named)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return fmt_num(v)
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        return {"NaN": "NaN", "Infinity": "+Inf", "-Infinity": "-Inf"}[v]
    if isinstance(v, (dict, list, tuple)):
        text = json.dumps(encode_nonfinite(v), ensure_ascii=False)
        return text if len(text) <= 300 else text[:299] + "…"
    return str(v)


def kv_table(d: dict[str, Any], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(fmt_value(v))}</td></tr>" for k, v in d.items())
    return f'<table class="{cls}">{rows}</table>'


def badge(state: str, element_id: str = "") -> str:
    ident = f' id="{e(element_id)}"' if element_id else ""
    return (f'<span{ident} class="badge state-{token(state)}" data-state="{e(state)}">'
            f'{e(state)}</span>')


def run_href(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


# authentication -------------------------------------------------------------------------------
class Denied(Exception):
    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


def viewer(request: Request) -> Any:
    """The caller's principal (None when authentication is off); raises :class:`Denied` with a
    page that says how to sign in when the token is missing or may not read."""
    if request.app.state.settings.auth != "required":
        return None
    if principal_of is None:
        raise Denied(page("Unavailable", "error", '<p class="error">Authentication is on but '
                          "this build cannot check tokens.</p>", status_code=503))
    try:
        principal = principal_of(request)
    except HTTPException as exc:
        raise Denied(_login_page(request.url.path, str(exc.detail), exc.status_code)) from None
    if principal is None or not principal.may("read"):
        raise Denied(_login_page(request.url.path, "this token may not read runs", 403))
    return principal


def covers(principal: Any, project: str | None) -> bool:
    """Whether the viewer may read a run of ``project`` (:func:`rhythmd.auth.authorize`)."""
    return principal is None or principal.decide(project, "read") is Decision.ALLOW


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(next_path: str, message: str, status_code: int = 401) -> HTMLResponse:
    return page("Sign in", "login", (
        '<h1>Sign in</h1>'
        f'<p class="error" id="login-error">{e(message)}</p>'
        '<p>This daemon requires a token (<code>rhythmd token create --project P --scope '
        'read</code>). It is kept in an HttpOnly cookie for these pages.</p>'
        '<form id="login-form" method="post" action="/login">'
        f'<input type="hidden" name="next" value="{e(_safe_next(next_path))}">'
        '<label>Token <input type="password" name="token" autocomplete="off" required></label> '
        '<button type="submit">Sign in</button></form>'), status_code=status_code)


@router.get("/login", response_class=HTMLResponse)
def login_form(next: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
    return _login_page(_safe_next(next), "Paste a token to see the runs.", 200)


@router.post("/login")
async def login(request: Request) -> Response:
    """Store the token in an HttpOnly, SameSite=Strict cookie and go back to the page."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        return Response("cross-site sign-in refused", status_code=403, media_type="text/plain")
    body = (await request.body())[:8192].decode("utf-8", "replace")
    form = parse_qs(body)
    token_value = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    response = RedirectResponse(target, status_code=303)
    if token_value and len(token_value) <= 512 and token_value.isprintable():
        response.set_cookie(COOKIE, token_value, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https", max_age=30 * 86400)
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# static ---------------------------------------------------------------------------------------
@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The pages' own CSS and script (a fixed list: nothing else is served from disk)."""
    media = STATIC_TYPES.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_resource(f"static/{name}"), media_type=media,
                    headers={"Cache-Control": "public, max-age=300",
                             "X-Content-Type-Options": "nosniff"})


# runs list ------------------------------------------------------------------------------------
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
        rows, total = webdata.list_rows(service, project, status, limit, offset)
    except InvalidInputError as exc:
        return page("Runs", "runs", f'<p class="error">{e(exc)}</p>', status_code=422)
    live = any(r.state in LIVE_STATES or r.run.get("status") == "running" for r in rows)
    body = [_filters(project, status)]
    body.append('<form id="compare-form" action="/compare" method="get">'
                '<div class="toolbar"><button type="submit" id="compare-button" disabled>'
                'Compare selected</button> <span class="hint">tick runs to overlay them on one '
                'chart</span></div>')
    body.append('<table id="runs-table" class="sortable data"><thead><tr>'
                '<th class="select"><span class="sr">select</span></th>'
                '<th data-sort="text">Name</th><th data-sort="text">Project</th>'
                '<th data-sort="text">Status</th><th data-sort="num">Last step</th>'
                '<th data-sort="num">Best val loss</th><th data-sort="num">Points</th>'
                '<th data-sort="num" aria-sort="descending">Last update</th></tr></thead>'
                '<tbody id="runs-body" data-live-region>')
    for r in rows:
        body.append(_run_row(r))
    if not rows:
        body.append('<tr class="empty"><td colspan="8">No runs yet. Start one with '
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


def _run_row(r: webdata.RunRow) -> str:
    run = r.run
    rid = str(run["run_id"])
    name = str(run.get("name") or rid)
    tags = run.get("tags") or {}
    tag_html = "".join(f'<span class="tag">{e(k)}={e(fmt_value(v))}</span>'
                       for k, v in list(tags.items())[:6]) if isinstance(tags, dict) else ""
    if r.best_val is not None:
        metric, value, step = r.best_val
        at = f" @ {step}" if step is not None else ""
        best = (f'<td data-value="{value!r}" title="{e(metric)}">{e(fmt_num(value))}'
                f'<span class="muted">{e(at)}</span></td>')
    else:
        best = '<td data-value="" class="muted">—</td>'
    last = run.get("last_step")
    updated = run.get("updated_at") or 0.0
    return (f'<tr class="run-row" data-run-id="{e(rid)}" data-state="{e(r.state)}">'
            f'<td class="select"><input type="checkbox" name="runs" value="{e(rid)}" '
            f'class="run-select" aria-label="select {e(name)}"></td>'
            f'<td data-value="{e(name.lower())}"><a class="run-link" href="{e(run_href(rid))}">'
            f'{e(name)}</a><div class="tags">{tag_html}</div></td>'
            f'<td data-value="{e(run.get("project") or "")}">{e(run.get("project") or "—")}</td>'
            f'<td data-value="{e(r.state)}">{badge(r.state)}</td>'
            f'<td data-value="{"" if last is None else last}">'
            f'{"—" if last is None else e(last)}</td>{best}'
            f'<td data-value="{e(run.get("n_points", 0))}">{e(run.get("n_points", 0))}</td>'
            f'<td data-value="{updated:.3f}">{fmt_time(updated)}</td></tr>')


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


# one run --------------------------------------------------------------------------------------
@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request, run_id: str,
    max_points: Annotated[int, Query(ge=100, le=20_000)] = DEFAULT_MAX_POINTS,
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
               _charts(d), '<div class="cols">', _diagnoses(d), _evidence(d), "</div>",
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
        facts["current lr"] = e(fmt_num(float(lr.values[-1])))
    if d.schedule:
        facts["schedule"] = e(" → ".join(str(s.get("kind")) for s in d.schedule))
    dl = "".join(f"<div><dt>{e(k)}</dt><dd>{v}</dd></div>" for k, v in facts.items())
    tag_html = ""
    if isinstance(tags, dict) and tags:
        tag_html = '<div class="tags" id="run-tags">' + "".join(
            f'<span class="tag">{e(k)}={e(fmt_value(v))}</span>' for k, v in tags.items()
        ) + "</div>"
    config = run.get("config")
    cfg_html = ""
    if config:
        cfg_html = (f'<details id="run-config"><summary>config</summary>'
                    f'{kv_table(config)}</details>')
    return (f'<section class="run-header"><p class="crumbs"><a href="/">Runs</a> /</p>'
            f'<h1><span id="run-name">{e(name)}</span> {badge(d.state, "run-status")}</h1>'
            f'<dl class="facts">{dl}</dl>{tag_html}{cfg_html}</section>')


def _regions(d: webdata.RunData) -> list[Region]:
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
        # spans what was seen (onset to the last update) on the abandoned branch
        seen = [v for v in (g.get("updated_at_step"), g.get("detected_at_step"), start,
                            seen_at.get(str(g["id"]))) if isinstance(v, int)]
        end = max([last if is_open else int(closed), *seen])
        out.append(Region(int(start), int(end), str(g.get("kind")), str(g["id"]),
                          KIND_LABELS.get(str(g.get("kind")), str(g.get("kind"))),
                          f"{g.get('kind')} ({g.get('severity')}, {g.get('status')}): "
                          f"{g.get('message', '')} — click for evidence", is_open))
    return out


def _markers(d: webdata.RunData) -> list[Marker]:
    out = []
    for r in d.recommendations:
        params = r.get("params") or {}
        args = ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
        extra = {"action": str(r.get("action")), "status": str(r.get("status"))}
        if r.get("issued_at_step") is not None:
            out.append(Marker(int(r["issued_at_step"]), "recommendation",
                              f"▲ {r.get('action')}",
                              f"recommended {r.get('action')}({args}) by {r.get('author')} "
                              f"[{r.get('status')}]: {r.get('reason', '')}", str(r["id"]), extra))
        if r.get("status") in ("applied", "rejected") and r.get("applied_step") is not None:
            lr = ""
            if r.get("lr_before") is not None:
                lr = f" lr {fmt_value(r.get('lr_before'))} → {fmt_value(r.get('lr_after'))}"
            kind = "applied" if r["status"] == "applied" else "rejected"
            out.append(Marker(int(r["applied_step"]), kind, f"✓ {r.get('action')}"
                              if kind == "applied" else f"✗ {r.get('action')}",
                              f"{r.get('action')} {r['status']} at step {r['applied_step']}{lr}",
                              str(r["id"]), extra))
    # a branch that resumes right after an applied revert is that revert, not a rollback
    reverts = {int(r["applied_step"]) + 1: r for r in d.recommendations
               if r.get("action") == "revert" and r.get("status") == "applied"
               and r.get("applied_step") is not None}
    for b in d.branches:
        if b.get("branch", 0) == 0 or b.get("start_step") is None:
            continue
        rev = reverts.get(int(b["start_step"]))
        what = "revert" if rev is not None else "rollback"
        why = f": {rev.get('reason')}" if rev is not None else ""
        out.append(Marker(int(b["start_step"]), "rollback", f"↺ {what} → branch {b['branch']}",
                          f"{what}: branch {b['branch']} resumed at step {b['start_step']} "
                          f"(from branch {b.get('parent_branch')}){why}", str(b["branch"]),
                          {"branch": str(b["branch"])}))
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
        title = (f"identified {kind}: steps {s0}–{s1}, lr {fmt_num(l0)} → {fmt_num(l1)}"
                 + (f" {fmt_value(params)}" if params else ""))
        out.append(Overlay(steps, values, kind, kind, title))
    return out


def _series(s: webdata.SeriesData, label: str, color: str, **kw: Any) -> Series:
    return Series(s.name, label, s.steps, s.values, color, **kw)


def _charts(d: webdata.RunData) -> str:
    regions, markers = _regions(d), _markers(d)
    panels: list[tuple[str, str, Chart, list[webdata.SeriesData]]] = []

    def chart(cid: str, y_label: str, **kw: Any) -> Chart:
        c = Chart(cid, d.x_domain, y_label=y_label, show_labels=not panels, **kw)
        c.regions, c.markers = regions, markers
        return c

    r = d.roles
    loss_names = [n for n in (r.train, r.val if r.val_mode == "min" else None) if n]
    if loss_names:
        c = chart("chart-loss", "loss")
        for i, n in enumerate(loss_names):
            c.series.append(_series(d.series[n], n, PALETTE[i]))
        for br, seg in d.abandoned:
            c.series.append(_series(seg, f"{seg.name} before rollback → branch {br}", "#9ca3af",
                                    css="series abandoned-series", dashed=True))
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
        out.append(f'<figure class="panel" id="{e(pid)}"><figcaption>{e(title)}</figcaption>'
                   f'<div class="chart-wrap">{c.render()}</div>{note}</figure>')
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


def _diagnoses(d: webdata.RunData) -> str:
    if not d.diagnoses:
        return ('<section id="diagnoses-section"><h2>Diagnoses</h2><p class="empty" '
                'id="no-diagnoses">No diagnosis: the rhythm looks fine so far.</p></section>')
    regions = {r.ref_id: r for r in _regions(d)}
    rows = []
    for g in d.diagnoses:
        closed = g.get("closed_at_step")
        region = regions.get(str(g["id"]))
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
            f'<td>{e(g.get("message"))}</td></tr>')
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
                f'<li>{e(r.get("action"))} {e(fmt_value(r.get("params") or {}))} — '
                f'{e(r.get("status"))}</li>' for r in recs) + "</ul>"
        parts.append(
            f'<div class="evidence" data-evidence-for="{e(g["id"])}" hidden>'
            f'<h3>{e(g["id"])}</h3><p class="message">{e(g.get("message"))}</p>'
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
            lr = f"{fmt_value(r.get('lr_before'))} → {fmt_value(r.get('lr_after'))}"
        rows.append(
            f'<tr class="rec-row" data-rec-id="{e(r["id"])}" data-action="{e(r.get("action"))}" '
            f'data-status="{e(r.get("status"))}"><td>{e(r.get("action"))}</td>'
            f'<td>{e(fmt_value(r.get("params") or {}))}</td>'
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
            f'<span class="tl-title">{e(it.get("title"))}</span>{det}</li>')
    return ('<section id="timeline-section"><h2>Timeline</h2><ol id="timeline">'
            + "".join(items) + "</ol></section>")


# compare --------------------------------------------------------------------------------------
@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    runs: Annotated[list[str], Query(max_length=2000)] = [],  # noqa: B006 (FastAPI query list)
    metric: Annotated[str | None, Query(max_length=256)] = None,
    max_points: Annotated[int, Query(ge=100, le=20_000)] = DEFAULT_MAX_POINTS,
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
        hidden = [i for i in ids if not _may_see(service, principal, i)]
        found, missing, charts, names = webdata.load_compare(
            service, [i for i in ids if i not in hidden], max_points, metric or None)
        missing += hidden  # another project's runs read as unknown
    except (InvalidInputError, NotFoundError) as exc:
        return page("Compare", "compare", f'<p class="error">{e(exc)}</p>', status_code=422)
    colors = {str(r["run_id"]): PALETTE[i % len(PALETTE)] for i, r in enumerate(found)}
    lines = []
    for r in found:
        rid = str(r["run_id"])
        name = str(r.get("name") or rid)
        lines.append(f'<li class="compare-run" data-run-id="{e(rid)}"><svg width="22" '
                     f'height="10" aria-hidden="true"><line x1="0" x2="22" y1="5" y2="5" '
                     f'stroke="{colors[rid]}" stroke-width="3"/></svg> '
                     f'<a href="{e(run_href(rid))}">{e(name)}</a> '
                     f'<span class="muted">{e(r.get("project") or "")}</span> '
                     f'{badge(webdata.run_state(r))}</li>')
    out = ['<h1>Compare runs</h1><ul id="compare-runs">', "".join(lines), "</ul>"]
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
    any_chart = False
    for key, per in charts.items():
        if not per:
            continue
        any_chart = True
        title, ylab, ratio = titles[key]
        c = Chart(f"compare-{key}", (x0, max(x1, x0 + 1)), y_label=ylab, log_ratio=ratio,
                  legend=False)
        for r in found:
            rid = str(r["run_id"])
            if rid in per:
                s = per[rid]
                c.series.append(Series(f"{rid}:{s.name}", f"{r.get('name') or rid} ({s.name})",
                                       s.steps, s.values, colors[rid]))
        out.append(f'<figure class="panel" id="compare-panel-{key}"><figcaption>{e(title)}'
                   f'</figcaption><div class="chart-wrap">{c.render()}</div></figure>')
    if not any_chart:
        out.append('<p class="empty">These runs have no metrics yet.</p>')
    out.append("</div>")
    live = any(r.get("status") == "running" for r in found)
    return page("Compare", "compare", "".join(out), live=live, refresh_ms=refresh)


def _may_see(service: Any, principal: Any, run_id: str) -> bool:
    if principal is None:
        return True
    try:
        return covers(principal, service.get_run(run_id).get("project"))
    except NotFoundError:
        return True  # reported as unknown by the loader
