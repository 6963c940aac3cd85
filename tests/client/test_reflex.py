"""The hook's local reflex: a blown-up loss is answered at once, without the daemon."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")

from rhythmd_client import RhythmHook  # noqa: E402
from rhythmd_client._buffer import freeze  # noqa: E402
from rhythmd_client.transport import Chunk, Transport  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    yield d
    d.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.01)
    return cond()


class Net:
    """A linear model on SGD (lr 0.1) whose loss the test may replace at chosen steps."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.x = torch.randn(32, 4)
        self.weights: dict[int, Any] = {}

    def step(self, step: int) -> Any:
        loss = (self.model(self.x) - 1.0).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.weights[step] = self.model.weight.detach().clone()
        return loss.detach()

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


def hook_for(url: str, net: Net, **kw: Any) -> RhythmHook:
    args: dict[str, Any] = {"run_name": "reflex", "optimizer": net.opt, "model": net.model,
                            "interval_s": 0.02, "flush_every": 8, "snapshot_every": 5}
    args.update(kw)
    return RhythmHook(url, **args)


@pytest.mark.parametrize("kind", ["float", "cpu_tensor"])
def test_nonfinite_loss_restores_cuts_rewarms_and_reports_at_once(fake: FakeDaemon,
                                                                  kind: str) -> None:
    net = Net()
    hook = hook_for(fake.url, net)
    for step in range(23):
        loss = net.step(step)
        if step == 22:
            loss = loss * float("nan")
        hook.step(step, loss=loss.item() if kind == "float" else loss)
        if step < 22:
            assert hook.rolled_back_to is None
    # the same call: newest snapshot at or before 22 - 2 = 20, LR x0.1, ramp from x0.1
    assert hook.rolled_back_to == 20 and hook.resume_step == 21 and hook.branch == 1
    assert torch.equal(net.model.weight.detach(), net.weights[20])
    assert net.lr == pytest.approx(0.1 * 0.1 * 0.1)
    for step in range(21, 41):
        hook.step(step, loss=net.step(step).item())
    assert net.lr == pytest.approx(0.01)  # warmed up to the cut LR over 20 steps
    stats = hook.close()
    assert stats["reflexes"] == 1 and stats["recs_applied"] == 0
    assert stats["internal_errors"] == 0 and stats["errors"] == 0
    run = fake.state.run(hook.run_id)
    (rec,) = run["recs"].values()
    assert rec["author"] == "rhythmd-client/reflex" and rec["action"] == "rollback"
    assert rec["params"] == {"to_step": 20, "lr_factor": 0.1, "warmup_steps": 20}
    assert [(a["id"], a["status"], a["step"]) for a in run["acks"]] == [(rec["id"], "applied",
                                                                        22)]
    assert run["branches"][1] == 21
    assert fake.state.points(hook.run_id, "loss", branch=0)[-1][0] == 22
    assert math.isnan(fake.state.points(hook.run_id, "loss", branch=0)[-1][1])


def test_daemon_bound_and_superseded_daemon_advice(fake: FakeDaemon) -> None:
    fake.state.extra = {"blowup_bound": 50.0}
    net = Net()
    hook = hook_for(fake.url, net)
    step = 0
    while hook._bound != 50.0:  # the bound arrives with an ingest response
        hook.step(step, loss=net.step(step).item())
        step += 1
        time.sleep(0.005)
        assert step < 2000
    assert hook._tr.blowup_bound == 50.0
    hook.step(step, loss=49.0)  # below the bound: data
    assert hook.rolled_back_to is None
    bad = step + 1
    net.step(bad)
    hook.step(bad, loss=51.0)
    assert hook.rolled_back_to is not None and hook.rolled_back_to <= bad - 2
    restored = hook.rolled_back_to
    run_id = hook.run_id
    # daemon advice answering the same blow-up (issued on the abandoned branch) is superseded;
    # advice issued later is applied
    same = fake.state.add_rec(run_id, "rollback", {"to_step": restored, "lr_factor": 0.1},
                              issued_at_step=bad)
    later = fake.state.add_rec(run_id, "reduce_lr", {"factor": 0.5}, issued_at_step=bad)
    step = restored + 1
    while not wait_for(lambda: len(fake.state.run(run_id)["acks"]) >= 3, timeout=0.01):
        hook.step(step, loss=net.step(step).item())
        step += 1
        time.sleep(0.005)
        assert step < 3000
    hook.close()
    acks = {a["id"]: a for a in fake.state.run(run_id)["acks"]}
    assert acks[same]["status"] == "rejected"
    assert acks[same]["note"] == "superseded by local reflex"
    assert acks[later]["status"] == "applied"


def test_escalation_per_episode_and_max_attempts(fake: FakeDaemon) -> None:
    net = Net()
    hook = hook_for(fake.url, net, snapshot_every=1000, reflex={"max_attempts": 2})
    for step in range(10):
        hook.step(step, loss=net.step(step).item())
    lr0 = net.lr
    hook.step(10, loss=math.inf)  # only the initial weights are kept (snapshot_every)
    assert hook.rolled_back_to == -1 and net.lr == pytest.approx(lr0 * 0.1 * 0.1)
    for step in range(5):
        hook.step(step, loss=net.step(step).item())
    hook.step(5, loss=math.nan)  # blows up again: the same snapshot, x0.01 now
    assert hook.rolled_back_to == -1 and net.lr == pytest.approx(lr0 * 0.01 * 0.1)
    hook.step(5, loss=math.nan)  # a third time: the attempts are spent, the daemon decides
    assert hook.rolled_back_to is None and hook.stats["reflexes"] == 2
    hook.close()


