"""A header-read timeout for uvicorn's HTTP/1.1 protocols (slow clients, "slowloris").

uvicorn closes idle keep-alive connections (``--timeout-keep-alive``) but waits forever for a
request whose line or headers arrive partly and then stop. The daemon adds one rule to the
protocol classes of the process serving it (``uvicorn rhythmd.app:app`` or ``rhythmd
serve``, h11 and httptools alike): a connection that has started a request must complete its
request line and headers within ``RHYTHMD_HEADER_TIMEOUT`` seconds (10 by default), counted
from its first byte (or from the connection when nothing came yet), however slowly it drips
them in. Otherwise it gets ``408 Request Timeout`` and is closed. Bodies are not limited here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("rhythmd")
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                    b"content-length: 37\r\nconnection: close\r\n\r\n"
                    b"request headers not received in time\n")


def _protocol_classes() -> list[type]:
    classes: list[type] = []
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        classes.append(H11Protocol)
    except ImportError:  # pragma: no cover - h11 is a uvicorn dependency
        pass
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        classes.append(HttpToolsProtocol)
    except ImportError:  # httptools is optional
        pass
    return classes


def _waiting(proto: Any) -> bool:
    """Whether the connection is between requests (no request, or the last one answered)."""
    cycle = getattr(proto, "cycle", None)
    return cycle is None or bool(cycle.response_complete)


def _arm(proto: Any, timeout_s: float) -> None:
    if getattr(proto, "_rhythmd_header_timer", None) is not None:
        return
    armed_cycle = getattr(proto, "cycle", None)

    def expire() -> None:
        proto._rhythmd_header_timer = None
        transport = getattr(proto, "transport", None)
        if proto.cycle is armed_cycle and _waiting(proto) and transport is not None \
                and not transport.is_closing():
            log.info("closed a connection that sent no complete request headers in %.0f s",
                     timeout_s)
            transport.write(TIMEOUT_RESPONSE)
            transport.close()

    loop: asyncio.AbstractEventLoop = proto.loop
    proto._rhythmd_header_timer = loop.call_later(timeout_s, expire)


def _disarm(proto: Any) -> None:
    timer = getattr(proto, "_rhythmd_header_timer", None)
    if timer is not None:
        timer.cancel()
        proto._rhythmd_header_timer = None


def install_header_timeout(timeout_s: float) -> None:
    """Add the header-read timeout to uvicorn's protocol classes in this process (idempotent;
    a later call changes the timeout)."""
    for cls in _protocol_classes():
        already = "_rhythmd_header_timeout_s" in cls.__dict__
        cls._rhythmd_header_timeout_s = timeout_s  # type: ignore[attr-defined]
        if already:
            continue
        made, received, lost = cls.connection_made, cls.data_received, cls.connection_lost

        def connection_made(self: Any, transport: Any, _made: Any = made) -> None:
            _made(self, transport)
            _arm(self, self._rhythmd_header_timeout_s)

        def data_received(self: Any, data: bytes, _received: Any = received) -> None:
            before = self.cycle
            idle = _waiting(self)
            _received(self, data)
            if self.cycle is not before:
                _disarm(self)  # a request's headers are in
            elif idle:
                _arm(self, self._rhythmd_header_timeout_s)  # a new request has begun

        def connection_lost(self: Any, exc: Exception | None, _lost: Any = lost) -> None:
            _disarm(self)
            _lost(self, exc)

        cls.connection_made = connection_made  # type: ignore[method-assign]
        cls.data_received = data_received  # type: ignore[method-assign]
        cls.connection_lost = connection_lost  # type: ignore[method-assign]
