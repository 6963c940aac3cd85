"""The real client hook in a real torch loop while the daemon is down, then back.

The loop keeps its step time (mean within a generous 3x of a bare loop measured in the same
test, no single step above 0.5 s), the hook buffers within ``max_buffer_points`` and reports
what it dropped beyond, and streaming resumes by itself once the daemon is back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

torch = pytest.importorskip("torch")

_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
if str(_CLIENT) not in sys.path:
    sys.path.insert(0, str(_CLIENT))
hook_mod = pytest.importorskip("rhythmd_client.hook")

from tests.conftest import Daemon  # noqa: E402

DOWN_STEPS = 800
UP_STEPS = 400
BUFFER_POINTS = 600  # loss + lr per step: 1,600 points while down, so some must be dropped


def _model() -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(256, 64)
    y = torch.randn(256, 1)
    return model, opt, x, y


def _train(n: int, start: int, model: Any, opt: Any, x: Any, y: Any,
           hook: Any = None) -> list[float]:
    """``n`` optimizer steps; the wall time of each (the hook call included)."""
    times = []
    loss_fn = torch.nn.MSELoss()
    for step in range(start, start + n):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if hook is not None:
            hook.step(step, loss.detach())
        times.append(time.perf_counter() - t0)
    return times


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_hook_keeps_step_time_while_daemon_down_and_resumes(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier step times; restored below
    daemon = Daemon(f"sqlite:///{tmp_path / 'rhythmd.db'}", log_path=tmp_path / "daemon.log")
    model, opt, x, y = _model()
    _train(50, 0, model, opt, x, y)  # warm-up
    bare = _train(DOWN_STEPS, 0, model, opt, x, y)

    hook = hook_mod.RhythmHook(daemon.url, run_name="down-then-up", optimizer=opt,
                               mode="advise", flush_every=16, interval_s=0.05, timeout_s=1.0,
                               max_buffer_points=BUFFER_POINTS, close_timeout_s=10.0)
    try:
        down = _train(DOWN_STEPS, 0, model, opt, x, y, hook)  # nobody listens on the port
        hook.flush()  # hand over the steps still in the ring
        time.sleep(0.3)  # let the sender take them
        stats_down = hook.stats
        print(f"\nbare loop {_mean(bare) * 1e3:.3f} ms/step, daemon down "
              f"{_mean(down) * 1e3:.3f} ms/step (max {max(down) * 1e3:.1f} ms); "
              f"stats while down: {stats_down}")
        assert _mean(down) < 3 * _mean(bare) + 1e-4
        assert max(down) < 0.5
        assert stats_down["sent"] == 0
        assert stats_down["buffered"] <= BUFFER_POINTS
        produced = 2 * DOWN_STEPS  # loss and lr per step
        assert stats_down["dropped"] >= produced - BUFFER_POINTS
        assert stats_down["dropped"] + stats_down["buffered"] == produced

        daemon.start()
        # Keep training; the sender notices the daemon at its next retry (backoff <= 10 s).
        step = DOWN_STEPS
        deadline = time.monotonic() + 30
        while hook.stats["sent"] == 0:
            assert time.monotonic() < deadline, "the hook did not resume streaming"
            assert max(_train(20, step, model, opt, x, y, hook)) < 0.5
            step += 20
            time.sleep(0.01)
        resumed_at = step
        up = _train(UP_STEPS, step, model, opt, x, y, hook)  # streamed live: all must arrive
        step += UP_STEPS
        assert max(up) < 0.5
        hook.flush()  # the last steps of the ring (a live loop hands them over next step)
        rid = hook.run_id
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            r = httpx.get(f"{daemon.url}/v1/runs/{rid}", timeout=5)
            if r.status_code == 200:
                last = r.json()
                if last["last_step"] == step - 1:
                    break
            time.sleep(0.1)
        assert last is not None and last["last_step"] == step - 1, last
        final = hook.close()
        hook = None
        total = 2 * step
        run = httpx.get(f"{daemon.url}/v1/runs/{rid}", timeout=5).json()
        print(f"after the daemon came back: {final}; stored {run['n_points']} of {total}")
        assert final["buffered"] == 0
        assert final["sent"] + final["dropped"] == total
        assert run["n_points"] == final["sent"]
        loss = httpx.get(f"{daemon.url}/v1/runs/{rid}/metrics/loss",
                         params={"branch": "all"}, timeout=5).json()
        assert len(set(loss["steps"])) == len(loss["steps"]), "a step was stored twice"
        assert set(range(resumed_at, step)) <= set(loss["steps"])
    finally:
        if hook is not None:
            hook.close()
        daemon.stop()
        torch.set_num_threads(threads)
