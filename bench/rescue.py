"""Rescue benchmark: does the closed loop (daemon + policy + hook) save badly configured runs?

Every configuration of a grid (optimizer x LR x schedule, see ``_tasks.py``) of the dev tasks
(``digits_mlp``, ``diabetes_mlp``) and of three families the dev corpus lacks (``cancer_mlp``:
40-sample validation set; ``synth_badbatch``: injected bad minibatches; ``char_lm``: a
character-level transformer) is trained three ways in the same benchmark: as configured;
with torch's ``ReduceLROnPlateau`` (defaults, stepped on the validation loss at each
evaluation); and with the rhythmd hook in ``apply`` mode against a real daemon that the
benchmark starts (one daemon process, SQLite, one run per configuration).

Definitions: a run's *final* = mean of its last 3 validation losses; a task's *reference* =
median of the 5 lowest finals of its grid as configured; *failing*: final non-finite or
> 1.25x reference as configured; *good*: <= 1.1x reference as configured. Per mode:
``rescued`` = % of failing configurations ending within 1.5x the reference;
``median_fail`` = median final/reference over the failing ones (non-finite counts as 100);
``mean_log`` = mean log(final/reference) over all configurations, ratios capped at 100
(non-finite = log 100); ``harmed`` = % of good configurations made more than 5 % worse than
as configured. From the hook's acks, per mode: *changes tried* (applied ``reduce_lr``,
``increase_lr``, ``warmup``, ``set_schedule``; plateau cuts for ``plateau``), *reverted* (named
by an applied ``revert``), *kept* (tried - reverted), rollbacks, local reflexes, and the compute
overhead: *re-run steps* = steps executed beyond the final branch (after rollbacks, reverts and
reflex restores), in % of the final branches' steps.

Usage::

    .venv/bin/python bench/rescue.py --grid small --jobs 2 --out rescue.json
    .venv/bin/python bench/rescue.py --grid full --jobs 2 --out rescue-full.json
    # re-run only the rhythmd mode, reusing the other two modes from an earlier result:
    .venv/bin/python bench/rescue.py --grid small --modes rhythmd --reuse rescue.json
    # smoke test: per task its good configuration and its failing ones (``_tasks.QUICK``)
    .venv/bin/python bench/rescue.py --quick --tasks new --out rescue-quick.json

Grids: ``full`` = 3 optimizers x 8 LRs x 4 schedules = 96 configurations per task; ``small``
= 3 optimizers x 8 LRs x {constant, warmup_cosine} = 48 per task (the schedules with the most
failures and the one that exercises warmup handling); ``--quick`` = ``_tasks.QUICK``.
``--tasks`` takes task names or the groups ``dev``, ``new`` and ``all`` (the default).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._tasks import (  # noqa: E402
    LR_GRID,
    MODES,
    OPTIMIZERS,
    QUICK,
    SCHEDULES,
    RunConfig,
    train,
)

GRIDS = {"full": SCHEDULES, "small": ("constant", "warmup_cosine")}
TASK_GROUPS = {"dev": ("digits_mlp", "diabetes_mlp"),
               "new": ("cancer_mlp", "synth_badbatch", "char_lm")}
TASK_GROUPS["all"] = TASK_GROUPS["dev"] + TASK_GROUPS["new"]
CAP = 100.0  # ratios above this (and non-finite finals) count as 100


def grid(kind: str, tasks: list[str]) -> list[RunConfig]:
    if kind == "quick":
        return [RunConfig(task=t, optimizer=o, lr=lr, schedule=s)
                for t in tasks for o, lr, s in (QUICK[t]["good"], *QUICK[t]["failing"])]
    return [RunConfig(task=t, optimizer=o, lr=lr, schedule=s)
            for t in tasks for o in OPTIMIZERS for lr in LR_GRID[o] for s in GRIDS[kind]]


def expand_tasks(spec: str) -> list[str]:
    out: list[str] = []
    for x in (t for t in spec.split(",") if t):
        for t in TASK_GROUPS.get(x, (x,)):
            if t not in out:
                out.append(t)
    return out


# ---------------------------------------------------------------------------- daemon
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(db_dir: str, timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start one daemon (SQLite in ``db_dir``) on a free loopback port; wait for /healthz."""
    import httpx

    port = _free_port()
    env = dict(os.environ, RHYTHMD_DATABASE_URL=f"sqlite:///{db_dir}/rescue.db",
               RHYTHMD_LOG_LEVEL="info")
    log = open(Path(db_dir) / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}; see {db_dir}/daemon.log")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"daemon did not answer within {timeout_s} s")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------- workers
def _init_worker() -> None:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("rhythmd_client").setLevel(logging.ERROR)


def _run_one(cfg: RunConfig, mode: str, url: str | None, min_step_s: float,
             snapshot_every: int) -> dict[str, Any]:
    return train(cfg, mode, url, min_step_s=min_step_s, snapshot_every=snapshot_every,
                 project="rescue-bench").to_dict()


# ---------------------------------------------------------------------------- scoring
def _ratio(final: float, ref: float) -> float:
    if not math.isfinite(final) or ref <= 0:
        return CAP
    return min(max(final / ref, 1e-12), CAP)


