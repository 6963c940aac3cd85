"""The hook against a daemon that requires tokens."""

from __future__ import annotations

import time

import httpx
import pytest

from rhythmd_client import RhythmHook
from tests.conftest import Daemon

torch = pytest.importorskip("torch")
ADMIN = "admin-token-for-hook-tests-0123"


def test_hook_streams_with_an_ingest_token(tmp_path, monkeypatch):
    d = Daemon(f"sqlite:///{tmp_path / 'a.db'}",
               env={"RHYTHMD_AUTH": "required", "RHYTHMD_ADMIN_TOKEN": ADMIN}).start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        token = httpx.post(f"{d.url}/v1/tokens", json={"project": "p", "scope": "ingest"},
                           headers=admin).json()["token"]
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        monkeypatch.setenv("RHYTHMD_TOKEN", token)  # picked up without an argument
        with RhythmHook(d.url, run_name="secured", project="p", optimizer=opt,
                        interval_s=0.05) as hook:
            for step in range(50):
                hook.step(step, loss=1.0 / (1 + step))
        run_id = hook.run_id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = httpx.get(f"{d.url}/v1/runs/{run_id}", headers=admin)
            if got.status_code == 200 and got.json()["n_points"] >= 100:
                break
            time.sleep(0.1)
        assert got.json()["n_points"] >= 100  # train_loss and lr
        assert got.json()["status"] == "finished"
        assert hook.stats["errors"] == 0
        # Without a token the daemon refuses, and the hook only counts it.
        monkeypatch.delenv("RHYTHMD_TOKEN")
        with RhythmHook(d.url, run_name="anonymous", project="p", interval_s=0.05,
                        close_timeout_s=1) as bad:
            for step in range(5):
                bad.step(step, loss=1.0)
        assert bad.stats["sent"] == 0
    finally:
        d.stop()
