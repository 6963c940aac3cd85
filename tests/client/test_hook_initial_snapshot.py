"""A rollback to step -1 restarts from the initial weights the hook keeps."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from rhythmd_client import RhythmHook
from tests.conftest import Daemon

torch = pytest.importorskip("torch")


def test_rollback_to_the_initial_weights(tmp_path):
    d = Daemon(f"sqlite:///{tmp_path / 'r.db'}").start()
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        initial = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=0.5)
        run_id = f"init-{uuid.uuid4().hex[:8]}"
        hook = RhythmHook(d.url, run_name="init", run_id=run_id, optimizer=opt, model=model,
                          interval_s=0.02, snapshot_every=1000)
        x = torch.randn(64, 3)
        resumed_at = None
        for step in hook.steps(400):
            if step == 5 and resumed_at is None:
                httpx.post(f"{d.url}/v1/runs", json={"name": "init", "run_id": run_id})
                httpx.post(f"{d.url}/v1/runs/{run_id}/recommendations", json={
                    "action": "rollback", "params": {"to_step": -1, "lr_factor": 0.1}})
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            hook.step(step, loss=float(loss))
            if hook.rolled_back_to is not None and resumed_at is None:
                resumed_at = hook.resume_step
                restored = [p.detach().clone() for p in model.parameters()]
                lr_after = opt.param_groups[0]["lr"]
                break
            time.sleep(0.005)
        hook.close()
        recs = httpx.get(f"{d.url}/v1/runs/{run_id}/recommendations").json()["recommendations"]
        assert [(r["status"], r["note"]) for r in recs] == [("applied", recs[0]["note"])]
        assert resumed_at == 0
        assert all(torch.equal(a, b) for a, b in zip(initial, restored, strict=True))
        assert lr_after == pytest.approx(0.05)
        assert opt.state_dict()["state"] == {}  # Adam's moments restart too
    finally:
        d.stop()
