"""Authentication and authorisation of requests (see ``rhythmd.auth`` for the scopes).

With ``RHYTHMD_AUTH=required`` every ``/v1`` route needs ``Authorization: Bearer <token>``
(or the ``rhythmd_token`` cookie, for the pages): a missing or unknown token is 401; a token
of the right project without the verb is 403; a run (or token) of another project is 404,
so its existence does not leak. Every decision is :func:`rhythmd.auth.authorize`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from rhythmd.auth import ALL, Decision, Principal, admin_principal, is_loopback
from rhythmd.errors import NotFoundError

COOKIE = "rhythmd_token"


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


def principal_of(request: Request) -> Principal | None:
    """The caller, or None when authentication is off. Raises 401 for a bad token."""
    settings = request.app.state.settings
    if settings.auth != "required":
        return None
    token = _token(request)
    if token is None:
        raise HTTPException(401, "missing token: send `Authorization: Bearer <token>` (create "
                                 "one with `rhythmd token create`)",
                            headers={"WWW-Authenticate": "Bearer"})
    principal = admin_principal(token, settings.admin_token)
    if principal is None:
        principal = request.app.state.service.verify_token(token)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return principal


def enforce(principal: Principal | None, target_project: str | None, verb: str, *,
            what: str) -> None:
    """Apply :func:`rhythmd.auth.authorize`: 404 ("``what`` not found") when the target is
    outside the token's project, 403 when the scope lacks the verb."""
    if principal is None:
        return
    decision = principal.decide(target_project, verb)
    if decision is Decision.HIDE:
        raise NotFoundError(f"{what} not found")
    if decision is Decision.FORBID:
        raise HTTPException(403, f"this token ({principal.scope} on {principal.project}) may "
                                 f"not {verb} here")


def enforce_named(principal: Principal | None, project: str | None, verb: str) -> None:
    """Like :func:`enforce` for a project the caller names itself (a body or query field):
    refused with 403, as that says nothing the caller did not already know."""
    if principal is None:
        return
    if principal.decide(project, verb) is not Decision.ALLOW:
        raise HTTPException(403, f"this token ({principal.scope} on {principal.project}) may "
                                 f"not {verb} in project {project!r}")


async def authorize(request: Request, verb: str) -> Principal | None:
    """Decide the request by :func:`rhythmd.auth.authorize`: on a route with a ``run_id`` the
    target is that run's project (a run outside the token's project is 404), elsewhere the
    token's own project (the route then checks what it names). Returns the caller (None with
    authentication off), also kept for :func:`principal_in`."""
    # On the event loop (no thread hop); run projects are cached (they never change), and a
    # project not cached yet is read in a worker thread.
    principal = principal_of(request)
    if principal is None:
        return None
    run_id = request.path_params.get("run_id")
    target: str | None = principal.project
    if run_id is not None and principal.project != ALL:
        access = request.app.state.service.access
        cached, target = access.cached_project(run_id)
        if not cached:
            try:
                target = await run_in_threadpool(access.run_project, run_id)
            except NotFoundError:
                raise NotFoundError(f"run {run_id!r} not found") from None
    enforce(principal, target, verb, what=f"run {run_id!r}")
    request.state.principal = principal
    return principal


def requires(verb: str) -> Any:
    """:func:`authorize` as a route dependency."""

    async def check(request: Request) -> Principal | None:
        return await authorize(request, verb)

    return Depends(check)


def principal_in(request: Request) -> Principal | None:
    """The principal :func:`requires` verified for this request (None with auth off)."""
    return getattr(request.state, "principal", None)


@functools.lru_cache(maxsize=64)
def _non_loopback_ip(host: str) -> bool:
    """Whether ``host`` is a real IP address that is not a loopback one (a daemon listens on
    a few addresses: cached, not parsed on every request)."""
    return _is_ip(host) and not is_loopback(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class LoopbackOnlyMiddleware:
    """Without authentication (and without --insecure), serve loopback clients only: a request
    that reached a non-loopback address is refused even if the start-up check was bypassed,
    and so is a browser's request (one with ``Origin`` or ``Sec-Fetch-Site``) whose ``Host`` is
    not a loopback name: a page of another site whose name was re-bound to 127.0.0.1 (DNS
    rebinding) cannot read or write through the visitor's browser."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            server = scope.get("server")
            # scope["server"] is the local socket address: refuse when it is a real,
            # non-loopback IP (in-process test clients report a host name instead).
            if server and _non_loopback_ip(server[0]):
                await _refuse(send, "this rhythmd has no authentication and serves loopback "
                                    "clients only: set RHYTHMD_AUTH=required (or "
                                    "RHYTHMD_INSECURE=1)")
                return
            headers = dict(scope.get("headers", ()))
            host = _host_name(headers.get(b"host", b"").decode("latin-1").lower())
            if (b"origin" in headers or b"sec-fetch-site" in headers) and not is_loopback(host):
                await _refuse(send, "this rhythmd has no authentication: browsers may reach it "
                                    "as localhost or a loopback address only")
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """The name in a Host header (``[::1]:8000`` -> ``::1``, ``localhost:80`` -> ``localhost``)."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
