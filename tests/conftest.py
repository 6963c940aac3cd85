"""Shared fixtures: database backends (SQLite file, real PostgreSQL) and a real uvicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "RHYTHMD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _postgres_unavailable() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any driver or connection error means "not here"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def require_postgres() -> None:
    reason = _postgres_unavailable()
    if reason is None:
        return
    message = (f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({reason}). Start it or set "
               "RHYTHMD_TEST_POSTGRES_URL to a server where the user may CREATE DATABASE.")
    if IN_CI:
        pytest.fail(message + " In CI (CI=true) every backend must be tested.")
    pytest.skip(message)


def create_postgres_database() -> str:
    """Create a fresh database and return its URL (dropped by ``drop_postgres_database``)."""
    name = f"rhythmd_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database on the real PostgreSQL server, fresh for this test session."""
    require_postgres()
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rhythmd.db'}"
    return request.getfixturevalue("postgres_url")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """A real ``uvicorn`` process serving rhythmd on a real socket."""

    def __init__(self, database_url: str, *, workers: int = 1, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.extra_env = env or {}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Daemon:
        env = {**os.environ, "RHYTHMD_DATABASE_URL": self.database_url, **self.extra_env}
        cmd = [sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("daemon did not become healthy in time")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(database_url: str, tmp_path: Path) -> Iterator[Daemon]:
    """A real uvicorn daemon on each backend."""
    d = Daemon(database_url, log_path=tmp_path / "daemon.log").start()
    yield d
    d.stop()


@pytest.fixture
def client(database_url: str) -> Iterator[object]:
    """An in-process client (FastAPI TestClient) on each backend."""
    from fastapi.testclient import TestClient

    from rhythmd.app import create_app
    from rhythmd.config import Settings

    app = create_app(Settings(database_url=database_url, max_body_bytes=2 * 2**20,
                              max_points_per_batch=50_000, max_series_per_batch=50))
    with TestClient(app) as c:
        yield c
