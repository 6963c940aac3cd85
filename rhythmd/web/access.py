"""Who may see the pages: the same tokens and rules as ``/v1``, a sign-in form and a cookie."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rhythmd.api.security import COOKIE, principal_of
from rhythmd.auth import Decision
from rhythmd.errors import NotFoundError
from rhythmd.web.html import e, page

router = APIRouter(include_in_schema=False)


# authentication -------------------------------------------------------------------------------
class Denied(Exception):
    """Raised with the page to answer instead (sign in, or not allowed)."""

    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


def viewer(request: Request) -> Any:
    """The caller's principal (None when authentication is off); raises :class:`Denied` with a
    page that says how to sign in when the token is missing or may not read."""
    if request.app.state.settings.auth != "required":
        return None
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


def may_see(service: Any, principal: Any, run_id: str) -> bool:
    """Whether the viewer may read a run; an unknown run is left to the caller to report."""
    if principal is None:
        return True
    try:
        return covers(principal, service.get_run(run_id).get("project"))
    except NotFoundError:
        return True


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

