"""Per-step cost of ``RhythmHook.step`` against the bare loop, in the same process.

For each scenario (daemon up, daemon down; float and tensor losses) it runs the same loop
without and with the hook and prints, in nanoseconds per step: the loop-time difference
(includes flushes and whatever the sender thread takes from the training thread through the
GIL), and per-call timings of ``hook.step`` alone (mean, p99.9, worst). Device syncs per step
are checked on CUDA with ``torch.cuda.set_sync_debug_mode("error")`` (skipped without CUDA).

    .venv/bin/python bench/hook_overhead.py [--steps 1000000] [--real | --url URL]

The daemon runs in its own process, as in production: by default the stdlib fake daemon
(tests/client/fake_daemon.py, counting points only); ``--real`` starts the real daemon
(uvicorn, SQLite in a temporary folder); ``--url`` uses a running one. Each hooked loop must
last several sender rounds (250 ms), so keep ``--steps`` at a million or so.
"""

from __future__ import annotations

import argparse
import array
import gc
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python"))

import torch  # noqa: E402

from rhythmd_client import RhythmHook  # noqa: E402

_ns = time.perf_counter_ns


def _losses(kind: str, device: str, n: int = 1024) -> list[Any]:
    if kind == "float":
        return [0.5 + i * 1e-4 for i in range(n)]
    w = torch.ones((), device=device, requires_grad=True)
    return [w * (0.5 + i * 1e-4) for i in range(n)]  # like a loss: has a grad_fn


def _bare(steps: int, losses: list[Any]) -> float:
    """Loop time per step (ns) without the hook."""
    m = len(losses) - 1
    t0 = _ns()
    for step in range(steps):
        loss = losses[step & m]
        del loss
    return (_ns() - t0) / steps


def _with_hook(hook: RhythmHook, steps: int, losses: list[Any]) -> tuple[float, list[int]]:
    """Loop time per step (ns) with ``hook.step`` and the per-call times (ns)."""
    m = len(losses) - 1
    calls = array.array("q", bytes(8 * steps))  # not traversed by the GC, unlike a list
    hstep = hook.step
    t0 = _ns()
    for step in range(steps):
        loss = losses[step & m]
        a = _ns()
        hstep(step, loss=loss)
        calls[step] = _ns() - a
    return (_ns() - t0) / steps, calls


def _timer_cost(steps: int) -> float:
    """Cost of the two perf_counter_ns calls around each hook.step (ns), for reference."""
    t0 = _ns()
    for _ in range(steps):
        a = _ns()
        _ = _ns() - a
    return (_ns() - t0) / steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(real: bool) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake (count-only) or the real daemon in a subprocess; return it and its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if real:
        db = os.path.join(tempfile.mkdtemp(prefix="rhythmd-bench-"), "bench.db")
        cmd = [sys.executable, "-m", "uvicorn", "rhythmd.app:create_app", "--factory",
               "--port", str(port), "--log-level", "warning"]
        env = {**os.environ, "RHYTHMD_DATABASE_URL": f"sqlite:///{db}"}
    else:
        cmd = [sys.executable, str(ROOT / "tests" / "client" / "fake_daemon.py"), str(port),
               "--count-only"]
        env = dict(os.environ)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/runs/none/recommendations", timeout=1)
        except urllib.error.HTTPError:
            return proc, url  # it answers (404)
        except OSError:
            time.sleep(0.1)
        else:
            return proc, url
    proc.kill()
    raise RuntimeError("daemon did not start")


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens after close


def run(url: str, label: str, kind: str, steps: int, device: str = "cpu") -> dict[str, float]:
    losses = _losses(kind, device)
    param = torch.nn.Parameter(torch.zeros(4, device=device))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10_000)
    hook = RhythmHook(url, run_name=f"bench-{label}-{kind}", project="bench", optimizer=opt,
                      scheduler=sched, timeout_s=1.0, close_timeout_s=2.0)
    _with_hook(hook, min(steps, 20_000), losses)  # warm up (run creation, first batches)
    bare = min(_bare(steps, losses) for _ in range(3))
    loop, calls = _with_hook(hook, steps, losses)
    stats = hook.close()
    calls = sorted(calls)
    res = {
        "bare_ns": bare,
        "loop_ns": loop,
        "loop_minus_bare_ns": loop - bare,
        "call_mean_ns": sum(calls) / len(calls),
        "call_p50_ns": calls[len(calls) // 2],
        "call_p999_ns": calls[int(len(calls) * 0.999)],
        "call_max_ns": calls[-1],
    }
    print(f"{label:12s} {kind:6s} {device:4s} bare {bare:7.0f}  loop-bare {loop - bare:7.0f}  "
          f"call mean {res['call_mean_ns']:6.0f}  p50 {res['call_p50_ns']:6.0f}  "
          f"p99.9 {res['call_p999_ns']:7.0f}  max {res['call_max_ns'] / 1e3:9.1f} µs  | "
          f"sent {stats['sent']} dropped {stats['dropped']} buffered {stats['buffered']} "
          f"retried {stats['retried']}")
    return res


def cuda_sync_check(steps: int = 5_000) -> None:
    """Run the hook on CUDA losses with sync debug mode "error": any sync raises."""
    if not torch.cuda.is_available():
        print("device syncs per step: skipped (no CUDA)")
        return
    losses = _losses("tensor", "cuda", 256)
    param = torch.nn.Parameter(torch.zeros(4, device="cuda"))
    opt = torch.optim.SGD([param], lr=0.1)
    hook = RhythmHook(_dead_url(), run_name="sync-check", optimizer=opt, timeout_s=0.5,
                      close_timeout_s=0.5)
    errors_before = hook.stats["internal_errors"]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(steps):
            hook.step(step, loss=losses[step % 256])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = hook.stats["internal_errors"] - errors_before  # a sync would raise inside step
    hook.close()
    print(f"device syncs per step: {syncs / steps:.3f} over {steps} CUDA steps "
          f"(sync debug mode 'error')")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--url", default=None, help="a running daemon (default: start one)")
    ap.add_argument("--real", action="store_true", help="start the real daemon, not the fake")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after setup, as latency-minded training scripts do: full "
                         "collections then skip torch's ~165k import-time objects")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{args.steps} steps per run; per-call timer cost {_timer_cost(args.steps):.0f} ns "
          "(included in call numbers)")
    proc = None
    url = args.url
    if url is None:
        proc, url = start_daemon(args.real)
    print(f"daemon: {'given ' + url if args.url else 'real' if args.real else 'fake'} "
          "(own process)")
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    print(f"gc.freeze(): {'yes' if args.gc_freeze else 'no'}")
    try:
        for kind in ("float", "tensor"):
            run(url, "daemon-up", kind, args.steps)
            run(_dead_url(), "daemon-down", kind, args.steps)
        if torch.cuda.is_available():
            run(url, "daemon-up", "tensor", args.steps, device="cuda")
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    cuda_sync_check()


if __name__ == "__main__":
    main()
