"""Who may do what: bearer tokens with a project and a scope.

Scopes (each grants the listed verbs within its project only; ``*`` tokens cover every
project). :func:`authorize` decides every request from these and nothing else:

- ``ingest`` — what a training job needs: create runs, send metrics, read its pending
  recommendations and acknowledge them, finish its run.
- ``read`` — every query (runs, series, diagnoses, timeline, pages, /metrics with ``*``).
- ``steer`` — ``read`` plus issuing recommendations and stops by hand.
- ``admin`` — everything, including tokens.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import os
import sys
from dataclasses import dataclass

from rhythmd.errors import ConfigurationError

ALL = "*"
"""The project of a token for every project, and the target of what spans every project (the
token list, ``/metrics``, a ``*`` token)."""

VERBS = ("watch", "read", "ingest", "steer", "admin")
"""``watch``: a run and its recommendations, as a training job reads them; ``read``: every
query and page; ``ingest``: create runs, send metrics, acknowledge, finish; ``steer``: issue
recommendations and stops; ``admin``: tokens."""

GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"watch", "ingest"}),
    "read": frozenset({"watch", "read"}),
    "steer": frozenset({"watch", "read", "steer"}),
    "admin": frozenset(VERBS),
}


class Decision(enum.Enum):
    """What a request gets: done, 403 (visible but not allowed) or 404 (not visible)."""

    ALLOW = "allow"
    FORBID = "forbid"
    HIDE = "hide"


def authorize(token_project: str, scope: str, target_project: str | None, verb: str
              ) -> Decision:
    """The one rule for every request.

    ``target_project`` is the project of what the request acts on: the run, the token, the
    project named in the body or query (``None`` for a run without project, ``*`` for what
    spans every project). Anything outside the token's project is hidden, whatever the scope,
    so a refusal never tells that it exists; inside it, the scope must grant the verb.
    """
    if token_project != ALL and target_project != token_project:
        return Decision.HIDE
    if verb not in GRANTS.get(scope, frozenset()):
        return Decision.FORBID
    return Decision.ALLOW


@dataclass(frozen=True, slots=True)
class Principal:
    project: str  # a project name, or "*"
    scope: str
    token_id: str

    def decide(self, target_project: str | None, verb: str) -> Decision:
        return authorize(self.project, self.scope, target_project, verb)

    def may(self, verb: str, target_project: str | None = None) -> bool:
        """Whether this principal may ``verb`` in ``target_project`` (default: its own)."""
        target = self.project if target_project is None else target_project
        return self.decide(target, verb) is Decision.ALLOW


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
