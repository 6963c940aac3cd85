"""Guarded changes: change-point snapshots and the ``revert`` action (controller and hook)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.optim import lr_scheduler as L  # noqa: E402

from rhythmd_client import RhythmHook  # noqa: E402
from rhythmd_client.apply import LRController, RecommendationRejected  # noqa: E402
from rhythmd_client.snapshot import SnapshotKeeper, _nbytes  # noqa: E402


def setup(sched: str = "cosine") -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    if sched == "cosine":
        s: Any = L.CosineAnnealingLR(opt, T_max=200, eta_min=1e-4)
    elif sched == "lambda":
        s = L.LambdaLR(opt, lambda e: 1.0 / (1.0 + 0.05 * e))
    else:
        s = None
    return model, opt, s


def train_step(model: Any, opt: Any, s: Any, t: int) -> None:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(t))
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s is not None:
        s.step()


def lr(opt: Any) -> float:
    return float(opt.param_groups[0]["lr"])


def baseline(sched: str, steps: int) -> tuple[list[float], list[Any]]:
    """LR after each step, and the parameters after the last, of a run without changes."""
    model, opt, s = setup(sched)
    lrs = []
    for t in range(steps):
        train_step(model, opt, s, t)
        lrs.append(lr(opt))
    return lrs, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("sched", ["cosine", "lambda"])
def test_revert_restores_the_snapshot_taken_before_the_change(sched: str) -> None:
    base_lrs, base_params = baseline(sched, 60)
    model, opt, s = setup(sched)
    keeper = SnapshotKeeper(model, opt, s, every_steps=1000)  # no periodic one at step 20
    ctrl = LRController(opt, s, snapshots=keeper)
    for t in range(30):
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        if t == 20:
            ctrl.apply("reduce_lr", {"factor": 0.3}, t, change_id="c1")
            assert keeper.steps == [20]  # forced, before the change
    assert lr(opt) == pytest.approx(0.3 * base_lrs[29], rel=1e-5)
    done = ctrl.apply("revert", {"to_step": 20, "change_id": "c1"}, 29)
    assert done.step == 20 and done.restored and "restored" in done.note
    assert done.lr_after[0] == pytest.approx(base_lrs[20], rel=1e-6)
    assert ctrl.changes == []  # the change never happened on this branch
    for t in range(21, 60):  # replaying from the snapshot reproduces the run without it
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        assert lr(opt) == pytest.approx(base_lrs[t], rel=1e-6), t
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7)
               for a, b in zip(model.parameters(), base_params, strict=True))
    with pytest.raises(RecommendationRejected, match="no record"):
        ctrl.apply("revert", {"to_step": 20, "change_id": "c1"}, 60)


@pytest.mark.parametrize(("action", "params"), [
    ("reduce_lr", {"factor": 0.5}),
    ("increase_lr", {"factor": 3.0}),
    ("warmup", {"warmup_steps": 50, "start_factor": 0.1}),
    ("set_schedule", {"kind": "multistep", "milestones": [2, 4], "gamma": 0.5}),
])
@pytest.mark.parametrize("sched", ["lambda", "none"])
def test_revert_without_snapshot_undoes_the_lr_change_only(action: str, params: dict,
                                                           sched: str) -> None:
    base_lrs, _ = baseline(sched, 40)
    model, opt, s = setup(sched)
    ctrl = LRController(opt, s)  # no keeper: the LR state is all that is recorded
    for t in range(40):
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        if t == 10:
            ctrl.apply(action, params, t, change_id="x")
            assert ctrl.changes[0]["snap"] is None
        if 13 <= t < 19:  # changed (set_schedule: from its first milestone, 2 steps on)
            assert lr(opt) != pytest.approx(base_lrs[t], rel=1e-3)
        if t == 19:
            done = ctrl.apply("revert", {"to_step": 10, "change_id": "x"}, t)
            assert done.step == 19 and not done.restored and done.note.startswith("lr_only")
        if t >= 20 or (t == 19 and action != "set_schedule"):
            assert lr(opt) == pytest.approx(base_lrs[t], rel=1e-6), t
            assert ctrl.current_lrs()[0] == pytest.approx(base_lrs[t], rel=1e-6)
    assert not ctrl.active


def test_revert_keeps_later_changes_and_is_rejected_when_unknown_or_abandoned() -> None:
    base_lrs, _ = baseline("lambda", 40)
    model, opt, s = setup("lambda")
    keeper = SnapshotKeeper(model, opt, s, every_steps=5)
    ctrl = LRController(opt, s, snapshots=keeper)
    for t in range(30):
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        keeper.maybe_snapshot(t)
        if t == 12:
            ctrl.apply("reduce_lr", {"factor": 0.5}, t, change_id="a")
            ctrl.apply("warmup", {"warmup_steps": 4}, t, change_id="b")  # same step
        if t == 22:
            ctrl.apply("increase_lr", {"factor": 2.0}, t, change_id="c")
    snaps = {c["id"]: c["snap"] for c in ctrl.changes}
    assert snaps["a"] is not None and snaps["b"] is None and snaps["c"] is not None
    with pytest.raises(RecommendationRejected, match="no record"):
        ctrl.apply("revert", {"to_step": 12, "change_id": "zzz"}, 29)
    with pytest.raises(RecommendationRejected, match="applied at step 12"):
        ctrl.apply("revert", {"to_step": 13, "change_id": "a"}, 29)
    # b has no snapshot of its own: LR only; its ramp had ended at x1.0, so nothing changes
    done = ctrl.apply("revert", {"to_step": 12, "change_id": "b"}, 29)
    assert not done.restored and done.lr_after == pytest.approx(done.lr_before)
    # c: restore its snapshot; the records are those of step 22 (b's LR-only revert came
    # later, so it is undone too); a stays recorded and revertible
    done = ctrl.apply("revert", {"to_step": 22, "change_id": "c"}, 29)
    assert done.restored and done.lr_after[0] == pytest.approx(0.5 * base_lrs[22], rel=1e-6)
    assert [c["id"] for c in ctrl.changes] == ["a", "b"]
    # a rollback before step 12 abandons change a: reverting it is then rejected
    ctrl.apply("rollback", {"to_step": 10}, 22)
    with pytest.raises(RecommendationRejected, match="no record"):
        ctrl.apply("revert", {"to_step": 12, "change_id": "a"}, 22)


def test_change_point_snapshot_within_the_byte_bound() -> None:
    model, opt, s = setup("none")
    train_step(model, opt, s, 0)
    size = _nbytes(model.state_dict()) + _nbytes(opt.state_dict())
    keeper = SnapshotKeeper(model, opt, s, every_steps=1, max_bytes=size)  # one fits
    ctrl = LRController(opt, s, snapshots=keeper)
    keeper.snapshot(0)
    ctrl.apply("reduce_lr", {"factor": 0.5}, 1, change_id="a")
    assert keeper.steps == [1] and keeper.skipped["evicted"] == 1  # a normal snapshot
    tiny = SnapshotKeeper(model, opt, s, max_bytes=10)
    ctrl2 = LRController(opt, s, snapshots=tiny)
    ctrl2.apply("reduce_lr", {"factor": 0.5}, 2, change_id="b")
    assert tiny.steps == [] and tiny.skipped["too_large"] == 1
    done = ctrl2.apply("revert", {"to_step": 2, "change_id": "b"}, 3)
    assert not done.restored and done.lr_after[0] == pytest.approx(done.lr_before[0] * 2)


# ---------------------------------------------------------------------- through the hook


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    yield d
    d.stop()


def test_hook_reverts_onto_a_new_branch(fake: FakeDaemon) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = RhythmHook(fake.url, run_name="revert", optimizer=opt, model=model,
                      interval_s=0.02, flush_every=8, snapshot_every=1000)
    x = torch.randn(32, 4)
    seen: list[int] = []
    change: dict[str, Any] = {}
    for step in hook.steps(400):
        seen.append(step)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 3:
            deadline = time.monotonic() + 10
            while hook.run_id not in fake.state.runs and time.monotonic() < deadline:
                time.sleep(0.01)
            change["id"] = fake.state.add_rec(hook.run_id, "reduce_lr", {"factor": 0.5})
        hook.step(step, loss=loss.item())
        if not change.get("step") and hook.applied:
            change["step"] = hook.applied[0]["step"]
            change["weights"] = model.weight.detach().clone()
            fake.state.add_rec(hook.run_id, "revert", {"to_step": 9999, "change_id": "nope"})
            fake.state.add_rec(hook.run_id, "revert",
                               {"to_step": change["step"], "change_id": change["id"]})
        if hook.rolled_back_to is not None:
            resumed = hook.resume_step
            break
        time.sleep(0.002)
    nxt = next(iter(hook.steps(400, start=resumed)))
    hook.step(nxt, loss=0.5)
    hook.close()
    s = change["step"]
    assert resumed == s + 1 == nxt
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert hook._keeper.steps[-1] == s
    assert torch.equal(model.weight.detach(), change["weights"])  # state before the change
    run = fake.state.run(hook.run_id)
    acks = {a["id"]: a for a in run["acks"]}
    assert acks[change["id"]]["status"] == "applied"
    statuses = sorted(a["status"] for a in run["acks"])
    assert statuses == ["applied", "applied", "rejected"]
    assert run["branches"][1] == s + 1
    assert fake.state.points(hook.run_id, "loss", branch=1) == [(s + 1, 0.5)]
