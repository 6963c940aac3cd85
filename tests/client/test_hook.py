"""RhythmHook against the stdlib fake daemon: streaming, recommendations, guardrails, rollback."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")

from rhythmd_client import RhythmHook  # noqa: E402


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


class Setup:
    """A tiny model trained with SGD and a cosine schedule."""

    def __init__(self, lr: float = 0.1) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, 10_000)

    def train_step(self) -> Any:
        loss = self.model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        return loss

    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    yield d
    d.stop()


def make_hook(url: str, s: Setup | None = None, **kw: Any) -> RhythmHook:
    args: dict[str, Any] = {"run_name": "test", "project": "demo", "interval_s": 0.02,
                            "flush_every": 16, "close_timeout_s": 5.0}
    if s is not None:
        args.update(optimizer=s.opt, scheduler=s.sched)
    args.update(kw)
    hook = RhythmHook(url, **args)
    hook._tr.backoff_s, hook._tr.backoff_max_s = 0.02, 0.2  # fast retries in tests
    return hook


def run_until(hook: RhythmHook, s: Setup, cond: Callable[[], bool], start: int = 0,
              limit: int = 5000, sleep: float = 0.001) -> int:
    """Train until ``cond()`` holds after a step; return the next step number."""
    step = start
    while step < start + limit:
        hook.step(step, loss=s.train_step())
        step += 1
        if cond():
            return step
        time.sleep(sleep)
    raise AssertionError("condition not reached")


def test_float_and_tensor_losses_lr_and_nonfinite_values(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s, reflex=False)  # the NaN at step 9 is data here
    lrs = []
    for step in range(40):
        loss: Any = s.train_step()
        if step % 2:
            loss = float(loss.detach())
        gn = float("inf") if step == 7 else torch.tensor(1.0 + step)
        if step == 9:
            loss = torch.tensor(float("nan"))
        hook.step(step, loss=loss, grad_norm=gn)
        lrs.append(s.lr())
    hook.log(39, val_loss=0.5, val_acc=torch.tensor(0.75), ok=True)
    stats = hook.close()
    rid = hook.run_id
    loss_pts = fake.state.points(rid, "loss")
    assert [p[0] for p in loss_pts] == list(range(40))
    assert math.isnan(loss_pts[9][1])
    assert all(math.isfinite(v) for st, v in loss_pts if st != 9)
    gn_pts = dict(fake.state.points(rid, "grad_norm"))
    assert gn_pts[7] == math.inf and gn_pts[8] == 9.0
    assert [v for _, v in fake.state.points(rid, "lr")] == pytest.approx(lrs, rel=1e-7)
    assert fake.state.points(rid, "val_acc") == [(39, 0.75)]
    assert fake.state.points(rid, "ok") == [(39, 1.0)]
    assert stats["sent"] == 40 * 3 + 3 and stats["errors"] == 0
    assert fake.state.run(rid)["finished"]["status"] == "finished"


def test_apply_mode_applies_and_acks(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s)
    nxt = run_until(hook, s, lambda: hook._tr.stats["sent"] > 0)
    before = s.lr()
    rec = fake.state.add_rec(hook.run_id, "reduce_lr", {"factor": 0.5})
    nxt = run_until(hook, s, lambda: hook.stats["recs_applied"] == 1, start=nxt)
    assert s.lr() == pytest.approx(before * 0.5, rel=1e-3)
    hook.close()
    ack = fake.state.run(hook.run_id)["acks"][0]
    assert ack["id"] == rec and ack["status"] == "applied" and ack["step"] == nxt - 1
    assert ack["lr_after"][0] == pytest.approx(ack["lr_before"][0] * 0.5)


def test_advise_mode_changes_nothing(fake: FakeDaemon, caplog: pytest.LogCaptureFixture) -> None:
    s = Setup()
    hook = make_hook(fake.url, s, mode="advise")
    nxt = run_until(hook, s, lambda: hook._tr.stats["sent"] > 0)
    fake.state.add_rec(hook.run_id, "reduce_lr", {"factor": 0.5})
    with caplog.at_level(logging.WARNING, logger="rhythmd_client"):
        run_until(hook, s, lambda: hook.stats["recs_rejected"] == 1, start=nxt)
        lr_seen = s.lr()
    hook.close()
    ack = fake.state.run(hook.run_id)["acks"][0]
    assert ack["status"] == "rejected" and ack["note"] == "advise mode"
    assert ack["lr_before"] == ack["lr_after"] == [pytest.approx(lr_seen, rel=1e-3)]
    assert any("recommends reduce_lr" in r.getMessage() for r in caplog.records)
    assert hook.stats["recs_applied"] == 0


def test_stale_and_disallowed_are_rejected(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s, allow={"reduce_lr", "stop"})
    nxt = run_until(hook, s, lambda: hook._tr.stats["sent"] > 0)
    lr0 = s.lr()
    stale = fake.state.add_rec(hook.run_id, "reduce_lr", {"factor": 0.5}, expires_at_step=1)
    banned = fake.state.add_rec(hook.run_id, "increase_lr", {"factor": 2.0})
    run_until(hook, s, lambda: hook.stats["recs_rejected"] == 2, start=nxt)
    hook.close()
    acks = {a["id"]: a for a in fake.state.run(hook.run_id)["acks"]}
    assert acks[stale]["status"] == "rejected" and acks[stale]["note"].startswith("stale")
    assert acks[banned]["status"] == "rejected" and "not allowed" in acks[banned]["note"]
    assert s.lr() == pytest.approx(lr0, rel=1e-2)  # only the cosine moved it


def test_stop_sets_should_stop(fake: FakeDaemon) -> None:
    s = Setup()
    fake.state.seed_recs = [("stop", {})]
    hook = make_hook(fake.url, s)
    last = -1
    with hook:
        for step in hook.steps(5000):
            hook.step(step, loss=s.train_step())
            last = step
            time.sleep(0.001)
    assert hook.should_stop and last < 4999
    run = fake.state.run(hook.run_id)
    assert run["acks"][0]["status"] == "applied"
    assert run["finished"] == {"status": "stopped", "step": last}


def test_rollback_restores_and_starts_a_branch(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s, model=s.model, snapshot_every=10)
    snap_weights = None
    seen: list[int] = []
    sent_rec = False
    for step in hook.steps(120):
        seen.append(step)
        hook.step(step, loss=s.train_step())
        if step == 30:
            snap_weights = s.model.weight.detach().clone()
        if step == 45 and not sent_rec:
            # the run is created in the background: on a loaded machine 45 steps can come first
            assert wait_for(lambda: hook.run_id in fake.state.runs)
            fake.state.add_rec(hook.run_id, "rollback", {"to_step": 30, "lr_factor": 0.5})
            sent_rec = True
        if step >= 45 and hook.branch == 0:
            time.sleep(0.005)  # give the sender time to bring the recommendation
    hook.close()
    assert hook.branch == 1 and hook.branch_start == 31 and hook.resume_step == 31
    k = seen.index(31, seen.index(45))
    assert seen[k - 1] >= 45  # the loop jumped back to 31 after the rollback
    assert seen[-1] == 119
    run = fake.state.run(hook.run_id)
    assert run["branches"][1] == 31  # first step of the new branch
    b1 = [st for st, _ in fake.state.points(hook.run_id, "loss", branch=1)]
    assert b1 == list(range(31, 120))
    ack = run["acks"][0]
    assert ack["status"] == "applied" and "restored step 30" in ack["note"]
    assert snap_weights is not None


def test_rollback_without_model_is_rejected(fake: FakeDaemon) -> None:
    s = Setup()
    fake.state.seed_recs = [("rollback", {"to_step": 0})]
    hook = make_hook(fake.url, s)
    run_until(hook, s, lambda: hook.stats["recs_rejected"] == 1)
    hook.close()
    assert hook.branch == 0
    assert fake.state.run(hook.run_id)["acks"][0]["status"] == "rejected"


def test_hook_never_raises_into_the_loop(fake: FakeDaemon,
                                         caplog: pytest.LogCaptureFixture) -> None:
    s = Setup()
    hook = make_hook(fake.url, s)

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("injected")

    hook._flush = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="rhythmd_client"):
        for step in range(100):
            hook.step(step, loss=s.train_step())
    errors = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(errors) == 1  # logged once
    assert hook.stats["internal_errors"] >= 5
    del hook._flush
    hook.step(100, loss=object())  # an odd loss is dropped on the sender thread
    hook.log(100, weird=object())
    hook.close()


def test_daemon_down_at_start_then_up_and_restart_mid_run() -> None:
    fake = FakeDaemon()  # nothing listening yet
    s = Setup()
    hook = make_hook(fake.url, s)
    worst = 0.0
    step = 0

    def train(n: int) -> None:
        nonlocal worst, step
        for _ in range(n):
            loss = s.train_step()
            t0 = time.perf_counter()
            hook.step(step, loss=loss)
            worst = max(worst, time.perf_counter() - t0)
            step += 1
            time.sleep(0.0005)

    train(200)
    assert hook.stats["sent"] == 0 and hook.stats["retried"] >= 1
    fake.start()
    train(200)
    assert wait_for(lambda: hook.stats["sent"] > 0)
    fake.stop()  # killed mid-run
    fake.state.drop_after_commit = 1  # and the first answer after restart gets lost
    train(200)
    fake.start()
    try:
        train(200)
        stats = hook.close()
    finally:
        fake.stop()
    assert worst < 0.05  # never stalls on the network
    got = [st for st, _ in fake.state.points(hook.run_id, "loss")]
    assert got == list(range(800))  # each point once, in order
    assert stats["dropped"] == 0 and stats["sent"] == 1600


def test_resume_with_run_id(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s, run_id="my-run")
    for step in range(10):
        hook.step(step, loss=s.train_step())
    hook.close()
    hook2 = make_hook(fake.url, s, run_id="my-run")
    for step in range(10, 20):
        hook2.step(step, loss=s.train_step())
    hook2.close()
    assert list(fake.state.runs) == ["my-run"]
    assert [st for st, _ in fake.state.points("my-run", "loss")] == list(range(20))


def test_warmup_runs_through_on_step(fake: FakeDaemon) -> None:
    s = Setup()
    hook = make_hook(fake.url, s)
    nxt = run_until(hook, s, lambda: hook._tr.stats["sent"] > 0)
    fake.state.add_rec(hook.run_id, "warmup", {"warmup_steps": 20, "start_factor": 0.1})
    nxt = run_until(hook, s, lambda: hook.stats["recs_applied"] == 1, start=nxt)
    lr_start = s.lr()
    for step in range(nxt, nxt + 25):
        hook.step(step, loss=s.train_step())
    hook.close()
    assert s.lr() > 5 * lr_start  # the ramp advanced to the full LR
    assert not hook._ctrl_active


def test_import_does_not_import_torch() -> None:
    root = Path(__file__).resolve().parents[2] / "clients" / "python"
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); import rhythmd_client; "
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_float_losses_without_torch_objects(fake: FakeDaemon) -> None:
    hook = make_hook(fake.url)  # no optimizer: only metrics
    for step in range(50):
        hook.step(step, loss=1.0 / (step + 1))
    stats = hook.close()
    assert stats["sent"] == 50
    assert fake.state.points(hook.run_id, "lr") == []
