"""A real daemon with authentication on, per backend, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import (
    Daemon,
    create_postgres_database,
    drop_postgres_database,
    require_postgres,
)

ADMIN = "admin-token-for-security-tests-0123"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Secured:
    """A daemon with ``RHYTHMD_AUTH=required`` and the bootstrap admin token ``ADMIN``."""

    daemon: Daemon
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.daemon.url

    def token(self, project: str, scope: str) -> str:
        r = self.http.post("/v1/tokens", json={"project": project, "scope": scope},
                           headers=bearer(ADMIN))
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def run(self, project: str | None, **extra: Any) -> str:
        body = {"name": f"run-{project}", "project": project, **extra}
        r = self.http.post("/v1/runs", json=body, headers=bearer(ADMIN))
        assert r.status_code in (200, 201), r.text
        return str(r.json()["run_id"])


def start_secured(database_url: str, log_path: Any, **env: str) -> Daemon:
    return Daemon(database_url, env={"RHYTHMD_AUTH": "required", "RHYTHMD_ADMIN_TOKEN": ADMIN,
                                     **env}, log_path=log_path).start()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for the module, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'rhythmd.db'}"
        return
    require_postgres()
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="module")
def secured(backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A real uvicorn with authentication on, for the whole module."""
    d = start_secured(backend_url, tmp_path_factory.mktemp("log") / "daemon.log")
    with httpx.Client(base_url=d.url, timeout=30) as http:
        yield Secured(d, http)
    d.stop()
