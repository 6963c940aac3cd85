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
