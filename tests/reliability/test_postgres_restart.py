"""PostgreSQL restarted under a running daemon: clean 503s with Retry-After while it is away
(never a 500, never a hang), and the daemon recovers by itself.

The outage is kept short (stop, ~3 s of probing, start) because other tests may share the
server. It needs ``pg_ctlcluster`` and a server on this machine; the cluster is
``RHYTHMD_TEST_PG_CLUSTER`` (default: the first version under /etc/postgresql, ``main``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import IN_CI, POSTGRES_ADMIN_URL, Daemon

pytestmark = pytest.mark.postgres

OUTAGE_S = 3.0
REQUEST_BOUND_S = 5.0  # "never a hang": each answer during the outage within this


def _cluster() -> list[str] | None:
    spec = os.environ.get("RHYTHMD_TEST_PG_CLUSTER")
    if spec:
        return spec.split()
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return [versions[-1], "main"] if versions else None


def _ctl(cluster: list[str], action: str) -> None:
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action]
    if action == "stop":
        cmd += ["--mode", "fast"]
    subprocess.run(cmd, check=action != "start", timeout=60, capture_output=True)


def _wait_ready(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"],
                            check=False, timeout=10).returncode == 0
        if ok:
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not come back")


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    host = make_url(POSTGRES_ADMIN_URL).host
    cl = _cluster()
    reason = None
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_isready") is None:
        reason = "pg_ctlcluster/pg_isready not installed"
    elif host not in ("127.0.0.1", "localhost", "::1") or cl is None:
        reason = f"PostgreSQL at {host} is not a local cluster this test may restart"
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    assert cl is not None
    yield cl
    _ctl(cl, "start")  # whatever happened, leave the server running
    _wait_ready()


def test_postgres_restart_gives_503_then_recovers(postgres_url: str, cluster: list[str],
                                                  tmp_path: Path) -> None:
    daemon = Daemon(postgres_url, log_path=tmp_path / "daemon.log").start()
    try:
        url = daemon.url
        http = httpx.Client(timeout=REQUEST_BOUND_S + 5)
        rid = http.post(f"{url}/v1/runs", json={"name": "pg-restart"}).json()["run_id"]
        first = {"batch_id": "b0", "series": [{"name": "loss", "steps": [0, 1],
                                               "values": [1.0, 0.9]}]}
        during = {"batch_id": "b1", "series": [{"name": "loss", "steps": [2, 3],
                                                "values": [0.8, 0.7]}]}
        assert http.post(f"{url}/v1/runs/{rid}/metrics", json=first).status_code == 200

        answers: list[tuple[str, int, float, str | None]] = []
        _ctl(cluster, "stop")
        try:
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_S:
                for method, path, body in (
                    ("POST", f"/v1/runs/{rid}/metrics", during),
                    ("GET", f"/v1/runs/{rid}", None),
                    ("GET", f"/v1/runs/{rid}/metrics/loss", None),
                    ("GET", "/healthz", None),
                    ("POST", "/v1/runs", {"name": "while-away"}),
                ):
                    t0 = time.monotonic()
                    r = http.request(method, f"{url}{path}", json=body)
                    answers.append((f"{method} {path}", r.status_code, time.monotonic() - t0,
                                    r.headers.get("retry-after")))
                time.sleep(0.2)
        finally:
            _ctl(cluster, "start")
        _wait_ready()

        assert answers
        for what, status, elapsed, retry_after in answers:
            assert status == 503, (what, status)
            assert retry_after is not None and int(retry_after) > 0, what
            assert elapsed < REQUEST_BOUND_S, (what, elapsed)
        slowest = max(a[2] for a in answers)
        print(f"\n{len(answers)} requests while PostgreSQL was down: all 503 + Retry-After, "
              f"slowest {slowest * 1000:.0f} ms")

        # Recovery without restarting the daemon: the retried batch goes in, exactly once.
        deadline = time.monotonic() + 30
        statuses = []
        while True:
            r = http.post(f"{url}/v1/runs/{rid}/metrics", json=during)
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503, (r.status_code, r.text)
            assert time.monotonic() < deadline, "the daemon did not recover"
            time.sleep(0.2)
        recovered_after = time.monotonic() - started
        assert http.get(f"{url}/healthz").status_code == 200
        again = http.post(f"{url}/v1/runs/{rid}/metrics", json=during).json()
        assert again["duplicate"] is True
        run = http.get(f"{url}/v1/runs/{rid}").json()
        assert run["n_points"] == 4 and run["n_batches"] == 2
        loss = http.get(f"{url}/v1/runs/{rid}/metrics/loss", params={"branch": "all"}).json()
        assert loss["steps"] == [0, 1, 2, 3]
        print(f"recovered {recovered_after:.1f} s after the stop ({len(statuses)} tries)")
        log = (tmp_path / "daemon.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]
        http.close()
    finally:
        daemon.stop()
