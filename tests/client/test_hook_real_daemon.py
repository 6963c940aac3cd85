"""RhythmHook against the real daemon (uvicorn + SQLite): stream, apply, roll back, survive a
kill and restart without duplicate points."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rhythmd.app")

from rhythmd_client import RhythmHook  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class RealDaemon:
    def __init__(self, db: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RealDaemon:
        env = {**os.environ, "RHYTHMD_DATABASE_URL": f"sqlite:///{self.db}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "rhythmd.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "daemon exited"
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, doc: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture
def real(tmp_path: Path) -> Any:
    d = RealDaemon(tmp_path / "rhythmd.db").start()
    yield d
    d.kill()


def test_real_daemon_stream_apply_rollback_restart(real: RealDaemon) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10_000)
    hook = RhythmHook(real.url, run_name="real-e2e", project="tests", optimizer=opt,
                      scheduler=sched, model=model, interval_s=0.02, flush_every=16,
                      snapshot_every=10, reflex=False)  # the NaN at step 40 is data here
    hook._tr.backoff_s, hook._tr.backoff_max_s = 0.05, 0.3
    mine: set[str] = set()  # apply only this test's recommendations, not the daemon's policy
    hook._decide = (  # type: ignore[method-assign]
        lambda rec, step: None if rec.get("id") in mine else "not issued by this test")
    rid = hook.run_id
    reduce_id = rollback_id = None
    restarted = False
    worst = 0.0
    for step in hook.steps(400):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        t0 = time.perf_counter()
        hook.step(step, loss=loss if step != 40 else torch.tensor(float("nan")))
        worst = max(worst, time.perf_counter() - t0)
        if step == 60 and reduce_id is None:
            reduce_id = real.post(f"/v1/runs/{rid}/recommendations",
                                  {"action": "reduce_lr", "params": {"factor": 0.5}})["id"]
            mine.add(reduce_id)
        if step == 150 and rollback_id is None:
            rollback_id = real.post(f"/v1/runs/{rid}/recommendations",
                                    {"action": "rollback",
                                     "params": {"to_step": 120, "lr_factor": 0.5}})["id"]
            mine.add(rollback_id)
        if step == 250 and not restarted:  # SIGKILL mid-run, then back on the same database
            real.kill()
            restarted = True
        if step == 300 and real.proc is not None and real.proc.poll() is not None:
            real.start()
        time.sleep(0.002)
    stats = hook.close()
    assert worst < 0.05
    assert stats["dropped"] == 0 and stats["sent"] > 0 and stats["retried"] >= 1
    recs = {r["id"]: r for r in real.get(f"/v1/runs/{rid}/recommendations")["recommendations"]}
    assert recs[reduce_id]["status"] == "applied"
    assert recs[reduce_id]["lr_after"][0] == pytest.approx(recs[reduce_id]["lr_before"][0] / 2)
    assert recs[rollback_id]["status"] == "applied"
    branches = real.get(f"/v1/runs/{rid}/branches")["branches"]
    assert [(b["branch"], b["start_step"]) for b in branches] == [(0, None), (1, 121)]
    every = real.get(f"/v1/runs/{rid}/metrics/loss?branch=all")
    pairs = list(zip(every["branches"], every["steps"], strict=True))
    assert len(pairs) == len(set(pairs))  # no point stored twice despite the kill
    latest = real.get(f"/v1/runs/{rid}/metrics/loss")
    assert latest["steps"] == list(range(400))
    assert latest["values"][40] == "NaN"
    lr = real.get(f"/v1/runs/{rid}/metrics/lr")
    assert lr["steps"] == list(range(400))
    run = real.get(f"/v1/runs/{rid}")
    assert run["status"] == "finished" and run["last_step"] == 399
