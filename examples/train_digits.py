"""Train an MLP on scikit-learn's digits with a learning rate that diverges, with and without
rhythmd.

    python examples/train_digits.py --lr 1.0 --no-rhythmd          # blows up, ends at NaN
    python examples/train_digits.py --lr 1.0 --url http://127.0.0.1:8000
    python examples/train_digits.py --lr 1.0 --start-daemon         # starts its own daemon

Model: MLP 64-128-128-10 (ReLU), cross-entropy, SGD with momentum 0.9 at a constant LR,
batch 64, 800 steps, a validation evaluation every 20 steps (1437/360 stratified split,
seed 0, inputs standardized with train statistics). No downloads: the data ships with
scikit-learn. Each step lasts at least ``--step-ms`` milliseconds (the rest is slept) so the
daemon's advice arrives while the run is alive, as in a real job.

With rhythmd, ``RhythmHook`` streams the loss, LR and validation loss to the daemon and
applies its recommendations at step boundaries (``mode="apply"``); the model is given to the
hook so that it keeps rollback snapshots. A non-finite loss is answered at once by the hook's
local reflex (restore, cut, re-warm), before the daemon's advice arrives. Exit status: 0 when
the final validation loss is finite, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    f = torch.float32
    return (torch.tensor((xtr - mu) / sd, dtype=f), torch.tensor(ytr),
            torch.tensor((xva - mu) / sd, dtype=f), torch.tensor(yva))


def start_daemon() -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway daemon on a free loopback port with a temporary SQLite file."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = os.path.join(tempfile.mkdtemp(prefix="rhythmd-example-"), "rhythmd.db")
    env = dict(os.environ, RHYTHMD_DATABASE_URL=f"sqlite:///{db}")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the daemon did not start (is rhythmd installed in this Python?)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="digits MLP with (or without) rhythmd")
    ap.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (1.0 diverges)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step-ms", type=float, default=5.0, help="minimum step duration (ms)")
    ap.add_argument("--no-rhythmd", action="store_true", help="train without the hook")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the daemon's URL")
    ap.add_argument("--start-daemon", action="store_true",
                    help="start a throwaway daemon (temporary SQLite) instead of using --url")
    ap.add_argument("--quiet", action="store_true", help="print the summary only")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    xtr, ytr, xva, yva = load_data()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(args.seed)

    daemon: subprocess.Popen[bytes] | None = None
    hook: Any = None
    if not args.no_rhythmd:
        from rhythmd_client import RhythmHook

        url = args.url
        if args.start_daemon:
            daemon, url = start_daemon()
        hook = RhythmHook(url, run_name=f"digits-sgd-lr{args.lr:g}", project="examples",
                          optimizer=opt, model=model, mode="apply", snapshot_every=20,
                          config={"total_steps": args.steps,
                                  "lr": args.lr, "optimizer": "sgd-momentum-0.9"})
    t_start = time.perf_counter()
    vals: dict[int, tuple[float, float]] = {}
    perm, pos, bad_for = torch.randperm(len(xtr), generator=gen), 0, 0
    steps = hook.steps(args.steps) if hook is not None else range(args.steps)
    n_applied = n_reflexes = 0
    try:
        for step in steps:
            t0 = time.perf_counter()
            if pos + args.batch_size > len(xtr):
                perm, pos = torch.randperm(len(xtr), generator=gen), 0
            idx = perm[pos:pos + args.batch_size]
            pos += args.batch_size
            model.train()
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.item()
            if hook is not None:
                hook.step(step, loss=lv)
                # the daemon's advice, and what the hook's local reflex did on its own
                done = hook.applied[n_applied:] + hook.reflexes[n_reflexes:]
                for a in done:
                    lr_b, lr_a = a["lr_before"][0], a["lr_after"][0]
                    who = " (local reflex)" if a in hook.reflexes else ""
                    print(f"  rhythmd: {a['action']}{who} at step {a['step'] + 1}"
                          f" (LR {lr_b:.3g} -> {lr_a:.3g})"
                          + (f", resuming at step {hook.resume_step + 1}"
                             if hook.rolled_back_to is not None else ""), flush=True)
                if hook.rolled_back_to is not None and hook.resume_step is not None:
                    vals = {s: v for s, v in vals.items() if s < hook.resume_step}
                    bad_for = 0
                n_applied, n_reflexes = len(hook.applied), len(hook.reflexes)
                if hook.rolled_back_to is not None:
                    continue
            bad_for = bad_for + 1 if not math.isfinite(lv) else 0
            # without rhythmd nothing will cure a NaN model: stop after 5 more steps; with it,
            # give the daemon up to 200 steps to roll back
            give_up = bad_for > (5 if hook is None else 200)
            if (step + 1) % args.eval_every == 0 or give_up:
                model.eval()
                with torch.no_grad():
                    out = model(xva)
                    v = nn.functional.cross_entropy(out, yva).item()
                    acc = (out.argmax(-1) == yva).float().mean().item()
                vals[step] = (v, acc)
                if hook is not None:
                    hook.log(step, val_loss=v, val_acc=acc)
                if not args.quiet:
                    print(f"step {step + 1:4d}  train {lv:9.4g}  val {v:9.4g}  acc {acc:.3f}  "
                          f"lr {opt.param_groups[0]['lr']:.3g}", flush=True)
            if give_up:
                print(f"train loss non-finite since step {step + 2 - bad_for}: giving up")
                break
            rest = args.step_ms / 1000 - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)
    finally:
        stats = hook.close() if hook is not None else None
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=10)
    last = [vals[s][0] for s in sorted(vals)][-3:]
    final = float(np.mean(last)) if last and all(map(math.isfinite, last)) else math.nan
    acc = vals[max(vals)][1] if vals else math.nan
    print(f"final val loss (mean of last 3 evals) {final:.4g}, final val acc {acc:.3f}, "
          f"{time.perf_counter() - t_start:.1f} s"
          + (f", rhythmd actions applied: {stats['recs_applied']}" if stats else ""))
    return 0 if math.isfinite(final) else 1


if __name__ == "__main__":
    sys.exit(main())