def test_no_model_cuts_and_rewarms_without_restoring(fake: FakeDaemon) -> None:
    net = Net()
    hook = hook_for(fake.url, net, model=None)
    for step in range(5):
        hook.step(step, loss=net.step(step).item())
    hook.step(5, loss=math.nan)
    assert hook.rolled_back_to is None and hook.branch == 0
    assert net.lr == pytest.approx(0.1 * 0.01)
    hook.close()
    (rec,) = fake.state.run(hook.run_id)["recs"].values()
    assert rec["action"] == "warmup" and rec["params"]["peak_factor"] == pytest.approx(0.1)


@pytest.mark.parametrize("kw", [{"mode": "advise"}, {"reflex": False}])
def test_advise_mode_and_reflex_off_never_act(fake: FakeDaemon, kw: dict) -> None:
    net = Net()
    hook = hook_for(fake.url, net, **kw)
    for step in range(30):
        loss = net.step(step).item()
        hook.step(step, loss=math.nan if step == 20 else loss)
    assert hook.branch == 0 and net.lr == 0.1
    assert hook.close()["reflexes"] == 0
    assert fake.state.run(hook.run_id)["recs"] == {}


def test_grad_scaler_skips_and_inf_grad_norms_are_left_alone(fake: FakeDaemon) -> None:
    net = Net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    hook = hook_for(fake.url, net)
    skipped = 0
    for step in range(60):
        loss = (net.model(net.x) - 1.0).pow(2).mean()
        net.opt.zero_grad()
        scaler.scale(loss).backward()
        if step % 7 == 3:  # an overflow in the scaled gradients, as fp16 gives
            net.model.weight.grad[0, 0] = math.inf
        scaler.unscale_(net.opt)
        gn = torch.nn.utils.clip_grad_norm_(net.model.parameters(), 1e9)
        before = scaler.get_scale()
        scaler.step(net.opt)
        scaler.update()
        skipped += scaler.get_scale() < before
        hook.step(step, loss=loss.detach(), grad_norm=gn)
    assert skipped >= 8
    stats = hook.close()
    assert stats["reflexes"] == 0 and hook.branch == 0
    assert any(v == math.inf for _, v in fake.state.points(hook.run_id, "grad_norm"))


def test_sender_watches_tensor_losses_of_the_current_branch(fake: FakeDaemon) -> None:
    woken = []
    tr = Transport(fake.url, run_name="w", interval_s=0.01,
                   on_recommendation=lambda: woken.append(1))
    tr.watch_loss = 10.0
    vals = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(11.0), torch.tensor(math.nan)]
    tr.submit(Chunk(3, 40, [("loss", [40, 41, 42, 43], freeze(vals), [0.0] * 4)]))
    assert wait_for(lambda: tr.bad_loss is not None)
    assert tr.bad_loss == (3, 42) and woken
    tr.close()


def test_state_too_large_for_the_bound_warns_once_and_cuts_instead(
        fake: FakeDaemon, caplog: pytest.LogCaptureFixture) -> None:
    net = Net()
    with caplog.at_level("WARNING", logger="rhythmd_client"):
        hook = hook_for(fake.url, net, snapshot_max_bytes=8)  # not even the model fits
        for step in range(12):
            hook.step(step, loss=net.step(step).item())
        assert wait_for(lambda: hook.run_id in fake.state.runs)
        rb = fake.state.add_rec(hook.run_id, "rollback", {"to_step": 3, "lr_factor": 0.3})
        step = 12
        while not wait_for(lambda: fake.state.run(hook.run_id)["acks"], timeout=0.01):
            hook.step(step, loss=net.step(step).item())
            step += 1
            assert step < 3000
        hook.step(step, loss=math.nan)
        hook.close()
    warned = [r for r in caplog.records if "no snapshots are kept" in r.getMessage()]
    assert len(warned) == 1 and hook._keeper.steps == []
    acks = {a["id"]: a for a in fake.state.run(hook.run_id)["acks"]}
    assert acks[rb]["status"] == "rejected"  # the daemon then falls back to cut + re-warm
    assert acks[rb]["note"].startswith("no snapshots: model + optimizer state exceed")
    assert [r["action"] for r in hook.reflexes] == ["warmup"] and hook.branch == 0


def test_a_snapshot_taken_during_the_blow_up_is_not_restored(fake: FakeDaemon) -> None:
    net = Net()
    hook = hook_for(fake.url, net, snapshot_every=10)
    for step in range(45):  # finite but exploding from step 15: snapshots 20, 30, 40 are bad
        loss = net.step(step).item()
        hook.step(step, loss=loss if step < 15 else 1e6 * step)
    assert hook._keeper.steps[-3:] == [20, 30, 40]
    hook.step(45, loss=math.inf)
    assert hook.rolled_back_to == 10  # its weights gave a loss near the first one
    assert torch.equal(net.model.weight.detach(), net.weights[10])
    hook.close()


def test_the_reflex_keeps_to_the_allowed_actions(fake: FakeDaemon) -> None:
    net = Net()
    hook = hook_for(fake.url, net, allow={"warmup", "reduce_lr"})
    for step in range(12):
        hook.step(step, loss=net.step(step).item())
    hook.step(12, loss=math.nan)
    assert hook.branch == 0 and [r["action"] for r in hook.reflexes] == ["warmup"]
    hook.close()
    net = Net()
    hook = hook_for(fake.url, net, allow={"reduce_lr"})
    hook.step(0, loss=math.nan)
    assert hook.reflexes == [] and net.lr == 0.1
    hook.close()
