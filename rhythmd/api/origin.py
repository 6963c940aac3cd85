"""No ambient authority for writes: JSON bodies only, and no cross-origin writes.

A browser sends the ``rhythmd_token`` cookie with any request to the daemon's host, including
a form or a ``fetch`` that another site (or another port of the same host, which counts as the
same site for ``SameSite=Strict``) makes it send. Such requests cannot carry
``Content-Type: application/json`` without a CORS preflight, which the daemon never grants, and
browsers mark them with ``Origin`` and ``Sec-Fetch-Site``. So every write to ``/v1`` (and the
pages' login and logout forms):

- with a body, must be ``Content-Type: application/json`` or declare no type at all (415
  otherwise; a browser sends an undeclared body only with ``Origin``, see below);
- is refused (403) when ``Sec-Fetch-Site`` or ``Origin`` says it comes from another origin;
- authenticated by the cookie alone (no ``Authorization`` header), must prove it is
  same-origin with one of those two headers.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from rhythmd.api.security import COOKIE

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_PATHS = frozenset({"/login", "/logout"})


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class WriteGuardMiddleware:
    """Refuse writes that a browser could be made to send from another origin."""

    def __init__(self, app: ASGIApp, public_url: str | None = None) -> None:
        self.app = app
        self.public_origin = _origin_of(public_url) if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES:
            path: str = scope["path"]
            api = path == "/v1" or path.startswith("/v1/")
            if api or path in FORM_PATHS:
                refusal = self._refusal(scope, api)
                if refusal is not None:
                    status, loc, message = refusal
                    await _reject(send, status, loc, message)
                    return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, api: bool) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if api:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media and media != "application/json":
                return 415, "content-type", ("/v1 accepts only application/json bodies "
                                             f"(got {media or 'none'!r})")
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, "sec-fetch-site", f"cross-origin write refused (Sec-Fetch-Site: {site})"
        origin = headers.get("origin")
        if origin is not None and not self._same_origin(origin, scope, headers):
            return 403, "origin", f"cross-origin write refused (Origin: {origin[:200]})"
        by_cookie = ("authorization" not in headers
                     and f"{COOKIE}=" in headers.get("cookie", ""))
        if api and by_cookie and site is None and origin is None:
            return 403, "origin", ("a write authenticated by the page cookie needs a same-origin "
                                   "Origin or Sec-Fetch-Site header; API clients send "
                                   "Authorization: Bearer <token>")
        return None

    def _same_origin(self, origin: str, scope: Scope, headers: dict[str, str]) -> bool:
        origin = origin.strip().lower()
        host = headers.get("host")
        own = {f"{scope.get('scheme', 'http')}://{host}".lower()} if host else set()
        if self.public_origin:
            own.add(self.public_origin)
        return origin in own


async def _reject(send: Send, status: int, loc: str, message: str) -> None:
    body = json.dumps({"detail": [{"type": "request_refused", "loc": ["header", loc],
                                   "msg": message}]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
