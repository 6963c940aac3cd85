"""A revoked token stops working on every daemon process within a second (finding 3)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, create_postgres_database, drop_postgres_database, require_postgres
from tests.security.conftest import ADMIN, bearer, start_secured


def _batch(step: int) -> dict:
    return {"series": [{"name": "loss", "steps": [step], "values": [1.0]}]}


def _seconds_until_refused(url: str, token: str, run_id: str, limit_s: float = 15.0) -> float:
    """Time until both a read and a write with ``token`` are refused (401)."""
    start = time.monotonic()
    step = 1000
    while time.monotonic() - start < limit_s:
        step += 1
        read = httpx.get(f"{url}/v1/runs/{run_id}", headers=bearer(token))
        write = httpx.post(f"{url}/v1/runs/{run_id}/metrics", json=_batch(step),
                           headers=bearer(token))
        if read.status_code == 401 and write.status_code == 401:
            return time.monotonic() - start
        assert {read.status_code, write.status_code} <= {200, 401}
    return float("inf")


@pytest.fixture
def pg_url() -> object:
    require_postgres()
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


def test_revocation_holds_on_another_daemon_within_a_second(pg_url: str, tmp_path: Path) -> None:
    one = start_secured(pg_url, tmp_path / "one.log")
    two = start_secured(pg_url, tmp_path / "two.log")
    try:
        for attempt in range(3):  # three tokens, each used on both daemons before revocation
            made = httpx.post(f"{one.url}/v1/tokens", json={"project": "p", "scope": "admin"},
                              headers=bearer(ADMIN)).json()
            token = made["token"]
            run = httpx.post(f"{two.url}/v1/runs", json={"name": f"r{attempt}"},
                             headers=bearer(token))
            assert run.status_code == 201, run.text
            rid = run.json()["run_id"]
            for step in range(5):  # the daemons now know the token
                for d in (one, two):
                    assert httpx.post(f"{d.url}/v1/runs/{rid}/metrics", json=_batch(step),
                                      headers=bearer(token)).status_code == 200
            assert httpx.delete(f"{one.url}/v1/tokens/{made['token_id']}",
                                headers=bearer(ADMIN)).status_code == 204
            assert _seconds_until_refused(one.url, token, rid) < 0.2
            assert _seconds_until_refused(two.url, token, rid) < 1.0
    finally:
        one.stop()
        two.stop()


def test_cli_revocation_holds_on_a_running_daemon(backend_url_fn: str, tmp_path: Path) -> None:
    """``rhythmd token revoke`` writes the database directly; the daemon sees it at once."""
    d = start_secured(backend_url_fn, tmp_path / "d.log")
    try:
        made = httpx.post(f"{d.url}/v1/tokens", json={"project": "p", "scope": "ingest"},
                          headers=bearer(ADMIN)).json()
        rid = httpx.post(f"{d.url}/v1/runs", json={"name": "r"},
                         headers=bearer(made["token"])).json()["run_id"]
        out = subprocess.run([sys.executable, "-m", "rhythmd.cli", "token", "--database-url",
                              backend_url_fn, "revoke", made["token_id"]],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _seconds_until_refused(d.url, made["token"], rid) < 1.0
    finally:
        d.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url_fn(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rhythmd.db'}"
        return
    require_postgres()
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)
