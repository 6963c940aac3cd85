"""Tokens, scopes and projects; the refusal to serve a public address without auth."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from rhythmd.app import create_app
from rhythmd.auth import check_exposure
from rhythmd.config import Settings
from rhythmd.errors import ConfigurationError
from tests.conftest import ROOT, Daemon

ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture
def secured(database_url):
    app = create_app(Settings(database_url=database_url, auth="required", admin_token=ADMIN))
    with TestClient(app) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(c, project: str, scope: str) -> str:
    r = c.post("/v1/tokens", json={"project": project, "scope": scope}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_scopes_and_projects(secured):
    c = secured
    ingest = make_token(c, "vision", "ingest")
    read = make_token(c, "vision", "read")
    steer = make_token(c, "vision", "steer")
    other = make_token(c, "nlp", "read")

    assert c.get("/v1/runs").status_code == 401
    assert c.get("/v1/runs", headers=bearer("nope")).status_code == 401
    assert c.get("/healthz").status_code == 200  # liveness stays open

    run = c.post("/v1/runs", json={"name": "r"}, headers=bearer(ingest))
    assert run.status_code == 201 and run.json()["project"] == "vision"
    rid = run.json()["run_id"]
    assert c.post("/v1/runs", json={"name": "r", "project": "nlp"},
                  headers=bearer(ingest)).status_code == 403
    body = {"series": [{"name": "train_loss", "steps": [1], "values": [1.0]}]}
    assert c.post(f"/v1/runs/{rid}/metrics", json=body, headers=bearer(ingest)).status_code == 200
    assert c.post(f"/v1/runs/{rid}/metrics", json=body, headers=bearer(read)).status_code == 403

    assert c.get(f"/v1/runs/{rid}/metrics/train_loss", headers=bearer(read)).status_code == 200
    assert c.get(f"/v1/runs/{rid}/timeline", headers=bearer(ingest)).status_code == 403
    # Another project's token cannot tell the run exists.
    assert c.get(f"/v1/runs/{rid}", headers=bearer(other)).status_code == 404
    assert c.get(f"/v1/runs/{rid}/metrics/train_loss", headers=bearer(other)).status_code == 404
    assert c.get("/v1/runs", headers=bearer(other)).json()["total"] == 0
    assert c.get("/v1/runs", params={"project": "vision"},
                 headers=bearer(other)).status_code == 403

    stop = {"action": "stop", "reason": "enough"}
    assert c.post(f"/v1/runs/{rid}/recommendations", json=stop,
                  headers=bearer(read)).status_code == 403
    rec = c.post(f"/v1/runs/{rid}/recommendations", json=stop, headers=bearer(steer))
    assert rec.status_code == 201
    # The training job (ingest) sees it and acknowledges it.
    pending = c.get(f"/v1/runs/{rid}/recommendations", headers=bearer(ingest)).json()
    assert [r["id"] for r in pending["recommendations"]] == [rec.json()["id"]]
    assert c.post(f"/v1/runs/{rid}/recommendations/{rec.json()['id']}/ack",
                  json={"status": "applied", "step": 2}, headers=bearer(ingest)).status_code == 200

    assert c.get("/v1/tokens", headers=bearer(steer)).status_code == 403
    assert c.get("/metrics", headers=bearer(read)).status_code == 403
    assert c.get("/metrics", headers=bearer(ADMIN)).status_code == 200

    token_id = next(t for t in c.get("/v1/tokens", headers=bearer(ADMIN)).json()["tokens"]
                if t["scope"] == "read" and t["project"] == "nlp")["token_id"]
    assert c.delete(f"/v1/tokens/{token_id}", headers=bearer(ADMIN)).status_code == 204
    assert c.get("/v1/runs", headers=bearer(other)).status_code == 401
    # The pages' cookie works like the header.
    c.cookies.set("rhythmd_token", read)
    assert c.get(f"/v1/runs/{rid}/summary").status_code == 200


def test_tokens_are_stored_hashed(database_url):
    from sqlalchemy import create_engine, text

    app = create_app(Settings(database_url=database_url, auth="required", admin_token=ADMIN))
    with TestClient(app) as c:
        token = make_token(c, "p", "read")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT token_hash FROM tokens"))]
    engine.dispose()
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_refuses_public_address_without_auth():
    with pytest.raises(ConfigurationError, match="RHYTHMD_AUTH=required"):
        check_exposure(False, False, "0.0.0.0")
    check_exposure(False, False, "127.0.0.1")
    check_exposure(False, False, "::1")
    check_exposure(True, False, "0.0.0.0")
    check_exposure(False, True, "0.0.0.0")


def test_plain_uvicorn_on_all_addresses_refuses_to_start(tmp_path):
    """The check runs at application start, so a plain uvicorn command hits it too."""
    r = subprocess.run(
        [sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "RHYTHMD_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
             "HOME": str(tmp_path)})
    assert r.returncode != 0
    assert "refusing to serve on 0.0.0.0 without authentication" in r.stderr


def test_token_cli_and_daemon(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    out = subprocess.run([sys.executable, "-m", "rhythmd.cli", "token", "--database-url", url,
                          "create", "--project", "demo", "--scope", "ingest"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.splitlines()[0].strip()
    d = Daemon(url, env={"RHYTHMD_AUTH": "required"}).start()
    try:
        import httpx

        assert httpx.post(f"{d.url}/v1/runs", json={"name": "x"}).status_code == 401
        r = httpx.post(f"{d.url}/v1/runs", json={"name": "x"}, headers=bearer(token))
        assert r.status_code == 201 and r.json()["project"] == "demo"
    finally:
        d.stop()
    listed = subprocess.run([sys.executable, "-m", "rhythmd.cli", "token", "--database-url", url,
                             "list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "ingest" in listed.stdout and token not in listed.stdout
