"""SnapshotKeeper: byte-bounded CPU snapshots, restore, and rollback through LRController."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.optim import lr_scheduler as L  # noqa: E402

from rhythmd_client.apply import LRController, RecommendationRejected  # noqa: E402
from rhythmd_client.snapshot import SnapshotKeeper  # noqa: E402


def setup(fused: bool = True, sched: str = "cosine") -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    kw: dict[str, Any] = {"fused": True} if fused else {"foreach": False}
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-2), **kw)
    if sched == "cosine":
        s = L.CosineAnnealingLR(opt, T_max=200, eta_min=1e-4)
    else:
        s = L.LambdaLR(opt, lambda e: 1.0 / (1.0 + 0.05 * e))
    return model, opt, s


def train_step(model: Any, opt: Any, s: Any, t: int) -> None:
    g = torch.Generator().manual_seed(t)
    x = torch.randn(16, 4, generator=g)
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    s.step()


def model_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.state_dict().values())


def params(model: Any) -> list[Any]:
    return [p.detach().clone() for p in model.parameters()]


def test_every_steps_health_and_byte_bound() -> None:
    model = nn.Linear(10, 10)  # 110 floats = 440 bytes, no optimizer
    size = model_bytes(model)
    k = SnapshotKeeper(model, max_bytes=2 * size + 1, every_steps=10)
    taken = [t for t in range(100) if k.maybe_snapshot(t, healthy=not 30 <= t < 45)]
    assert taken == [0, 10, 20, 45, 55, 65, 75, 85, 95]
    assert k.steps == [85, 95]  # as many recent snapshots as fit in the byte budget
    assert k.nbytes == 2 * size <= k.max_bytes
    assert k.skipped["unhealthy"] == 15
    assert k.skipped["evicted"] == 7
    small = SnapshotKeeper(model, max_bytes=size - 1, every_steps=1)
    assert not small.maybe_snapshot(0)
    assert small.steps == [] and small.skipped["too_large"] == 1
    with pytest.raises(RecommendationRejected):
        small.restore(10)


def test_restore_newest_at_or_before_and_mark_unhealthy() -> None:
    model = nn.Linear(2, 2)
    k = SnapshotKeeper(model, every_steps=5)
    for t in range(0, 30):
        with torch.no_grad():
            model.weight.fill_(float(t))
        k.maybe_snapshot(t)
    assert k.steps == [0, 5, 10, 15, 20, 25]
    k.mark_unhealthy_after(12)
    assert k.steps == [0, 5, 10]
    assert k.restore(14) == 10
    assert float(model.weight.detach()[0, 0]) == 10.0
    with pytest.raises(RecommendationRejected):
        k.restore(-1)
    # The next snapshot is due every_steps after the restored one.
    assert not k.maybe_snapshot(14)
    assert k.maybe_snapshot(15)


@pytest.mark.parametrize("fused", [True, False])
def test_restore_is_exact_and_does_not_share_tensors(fused: bool) -> None:
    model, opt, s = setup(fused)
    lr_obj = opt.param_groups[0]["lr"]
    k = SnapshotKeeper(model, opt, s, every_steps=10)
    ref: dict[int, Any] = {}
    for t in range(25):
        train_step(model, opt, s, t)
        if k.maybe_snapshot(t):
            ref[t] = (params(model), float(opt.param_groups[0]["lr"]), s.last_epoch)
    assert k.steps == [0, 10, 20]
    for _ in range(2):  # restoring twice gives the same state: nothing was shared
        assert k.restore(19) == 10
        assert all(torch.equal(a, b) for a, b in zip(params(model), ref[10][0], strict=True))
        assert float(opt.param_groups[0]["lr"]) == ref[10][1]
        assert s.last_epoch == ref[10][2]
        assert opt.param_groups[0]["lr"] is lr_obj  # tensor LR kept in place
        for t in range(11, 16):
            train_step(model, opt, s, t)
    # Determinism: replaying the same steps from the snapshot reproduces the original run.
    model2, opt2, s2 = setup(fused)
    for t in range(16):
        train_step(model2, opt2, s2, t)
    assert all(torch.equal(a, b) for a, b in zip(params(model), params(model2), strict=True))


@pytest.mark.parametrize("sched", ["cosine", "lambda"])
def test_rollback_action_restores_then_cuts_and_holds(sched: str) -> None:
    # Baseline LR trajectory of the same scheduler without any intervention.
    model, opt, s = setup(sched=sched)
    base = []
    for t in range(150):
        train_step(model, opt, s, t)
        base.append(float(opt.param_groups[0]["lr"]))

    model, opt, s = setup(sched=sched)
    keeper = SnapshotKeeper(model, opt, s, every_steps=10)
    ctrl = LRController(opt, s, snapshots=keeper)
    assert keeper.controller is ctrl
    snap_params = None
    for t in range(35):
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        if t == 20:
            ctrl.apply("reduce_lr", {"factor": 0.5}, t)
        if keeper.maybe_snapshot(t) and t == 30:
            snap_params = params(model)
    a = ctrl.apply("rollback", {"to_step": 33, "lr_factor": 0.5, "warmup_steps": 10}, 34)
    assert a.step == 30 and "restored step 30" in a.note
    assert all(torch.equal(x, y) for x, y in zip(params(model), snap_params, strict=True))
    # LR = 0.5 (earlier cut) x 0.5 (rollback) x warmup ramp from 0.1, x the user's schedule.
    assert a.lr_after[0] == pytest.approx(0.25 * 0.1 * base[30], rel=1e-5)
    for t in range(31, 140):
        train_step(model, opt, s, t)
        ctrl.on_step(t)
        ramp = 0.1 + 0.9 * min(t - 30, 10) / 10
        lr = float(opt.param_groups[0]["lr"])
        assert lr == pytest.approx(0.25 * ramp * base[t], rel=1e-5), t
        assert ctrl.current_lrs()[0] == pytest.approx(lr, rel=1e-5)


def test_user_save_and_load_fns() -> None:
    saved: list[int] = []
    loaded: list[int] = []
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    keeper = SnapshotKeeper(every_steps=50, save_fn=saved.append, load_fn=loaded.append)
    ctrl = LRController(opt, snapshots=keeper)
    for t in range(120):
        keeper.maybe_snapshot(t, healthy=t != 100)
    assert saved == [0, 50, 101] and keeper.steps == [0, 50, 101]  # 100 was unhealthy
    keeper.snapshot(110)
    keeper.mark_unhealthy_after(105)
    assert keeper.steps == [0, 50, 101]
    a = ctrl.apply("rollback", {"to_step": 99}, 120)
    assert loaded == [50] and a.step == 50
    with pytest.raises(ValueError):
        SnapshotKeeper(save_fn=saved.append)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_snapshot_restore_keeps_device_lr_tensor() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-2, device="cuda"), fused=True)
    s = L.CosineAnnealingLR(opt, T_max=50, eta_min=1e-4)
    keeper = SnapshotKeeper(model, opt, s, every_steps=5)
    ctrl = LRController(opt, s, snapshots=keeper)
    lr_obj = opt.param_groups[0]["lr"]
    x = torch.randn(8, 4, device="cuda")
    ref = {}
    for t in range(12):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        s.step()
        ctrl.on_step(t)
        if keeper.maybe_snapshot(t):
            ref[t] = (params(model), float(lr_obj))
    assert keeper.steps == [0, 5, 10]
    assert all(v.device.type == "cpu" for v in keeper._snaps[-1].model.values())
    a = ctrl.apply("rollback", {"to_step": 9, "lr_factor": 0.5}, 12)
    assert a.step == 5
    assert opt.param_groups[0]["lr"] is lr_obj and lr_obj.device.type == "cuda"
    assert float(lr_obj) == pytest.approx(0.5 * ref[5][1], rel=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(params(model), ref[5][0], strict=True))
    state = opt.state[next(iter(model.parameters()))]
    assert state["exp_avg"].device.type == "cuda"
