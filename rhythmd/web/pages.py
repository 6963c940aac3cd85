"""The daemon's web pages: runs list (``/``), one run (``/runs/{run_id}``), compare
(``/compare?runs=a,b``), sign-in, and the pages' own static files.

Pages are rendered on the server: HTML with every user string escaped and SVG charts drawn
by :mod:`rhythmd.web.svg` from downsampled series. The pages' scripts (``static/``) sort
tables, show a diagnosis' evidence on click, refresh live pages and make the charts
interactive. Nothing is loaded from outside the daemon; the Content-Security-Policy forbids
it, and inline scripts too.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rhythmd.web import access, compare_page, run_page, runs_page
from rhythmd.web.html import resource

router = APIRouter(include_in_schema=False)
for _part in (access.router, runs_page.router, run_page.router, compare_page.router):
    router.include_router(_part)

STATIC_TYPES = {"rhythmd.css": "text/css; charset=utf-8",
                "rhythmd.js": "text/javascript; charset=utf-8",
                "rhythmd-charts.js": "text/javascript; charset=utf-8",
                "uPlot.iife.min.js": "text/javascript; charset=utf-8",
                "uPlot.min.css": "text/css; charset=utf-8",
                "uPlot.LICENSE": "text/plain; charset=utf-8"}
"""The files served from ``static/``: the pages' own, and uPlot (MIT, vendored with its
license; the version is in docs/pages.md)."""


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The pages' own CSS and scripts (a fixed list: nothing else is served from disk)."""
    media = STATIC_TYPES.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(resource(f"static/{name}"), media_type=media,
                    headers={"Cache-Control": "public, max-age=300",
                             "X-Content-Type-Options": "nosniff"})