def score(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per task and overall: references, failing/good sets and the four figures per mode."""
    by: dict[tuple[str, str], dict[str, Any]] = {(r["name"], r["mode"]): r for r in rows}
    names = sorted({r["name"] for r in rows if r["mode"] == "configured"})
    tasks = sorted({by[(n, "configured")]["config"]["task"] for n in names})
    refs: dict[str, float] = {}
    for t in tasks:
        finals = sorted(by[(n, "configured")]["final"] for n in names
                        if by[(n, "configured")]["config"]["task"] == t
                        and math.isfinite(by[(n, "configured")]["final"]))
        refs[t] = statistics.median(finals[:5]) if finals else math.nan
    per_config = []
    for n in names:
        base = by[(n, "configured")]
        t = base["config"]["task"]
        ref = refs[t]
        ratio0 = _ratio(base["final"], ref)
        entry: dict[str, Any] = {"name": n, "task": t, "ref": ref,
                                 "failing": ratio0 > 1.25, "good": ratio0 <= 1.1}
        for m in modes:
            r = by.get((n, m))
            if r is None:
                continue
            entry[m] = {"final": r["final"], "best": r["best"], "ratio": _ratio(r["final"], ref),
                        "lr_changes": r["lr_changes"], "rollbacks": r["rollbacks"],
                        "stopped_early": r["stopped_early"], "steps_run": r["steps_run"],
                        "final_steps": r["last_step"] + 1,
                        "rerun_steps": r.get("rerun_steps", 0),
                        "tried": r.get("changes_tried", r["lr_changes"]),
                        "reverted": r.get("changes_reverted", 0),
                        "reflexes": r.get("reflexes", 0),
                        "actions": [a["action"] for a in r.get("applied", [])]}
        per_config.append(entry)

    def figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(entries), "n_failing": sum(e["failing"] for e in entries),
                               "n_good": sum(e["good"] for e in entries)}
        for m in modes:
            es = [e for e in entries if m in e]
            fail = [e for e in es if e["failing"]]
            good = [e for e in es if e["good"]]
            harmed = [e for e in good if e[m]["ratio"] > 1.05 * e["configured"]["ratio"]]
            tried = sum(e[m]["tried"] for e in es)
            reverted = sum(e[m]["reverted"] for e in es)
            final_steps = sum(e[m]["final_steps"] for e in es)
            rerun = sum(e[m]["rerun_steps"] for e in es)
            out[m] = {
                "n_rescued": sum(e[m]["ratio"] <= 1.5 for e in fail),
                "changes_tried": tried, "changes_reverted": reverted,
                "changes_kept": tried - reverted,
                "rollbacks": sum(e[m]["rollbacks"] for e in es),
                "reflexes": sum(e[m]["reflexes"] for e in es),
                "rerun_steps": rerun,
                "rerun_pct": 100.0 * rerun / final_steps if final_steps else math.nan,
                "worst_harmed_x": max((e[m]["ratio"] / e["configured"]["ratio"] for e in harmed),
                                      default=math.nan),
                "rescued_pct": 100.0 * sum(e[m]["ratio"] <= 1.5 for e in fail) / len(fail)
                if fail else math.nan,
                "median_fail_ratio": statistics.median(e[m]["ratio"] for e in fail)
                if fail else math.nan,
                "mean_log_ratio": statistics.fmean(math.log(e[m]["ratio"]) for e in es)
                if es else math.nan,
                "harmed_pct": 100.0 * len(harmed) / len(good) if good else math.nan,
                "harmed": [e["name"] for e in harmed],
                "n_harmed": len(harmed),
            }
        return out

    summary = {"all": figures(per_config)}
    for t in tasks:
        summary[t] = figures([e for e in per_config if e["task"] == t])
    return {"refs": refs, "summary": summary, "per_config": per_config}


def _fmt(v: float, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return format(v, spec)


def print_report(sc: dict[str, Any], modes: list[str]) -> None:
    print("\nper configuration (final / best validation loss; t = LR changes tried, "
          "v = reverted, r = rollbacks, x = reflexes, S = daemon stop):")
    head = f"{'configuration':46s} {'fail':>4s}"
    for m in modes:
        head += f" | {m:>30s}"
    print(head)
    for e in sc["per_config"]:
        flag = "F" if e["failing"] else ("G" if e["good"] else "")
        line = f"{e['name']:46s} {flag:>4s}"
        for m in modes:
            if m not in e:
                line += f" | {'-':>30s}"
                continue
            x = e[m]
            extra = f"{x['tried']}t{x['reverted']}v{x['rollbacks']}r{x['reflexes']}x"
            if x["stopped_early"] == "daemon_stop":
                extra += "S"
            line += f" | {_fmt(x['final'], '.4g'):>9s} {_fmt(x['best'], '.4g'):>9s} {extra:>10s}"
        print(line)
    print("\nreferences:", {k: round(v, 5) for k, v in sc["refs"].items()})
    print(summary_table(sc, modes))


def summary_table(sc: dict[str, Any], modes: list[str]) -> str:
    """The per-scope, per-mode figures as a markdown table."""
    rows = [
        "| scope | mode | configs | failing within 1.5x ref | mean log ratio | "
        "median ratio (failing) | good runs harmed (> 5 % worse) | worst harmed | "
        "changes tried / kept / reverted | rollbacks | reflexes | re-run steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scope, fig in sc["summary"].items():
        for m in modes:
            if m not in fig:
                continue
            f = fig[m]
            pct = ("-" if math.isnan(f["rescued_pct"]) else f"{f['rescued_pct']:.0f} %")
            worst = ("-" if math.isnan(f["worst_harmed_x"]) else f"{f['worst_harmed_x']:.2f}x")
            med = _fmt(f["median_fail_ratio"], ".2f").replace("nan", "-")
            rows.append(
                f"| {scope} | {m} | {fig['n']} | {pct} "
                f"({f['n_rescued']}/{fig['n_failing']}) | {_fmt(f['mean_log_ratio'], '.2f')} | "
                f"{med} | {f['n_harmed']} of {fig['n_good']} | "
                f"{worst} | {f['changes_tried']} / "
                f"{f['changes_kept']} / {f['changes_reverted']} | {f['rollbacks']} | "
                f"{f['reflexes']} | {f['rerun_steps']} ({_fmt(f['rerun_pct'], '.1f')} %) |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    ap.add_argument("--quick", action="store_true",
                    help="per task only its good and failing configurations (_tasks.QUICK)")
    ap.add_argument("--tasks", default="all",
                    help="comma-separated task names or groups (dev, new, all)")
    ap.add_argument("--markdown", help="also write the summary table (markdown) here")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="modes to run (configured is always needed: reuse it or run it)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    ap.add_argument("--min-step-ms", type=float, default=5.0,
                    help="minimum wall time of one training step (the rest is slept)")
    ap.add_argument("--snapshot-every", type=int, default=20, help="hook snapshot interval")
    ap.add_argument("--reuse", help="JSON of an earlier run: take the modes not run from it")
    ap.add_argument("--limit", type=int, default=0, help="only the first N configurations")
    ap.add_argument("--out", help="write the JSON results here")
    args = ap.parse_args(argv)

    tasks = expand_tasks(args.tasks)
    if args.quick:
        args.grid = "quick"
    cfgs = grid(args.grid, tasks)
    if args.limit:
        cfgs = cfgs[:args.limit]
    modes = [m for m in args.modes.split(",") if m]
    names = {c.name for c in cfgs}
    reused: list[dict[str, Any]] = []
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        reused = [r for r in old["runs"] if r["name"] in names and r["mode"] not in modes]
    all_modes = [m for m in MODES if m in modes or any(r["mode"] == m for r in reused)]
    if "configured" not in all_modes:
        ap.error("the 'configured' mode is needed (run it or --reuse it)")

    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="rhythmd-rescue-")
    proc, url = (start_daemon(tmp) if "rhythmd" in modes else (None, None))
    print(f"grid {args.grid}: {len(cfgs)} configurations x modes {modes} "
          f"({len(reused)} runs reused), jobs {args.jobs}, min step {args.min_step_ms} ms"
          + (f", daemon {url} (db in {tmp})" if url else ""), flush=True)
    rows: list[dict[str, Any]] = list(reused)
    jobs = [(c, m) for c in cfgs for m in modes]
    try:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker) as ex:
            futs = {ex.submit(_run_one, c, m, url, args.min_step_ms / 1000.0,
                              args.snapshot_every): (c, m) for c, m in jobs}
            for done, fut in enumerate(cf.as_completed(futs), 1):
                c, m = futs[fut]
                r = fut.result()
                rows.append(r)
                acts = ",".join(a["action"] for a in r["applied"]) or "-"
                print(f"[{done:3d}/{len(jobs)}] {c.name:46s} {m:10s} final "
                      f"{_fmt(r['final'], '.4g'):>9s}  {r['wall_s']:5.1f}s  {acts}", flush=True)
    finally:
        if proc is not None:
            if proc.poll() is not None:
                print(f"WARNING: the daemon exited early ({proc.returncode}); see {tmp}",
                      flush=True)
            stop_daemon(proc)
    lost = [r["name"] for r in rows if r["mode"] == "rhythmd" and r["name"] in names
            and not r["hook_stats"].get("batches")]
    if lost:
        print(f"WARNING: {len(lost)} rhythmd runs never reached the daemon: {lost[:5]}...")
    wall = time.perf_counter() - t0
    sc = score(rows, all_modes)
    print_report(sc, all_modes)
    print(f"\nwall time {wall:.0f} s for {len(jobs)} runs ({args.jobs} jobs)")
    if args.out:
        doc = {"grid": args.grid, "tasks": tasks, "modes": all_modes, "jobs": args.jobs,
               "min_step_ms": args.min_step_ms, "snapshot_every": args.snapshot_every,
               "wall_s": round(wall, 1), "n_runs_this_invocation": len(jobs),
               "refs": sc["refs"], "summary": sc["summary"], "per_config": sc["per_config"],
               "runs": rows}
        Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(summary_table(sc, all_modes) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
