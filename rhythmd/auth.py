"""Who may do what: bearer tokens with a project and a scope.

Scopes (each grants the listed verbs within its project; ``*`` tokens cover every project):

- ``ingest`` — what a training job needs: create runs, send metrics, read its pending
  recommendations and acknowledge them, finish its run.
- ``read`` — every query (runs, series, diagnoses, timeline, pages, /metrics with ``*``).
- ``steer`` — ``read`` plus issuing recommendations and stops by hand.
- ``admin`` — everything, including tokens.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import sys
import threading
import time
from dataclasses import dataclass

from rhythmd.errors import ConfigurationError

GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "steer": frozenset({"read", "steer"}),
    "admin": frozenset({"ingest", "read", "steer", "admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    project: str  # a project name, or "*"
    scope: str
    token_id: str

    def may(self, verb: str) -> bool:
        return verb in GRANTS.get(self.scope, frozenset())

    def covers(self, project: str | None) -> bool:
        return self.project == "*" or (project is not None and project == self.project)


class TokenCache:
    """Verified tokens for ``ttl_s`` seconds, so a request costs no database read."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[bool, Principal | None]:
        with self._lock:
            hit = self._items.get(token)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return False, None
        return True, hit[1]

    def put(self, token: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[token] = (time.monotonic(), principal)


def admin_principal(token: str, admin_token: str | None) -> Principal | None:
    """The bootstrap admin token from the environment (``RHYTHMD_ADMIN_TOKEN``)."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("*", "admin", "env")
    return None


def is_loopback(host: str | None) -> bool:
    if not host:
        return True  # unix socket
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_host_from_process() -> str | None:
    """The address this process was told to bind: ``rhythmd serve`` sets RHYTHMD_HOST; a plain
    ``uvicorn … --host H`` has it on its command line or in UVICORN_HOST."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return os.environ.get("UVICORN_HOST") or os.environ.get("RHYTHMD_BIND_HOST")


def check_exposure(auth_required: bool, insecure: bool, host: str | None) -> None:
    """Refuse to start on a non-loopback address without authentication."""
    if auth_required or insecure or is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve on {host} without authentication: anyone who can reach it could "
        "read and steer your runs. Set RHYTHMD_AUTH=required and create tokens with "
        "`rhythmd token create --project P --scope ingest` (or set RHYTHMD_ADMIN_TOKEN), or "
        "accept the risk explicitly with --insecure / RHYTHMD_INSECURE=1."
    )
