"""Start-up that rides out a database that is not there yet.

The daemon tries the database once while uvicorn starts. If it is unreachable, uvicorn starts
serving anyway and the store is opened in the background, retried with exponential backoff
(0.1 s doubling to 2 s) and one log line per try; meanwhile ``/healthz`` answers 503 with
``"status": "starting"`` and every other request 503 with ``Retry-After``. A configuration
error (a database written by a newer rhythmd, a second process on a SQLite file) still stops
the daemon, at once or when the database appears.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from rhythmd.errors import ConfigurationError, StoreUnavailableError

log = logging.getLogger("rhythmd")
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0
OPEN_WITHOUT_DB = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


class StartupState:
    """Whether the daemon is ready, and why not yet."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"


async def open_with_retry(state: StartupState, open_once: Callable[[], Any],
                          on_ready: Callable[[Any], None], describe: str) -> None:
    """Call ``open_once`` (in a thread) until the database answers, then ``on_ready``."""
    delay = FIRST_DELAY_S
    attempt = 1
    while True:
        attempt += 1
        await asyncio.sleep(delay)
        try:
            opened = await asyncio.to_thread(open_once)
        except StoreUnavailableError as exc:
            delay = min(delay * 2, MAX_DELAY_S)
            state.reason = f"starting: {exc}"
            log.warning("database %s unreachable (try %d: %s); retrying in %.1f s",
                        describe, attempt, exc, delay)
            continue
        except ConfigurationError as exc:
            log.error("rhythmd cannot start: %s", exc)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down as on Ctrl-C
            return
        on_ready(opened)
        state.ready = True
        log.info("database %s reachable after %d tries", describe, attempt)
        return


class StartingGate:
    """Answer 503 until the store is open; ``/healthz`` says ``starting``."""

    def __init__(self, app: ASGIApp, state: StartupState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.state.ready or scope["type"] != "http"
                or scope["path"] in OPEN_WITHOUT_DB):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/healthz":
            body: dict[str, Any] = {"status": "starting", "database": self.state.reason,
                                    "schema_version": None, "version": _version()}
        else:
            body = {"detail": f"rhythmd is {self.state.reason}; retry later"}
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(raw)).encode()),
                                (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": raw})


def _version() -> str:
    from rhythmd import __version__

    return __version__
