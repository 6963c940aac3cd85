"""CUDA losses: no device sync in the hook (sync debug mode "error"), values intact, side
streams respected. Skipped without CUDA."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from rhythmd_client import RhythmHook  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    yield d
    d.stop()


def test_cuda_losses_without_syncs_and_with_a_side_stream(fake: FakeDaemon) -> None:
    model = torch.nn.Linear(64, 1).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = RhythmHook(fake.url, run_name="cuda", optimizer=opt, flush_every=16,
                      interval_s=0.02)
    side = torch.cuda.Stream()
    kept = []
    fake.state.seed_recs = [("reduce_lr", {"factor": 0.5})]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(600):
            stream = side if step % 200 >= 100 else torch.cuda.current_stream()
            with torch.cuda.stream(stream):
                x = torch.randn(256, 64, device="cuda")
                loss = model(x).pow(2).mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                big = torch.randn(512, 512, device="cuda")
                for _ in range(4):  # keep the GPU behind the CPU
                    big = big @ big * 1e-3
                if step == 5:  # a non-finite value is data (not backpropagated here)
                    loss = loss.detach() * float("nan")
                hook.step(step, loss=loss, grad_norm=loss.detach() * 2)  # current stream: side
                kept.append(loss.detach().clone())
            if step % 50 == 0:
                time.sleep(0.005)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    stats = hook.close()
    assert stats["internal_errors"] == 0 and stats["dropped"] == 0
    assert stats["recs_applied"] == 1
    want = torch.stack(kept).float().cpu().tolist()
    got = fake.state.points(hook.run_id, "loss")
    assert [s for s, _ in got] == list(range(600))
    assert math.isnan(got[5][1])
    for (_, v), w in zip(got, want, strict=True):
        if not math.isnan(w):
            assert v == pytest.approx(w, rel=1e-6)
    assert sum(math.isnan(v) for _, v in got) == 1
    gn = fake.state.points(hook.run_id, "grad_norm")
    assert [s for s, _ in gn] == list(range(600))
    assert gn[10][1] == pytest.approx(2 * want[10], rel=1e-6)
    assert gn[450][1] == pytest.approx(2 * want[450], rel=1e-6)


@pytest.mark.parametrize("with_model", [False, True])
def test_reflex_on_a_cuda_loss_acts_when_the_value_reaches_the_host(fake: FakeDaemon,
                                                                    with_model: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 1).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = RhythmHook(fake.url, run_name="cuda-reflex", optimizer=opt, flush_every=16,
                      interval_s=0.02, model=model if with_model else None,
                      snapshot_every=10)
    x = torch.randn(256, 64, device="cuda")
    seen: list[int] = []
    torch.cuda.synchronize()
    if not with_model:  # snapshots copy to the host (a sync by design): checked without them
        torch.cuda.set_sync_debug_mode("error")
    try:
        for step in hook.steps(400):
            seen.append(step)
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step == 50 and not hook.reflexes:
                loss = loss.detach() * float("nan")
            hook.step(step, loss=loss.detach())
            if hook.reflexes and step >= hook.reflexes[0]["step"] + 30:
                break
            time.sleep(0.002)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    stats = hook.close()
    assert stats["reflexes"] == 1 and stats["internal_errors"] == 0
    (rx,) = hook.reflexes
    assert rx["bad_step"] == 50 and rx["step"] >= 50  # known at a flush, not at once
    if with_model:
        assert rx["action"] == "rollback" and rx["params"]["to_step"] <= 48
        assert seen.count(rx["params"]["to_step"] + 1) == 2  # the loop resumed after it
    else:
        assert rx["action"] == "warmup" and hook.branch == 0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1)  # re-warmed to the cut
