"""A tiny stdlib HTTP client for the CLI commands that talk to a daemon.

Stdlib only (``urllib``), so the query commands work on a bare ``pip install rhythmd``.
Responses are decoded with :func:`json.loads`; the daemon's ``"NaN"``/``"Infinity"`` strings
are turned back into floats by :func:`num`. A bearer token comes from ``--token`` or
``RHYTHMD_TOKEN`` and is sent as ``Authorization: Bearer …``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"

EXIT_CODES = """exit codes:
  0  success
  1  the command failed: daemon unreachable or refusing, run not found, unreadable file
  2  usage or configuration error: bad arguments, missing optional package"""
"""Epilog shared by every command's ``--help``."""

UNREACHABLE_HINT = "is the daemon running? start it with `rhythmd serve`"


class HTTPStatusError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, detail: str, method: str, url: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {detail}")
        self.status = status
        self.detail = detail


def add_daemon_args(p: argparse.ArgumentParser) -> None:
    """``--url``, ``--token`` and ``--timeout``, defaulting to their environment variables."""
    g = p.add_argument_group("daemon")
    g.add_argument("--url", default=os.environ.get("RHYTHMD_URL", DEFAULT_URL),
                   help=f"daemon base URL [RHYTHMD_URL, default {DEFAULT_URL}]")
    g.add_argument("--token", default=None,
                   help="API token sent as 'Authorization: Bearer TOKEN' [RHYTHMD_TOKEN]")
    g.add_argument("--timeout", type=float, default=30.0,
                   help="seconds per request (default 30)")


def client_from_args(args: argparse.Namespace) -> Client:
    token = args.token if args.token is not None else os.environ.get("RHYTHMD_TOKEN") or None
    return Client(args.url, token=token, timeout=args.timeout)


class Client:
    """JSON over HTTP to one daemon; errors become :class:`~rhythmd.cli.CommandError`
    (unreachable, refused token, 5xx) or :class:`HTTPStatusError` (4xx, for the caller)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0,
                 retries: int = 4) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.token = token
        self.timeout = timeout
        self.retries = retries

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        """Send one request (retrying 503 and dropped connections a few times) and return
        the decoded JSON body."""
        from rhythmd.cli import CommandError

        url = self.url + path
        if params:
            q = {k: v for k, v in params.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None
        headers = {"accept": "application/json", "user-agent": "rhythmd-cli"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                detail = _detail(exc)
                if exc.code == 503 and attempt <= self.retries:
                    time.sleep(_retry_after(exc.headers.get("retry-after"), attempt))
                    continue
                if exc.code in (401, 403):
                    raise CommandError(
                        f"the daemon at {self.url} refused the request ({exc.code}: {detail}); "
                        "pass a valid token with --token or RHYTHMD_TOKEN") from None
                if exc.code >= 500:
                    raise CommandError(f"the daemon at {self.url} failed on {method} {path} "
                                       f"({exc.code}: {detail}); see the daemon's log") from None
                raise HTTPStatusError(exc.code, detail, method, path) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                if attempt <= min(self.retries, 2) and _transient(reason):
                    time.sleep(0.2 * attempt)
                    continue
                raise CommandError(f"cannot reach the daemon at {self.url} ({reason}): "
                                   f"{UNREACHABLE_HINT}") from None
            except ValueError as exc:
                raise CommandError(f"the daemon at {self.url} sent a body that is not JSON on "
                                   f"{method} {path}: {exc}") from None


def _transient(reason: Any) -> bool:
    """A dropped or reset connection (worth one more try), not a refused one."""
    return isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        return min(max(float(value or ""), 0.1), 5.0)
    except ValueError:
        return min(0.5 * attempt, 5.0)


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return exc.reason or ""
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []))
                parts.append(f"{loc}: {d.get('msg', '')}" if loc else str(d.get("msg", d)))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    return str(detail if detail is not None else exc.reason)


def num(v: Any) -> float | None:
    """A float from the API: numbers, and the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(v)
    return None
