"""The deployment files and the two README commands stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]


def test_compose_points_the_daemon_at_the_database_service():
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert "healthcheck" in db and "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in spec["volumes"]  # a named volume, not a bind mount
    daemon = services["rhythmd"]
    url = daemon["environment"]["RHYTHMD_DATABASE_URL"].replace(
        "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "secret")
    parsed = make_url(url)
    assert parsed.get_backend_name() == "postgresql" and parsed.host == "db"
    assert parsed.database == db["environment"]["POSTGRES_DB"]
    assert parsed.username == db["environment"]["POSTGRES_USER"]
    assert daemon["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthz" in " ".join(daemon["healthcheck"]["test"])
    assert int(daemon["environment"]["RHYTHMD_WORKERS"]) > 1  # PostgreSQL mode
    # Bound to 0.0.0.0 in its container: authentication on, a token from an env file,
    # rather than the insecure switch.
    assert daemon["environment"]["RHYTHMD_AUTH"] == "required"
    assert "RHYTHMD_INSECURE" not in daemon["environment"]
    assert daemon["env_file"] == ["rhythmd.env"]


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {title} -->\s*```(?:sh|bash)\n(.*?)```", text, re.S)
    assert m, f"README.md has no {title} block"
    return m.group(1).strip()


def test_ci_runs_exactly_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    for title in ("serve-command", "test-command"):
        assert _readme_block(title) in ci, title


def test_serve_refuses_workers_on_sqlite(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "rhythmd.cli", "serve", "--workers", "2",
         "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "needs PostgreSQL" in r.stderr


def test_serve_help_documents_each_setting():
    r = subprocess.run([sys.executable, "-m", "rhythmd.cli", "serve", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for env in ("RHYTHMD_HOST", "RHYTHMD_PORT", "RHYTHMD_DATABASE_URL", "RHYTHMD_WORKERS"):
        assert env in r.stdout


def _serve_and_get_healthz(tmp_path: Path, *flags: str) -> str:
    """Run ``rhythmd serve`` with ``flags``, GET /healthz once, stop it; its log."""
    import time
    import urllib.request

    from tests.conftest import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rhythmd.cli", "serve", "--port", str(port),
             "--database-url", f"sqlite:///{tmp_path / 'r.db'}", *flags],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                        break
                except OSError:
                    assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                    time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return log.read_text()


def test_serve_logs_each_request_only_with_access_log(tmp_path):
    assert "GET /healthz" not in _serve_and_get_healthz(tmp_path)
    assert "GET /healthz" in _serve_and_get_healthz(tmp_path, "--access-log")
