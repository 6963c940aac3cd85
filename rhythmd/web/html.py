"""HTML building blocks of the pages: escaping, the page frame, badges, small tables.

Every user string goes through :func:`e` (``html.escape`` with quotes).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from functools import lru_cache
from html import escape
from importlib import resources
from string import Template
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query
from fastapi.responses import HTMLResponse

from rhythmd import __version__
from rhythmd.web import fmt

DEFAULT_MAX_POINTS = 2000
REFRESH_MS = 5000
RefreshQuery = Annotated[int | None, Query(ge=500, le=3_600_000,
                                           description="Live refresh period (ms).")]
MaxPointsQuery = Annotated[int, Query(ge=100, le=20_000,
                                     description="Points per series drawn (min/max buckets).")]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
KIND_LABELS = {"divergence": "divergence", "stagnation": "stagnation",
               "oscillation": "oscillation", "slow_progress": "slow progress", "spike": "spike"}


def e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def token(value: object) -> str:
    """A safe CSS class fragment."""
    return re.sub(r"[^a-z0-9_-]", "", str(value).lower())[:32] or "unknown"


@lru_cache(maxsize=8)
def resource(name: str) -> str:
    return resources.files("rhythmd.web").joinpath(name).read_text(encoding="utf-8")


def page(title: str, name: str, content: str, *, live: bool = False,
         refresh_ms: int | None = None, status_code: int = 200) -> HTMLResponse:
    """A whole page; ``live`` pages refresh their live regions every ``refresh_ms``."""
    attrs = f' data-refresh="{int(refresh_ms or REFRESH_MS)}"' if live else ""
    html = Template(resource("templates/base.html")).substitute(
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


def kv_table(d: dict[str, Any], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(fmt.value(v))}</td></tr>" for k, v in d.items())
    return f'<table class="{cls}">{rows}</table>'


def badge(state: str, element_id: str = "") -> str:
    ident = f' id="{e(element_id)}"' if element_id else ""
    return (f'<span{ident} class="badge state-{token(state)}" data-state="{e(state)}">'
            f'{e(state)}</span>')


def run_href(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")

