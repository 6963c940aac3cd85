"""Connections that never finish their request headers are closed (finding 7)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Daemon

N = 300


@pytest.fixture(params=["httptools", "h11"])
def quick_daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(f"sqlite:///{tmp_path / 'd.db'}", log_path=tmp_path / "d.log",
               env={"RHYTHMD_HEADER_TIMEOUT": "1.5", "UVICORN_HTTP": request.param})
    yield d.start()
    d.stop()


def _closed(sock: socket.socket, wait_s: float) -> bytes | None:
    """What the server sent before closing, or None while it is still open."""
    sock.settimeout(wait_s)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return got


def test_partial_requests_are_closed(quick_daemon: Daemon) -> None:
    partials = [b"GET /healthz HT", b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Le", b"G"]
    socks = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", quick_daemon.port))
        s.sendall(partials[i % len(partials)])
        socks.append(s)
    silent = socket.create_connection(("127.0.0.1", quick_daemon.port))  # sends nothing
    drip = socket.create_connection(("127.0.0.1", quick_daemon.port))
    start = time.monotonic()
    for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ":  # a byte every 50 ms, never done
        drip.sendall(bytes([ch]))
        if time.monotonic() - start > 1.0:
            break
        time.sleep(0.05)
    # the daemon keeps serving meanwhile
    assert httpx.get(f"{quick_daemon.url}/healthz", timeout=5).status_code == 200
    time.sleep(max(0.0, 2.5 - (time.monotonic() - start)))
    for s in [*socks, silent, drip]:
        got = _closed(s, 3.0)
        assert got is not None, "connection still open"
        assert got == b"" or got.startswith(b"HTTP/1.1 408")
        s.close()
    assert httpx.get(f"{quick_daemon.url}/healthz", timeout=5).status_code == 200


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and a Content-Length body)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_keep_alive_then_a_partial_request_is_closed(quick_daemon: Daemon) -> None:
    s = socket.create_connection(("127.0.0.1", quick_daemon.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _response(s).startswith(b"HTTP/1.1 200")
    time.sleep(2.0)  # an idle keep-alive connection is uvicorn's (5 s), not cut by this timeout
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _response(s).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    got = _closed(s, 4.0)
    assert got is not None and got.startswith(b"HTTP/1.1 408")
    s.close()


def test_a_slow_but_complete_request_is_served(quick_daemon: Daemon) -> None:
    s = socket.create_connection(("127.0.0.1", quick_daemon.port))
    for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
        s.sendall(part)
        time.sleep(0.3)
    assert _response(s).startswith(b"HTTP/1.1 200")
    s.close()
