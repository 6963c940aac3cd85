"""A daemon rides out a database that appears 3 s after it starts (finding 6)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    ROOT,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    require_postgres,
)


class LateProxy:
    """A TCP forwarder to PostgreSQL that starts listening only when told to."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
def late_database() -> Iterator[tuple[str, LateProxy]]:
    """(URL through a proxy that is not listening yet, the proxy)."""
    require_postgres()
    real = create_postgres_database()
    parsed = make_url(real)
    proxy = LateProxy(free_port(), (parsed.host or "127.0.0.1", parsed.port or 5432))
    url = parsed.set(port=proxy.port).render_as_string(hide_password=False)
    yield url, proxy
    proxy.close()
    drop_postgres_database(real)


def test_daemon_rides_out_a_database_3s_late(late_database: tuple[str, LateProxy],
                                             tmp_path: Path) -> None:
    url, proxy = late_database
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host", "127.0.0.1",
             "--port", str(port)], cwd=ROOT, stdout=log, stderr=log,
            env={**os.environ, "RHYTHMD_DATABASE_URL": url})
    try:
        deadline = time.monotonic() + 60  # imports take a while on a loaded machine
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        started = time.monotonic()
        while time.monotonic() - started < 3.0:  # the database appears 3 s later
            assert health.status_code == 503 and health.json()["status"] == "starting"
            assert health.headers["retry-after"]
            write = httpx.post(f"{base}/v1/runs", json={"name": "early"}, timeout=2)
            assert write.status_code == 503 and "starting" in write.json()["detail"]
            time.sleep(0.2)
            health = httpx.get(f"{base}/healthz", timeout=2)
            assert proc.poll() is None, log_path.read_text()
        proxy.open()
        opened = time.monotonic()
        while httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() - opened < 5.0, log_path.read_text()
            time.sleep(0.1)
        run = httpx.post(f"{base}/v1/runs", json={"name": "late"}, timeout=10)
        assert run.status_code == 201
        body = {"series": [{"name": "loss", "steps": [1, 2], "values": [1.0, 0.5]}]}
        r = httpx.post(f"{base}/v1/runs/{run.json()['run_id']}/metrics", json=body, timeout=10)
        assert r.status_code == 200 and r.json()["accepted"] == 2
        text = log_path.read_text()
        assert "unreachable" in text and "retrying" in text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
