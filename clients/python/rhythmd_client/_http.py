"""The HTTP layer the sender talks through: a small interface and its stdlib default.

The sender only needs :class:`HTTPTransport`: one request in, one :class:`HTTPResponse` out,
``OSError`` (e.g. ``ConnectionError``, ``TimeoutError``) when no answer came. Tests and
embedders can pass their own object with these two methods (``Transport(http=...)``).
"""

from __future__ import annotations

import contextlib
import http.client
import urllib.parse
from typing import NamedTuple, Protocol


class HTTPResponse(NamedTuple):
    """What the daemon answered: status code, raw body, ``Retry-After`` in seconds."""

    status: int
    body: bytes
    retry_after_s: float | None = None


class HTTPTransport(Protocol):
    """Sends one request to the daemon; ``path`` starts with ``/v1/``, ``body`` is JSON."""

    def request(self, method: str, path: str, body: bytes | None) -> HTTPResponse:
        """Send and wait for the answer; raise ``OSError`` when none came."""
        ...

    def close(self) -> None:
        """Release connections; the transport may be used again afterwards."""
        ...


class StdlibHTTPTransport:
    """:class:`HTTPTransport` over ``http.client``: one keep-alive connection, reopened after
    an error or a ``Connection: close``; adds the bearer ``token`` when one is given.

    ``url`` is the daemon's base URL (``http://host:port[/prefix]``; the scheme defaults to
    http); ``timeout_s`` is the socket timeout per request, seconds.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, token: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self._auth = f"Bearer {token}" if token else None
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None) -> HTTPResponse:
        """One request on the kept connection; ``ConnectionError`` on a protocol error."""
        try:
            return self._request(method, path, body)
        except http.client.HTTPException as exc:
            self.close()
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except OSError:
            self.close()
            raise

    def _request(self, method: str, path: str, body: bytes | None) -> HTTPResponse:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        headers = {"Accept": "application/json"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        if body is not None:
            headers["Content-Type"] = "application/json"
        self._conn.request(method, self._prefix + path, body=body, headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        retry_after = None
        ra = resp.getheader("Retry-After")
        if ra:
            try:
                retry_after = float(ra)
            except ValueError:
                retry_after = None
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return HTTPResponse(resp.status, raw, retry_after)

    def close(self) -> None:
        """Close the kept connection (the next request opens a new one)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
