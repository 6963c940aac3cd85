"""DDP: two gloo processes on the CPU apply the same changes (LR cut, rollback) at the same step,
even when rank 0 hits internal errors while deciding; a stop ends both loops at the same step
(no hang)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed unavailable", allow_module_level=True)


def _worker(rank: int, world: int, init: str, url: str, out: str) -> None:
    import torch.distributed as dist

    from rhythmd_client import RhythmHook

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = RhythmHook(url, run_name="ddp", optimizer=opt, model=model, flush_every=8,
                      interval_s=0.02, close_timeout_s=5.0, snapshot_every=10,
                      ddp_sync_every=16)
    if rank == 0:  # the first three decisions blow up: rank 0 must still enter the collective
        real = hook._ddp_decide
        calls = [0]

        def flaky(step: int) -> Any:
            calls[0] += 1
            if calls[0] <= 3:
                raise RuntimeError("injected decision failure")
            return real(step)

        hook._ddp_decide = flaky  # type: ignore[method-assign]
    lrs = []
    seen = []
    last = -1
    for step in hook.steps(3000):
        g = torch.Generator().manual_seed(step)  # same data on both ranks
        loss = model(torch.randn(4, 2, generator=g)).pow(2).mean() + 1.0
        loss.backward()
        opt.step()
        opt.zero_grad()
        hook.step(step, loss=loss)
        lrs.append(opt.param_groups[0]["lr"])
        seen.append(step)
        last = step
        time.sleep(0.002)
    stats = hook.close()
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "lrs": lrs, "seen": seen, "last": last, "stop": hook.should_stop, "stats": stats,
        "applied": hook.applied, "weight": model.weight.detach().tolist()}))
    dist.destroy_process_group()


def test_ddp_two_ranks_agree_and_survive_rank0_errors(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    fake = FakeDaemon().start()
    fake.state.seed_recs = [("reduce_lr", {"factor": 0.5}),
                            ("rollback", {"to_step": 20, "lr_factor": 0.5})]
    done = threading.Event()

    def add_stop_after_first_acks() -> None:
        while not done.is_set():
            runs = list(fake.state.runs.values())
            if runs and len(runs[0]["acks"]) >= 2:
                fake.state.add_rec(runs[0]["run_id"], "stop")
                return
            time.sleep(0.01)

    helper = threading.Thread(target=add_stop_after_first_acks, daemon=True)
    helper.start()
    try:
        init = f"file://{tmp_path / 'pg_init'}"
        mp.spawn(_worker, args=(2, init, fake.url, str(tmp_path)), nprocs=2, join=True)
    finally:
        done.set()
        fake.stop()
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["stop"] and r1["stop"]
    assert r0["last"] == r1["last"] < 2999  # both stopped at the same step
    assert r0["lrs"] == r1["lrs"]  # every LR change at the same step on both ranks
    assert r0["seen"] == r1["seen"] and r0["weight"] == r1["weight"]
    cut = next(i for i, lr in enumerate(r0["lrs"]) if lr < 0.1)
    assert r0["lrs"][cut] == pytest.approx(0.05)
    back = next(i for i in range(1, len(r0["seen"])) if r0["seen"][i] <= r0["seen"][i - 1])
    assert r0["seen"][back] == 21 and r0["seen"][back - 1] > 21  # both resumed after step 20
    assert r0["stats"]["internal_errors"] >= 3 and r1["stats"]["internal_errors"] == 0
    assert [a["action"] for a in r0["applied"]] == ["reduce_lr", "rollback", "stop"]
    assert [a["step"] for a in r0["applied"]] == [a["step"] for a in r1["applied"]]
    run = next(iter(fake.state.runs.values()))
    assert [a["status"] for a in run["acks"]] == ["applied"] * 3
    assert run["finished"]["status"] == "stopped"
    assert run["branches"][1] == 21
