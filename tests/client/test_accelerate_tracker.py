"""The 🤗 Accelerate tracker with a real ``Accelerator(log_with=[...])`` (stdlib fake daemon)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")
accelerate = pytest.importorskip("accelerate")

from rhythmd_client.integrations.accelerate import RhythmdTracker  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    d.state.seed_recs = [("reduce_lr", {"factor": 0.5})]
    yield d
    d.stop()


def train(tracker: RhythmdTracker, opt: torch.optim.Optimizer, steps: int = 20) -> None:
    acc = accelerate.Accelerator(cpu=True, log_with=[tracker])
    acc.init_trackers("ignored-project", config={"lr": 0.1, "arch": "linear", "note": None})
    model = torch.nn.Linear(3, 1)
    for step in range(steps):
        loss = model(torch.ones(1, 3)).pow(2).mean()
        acc.log({"train_loss": loss.detach(), "epoch": 0, "phase": "warm"}, step=step)
        if step < 3:
            time.sleep(0.1)  # let the recommendation arrive
    acc.log({"val/loss": 0.5, "val/acc": 0.75}, step=steps - 1)
    acc.end_training()


def test_tracker_streams_logged_values_and_config_and_only_advises(fake: FakeDaemon) -> None:
    opt = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    tracker = RhythmdTracker("acc-run", url=fake.url, interval_s=0.02, flush_every=1)
    assert tracker.name == "rhythmd" and tracker.requires_logging_directory is False
    train(tracker, opt)
    run = fake.state.run(tracker.run_id)
    points = fake.state.points
    assert [s for s, _ in points(tracker.run_id, "loss")] == list(range(20))
    assert points(tracker.run_id, "epoch") == [(s, 0.0) for s in range(20)]
    assert points(tracker.run_id, "val/acc") == [(19, 0.75)]
    assert points(tracker.run_id, "phase") == []  # strings are not streamed
    assert run["acks"] and run["acks"][0]["status"] == "rejected"
    assert run["acks"][0]["note"] == "advise mode" and opt.param_groups[0]["lr"] == 0.1
    assert run["finished"]["status"] == "finished" and tracker.tracker is None


def test_tracker_with_the_optimizer_applies_advice(fake: FakeDaemon) -> None:
    opt = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    tracker = RhythmdTracker("acc-apply", url=fake.url, optimizer=opt, interval_s=0.02,
                             flush_every=1, reflex=False)
    train(tracker, opt)
    acks = fake.state.run(tracker.run_id)["acks"]
    assert acks and acks[0]["status"] == "applied"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_tracker_is_a_no_op_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHYTHMD_MODE", "disabled")
    monkeypatch.setenv("RHYTHMD_URL", "http://127.0.0.1:9")  # nothing listens there
    opt = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    tracker = RhythmdTracker("acc-off")
    train(tracker, opt, steps=3)
    assert tracker.run_id is None and opt.param_groups[0]["lr"] == 0.1
