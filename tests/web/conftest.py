"""Fixtures of the page tests: an in-process app, a real daemon and a headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, Daemon

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """Debian's chromium (``apt-get install chromium``), or RHYTHMD_TEST_CHROMIUM."""
    env = os.environ.get("RHYTHMD_TEST_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for p in CHROMIUM_CANDIDATES:
        if Path(p).exists():
            return p
    return shutil.which("chromium")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " In CI (CI=true) the browser tests must run.")
    pytest.skip(message + " Skipping the browser tests.")


@pytest.fixture
def web_client(tmp_path: Path) -> Iterator[object]:
    """An in-process app on a fresh SQLite file (the pages do not depend on the backend)."""
    from fastapi.testclient import TestClient

    from rhythmd.app import create_app
    from rhythmd.config import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'web.db'}"))
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a loopback client
        yield c


@pytest.fixture(scope="module")
def web_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A real uvicorn daemon on SQLite, shared by the browser tests of a module."""
    tmp = tmp_path_factory.mktemp("webd")
    d = Daemon(f"sqlite:///{tmp / 'rhythmd.db'}", log_path=tmp / "daemon.log").start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def http(web_daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_daemon.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    path = chromium_path()
    if path is None:
        _unavailable("chromium not found (install it: apt-get install -y chromium, or set "
                     "RHYTHMD_TEST_CHROMIUM).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[test]').")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
