"""Generate the validation curve corpus: real CPU training runs of task families dev lacks.

Usage: ``nice -n 10 python bench/make_validation.py [--out bench/data/validation] [--jobs 2]``
(``--families a,b`` and ``--limit N`` for a quick look). Writes, in the ``dev`` corpus format:
``runs/<run_id>.csv``, ``manifest.jsonl``, ``labels.jsonl`` (``rhythmd.eval.labels``: the dev
README's fixed criteria), ``task_best.json``, ``summary.json`` and ``README.md``.
The tasks (data, models, losses, injected bad batches) are those of ``bench/_tasks.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import random
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import _tasks as tk  # noqa: E402
from rhythmd.eval.labels import label_run  # noqa: E402

LR_GRID: dict[str, tuple[float, ...]] = {
    "sgd": (1e-4, 1e-3, 1e-2, 0.1, 1.0, 3.0),
    "adam": (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5),
    "adamw": (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5),
}
# family -> training task, validation columns kept, runs drawn from the grid, evaluation
# cadences in steps (each drawn configuration is run once per cadence), steps override
FAMILIES: dict[str, dict[str, Any]] = {
    "cancer_mlp": {"task": "cancer_mlp", "cols": ("val_loss", "val_acc"), "n": 44},
    "cancer_cadence": {"task": "cancer_mlp", "cols": ("val_loss", "val_acc"), "n": 20,
                       "eval_every": (1, 50), "steps": 1000},
    "synth_badbatch": {"task": "synth_badbatch", "cols": ("val_loss", "val_acc"), "n": 44},
    "gnll_reg": {"task": "gnll_reg", "cols": ("val_loss",), "n": 44},
    "char_lm": {"task": "char_lm", "cols": ("val_loss",), "n": 40},
    "synth_acc": {"task": "synth_acc", "cols": ("val_acc",), "n": 44},
}
SEEDS = (0, 1, 2)
NONFINITE_EXTRA_STEPS = 5


def plan(families: list[str]) -> list[dict[str, Any]]:
    """Run specs: per family, ``n`` configurations drawn without replacement from optimizer x
    LR x schedule (fixed RNG per family), each with a drawn seed, once per cadence."""
    specs = []
    for fam in families:
        f = FAMILIES[fam]
        task = tk.TASKS[f["task"]]
        grid = [(o, lr, s) for o in tk.OPTIMIZERS for lr in LR_GRID[o] for s in tk.SCHEDULES]
        rng = random.Random(f"validation/{fam}")
        for o, lr, s in rng.sample(grid, f["n"]):
            seed = rng.choice(SEEDS)
            for ev in f.get("eval_every", (task["eval_every"],)):
                bs = task["batch_size"]
                rid = f"{fam}__{o}__lr{lr:g}__{s}__bs{bs}__s{seed}"
                if len(f.get("eval_every", ())) > 1:
                    rid += f"__ev{ev}"
                specs.append({
                    "run_id": rid, "family": fam, "task": f["task"], "optimizer": o, "lr": lr,
                    "schedule": s, "batch_size": bs, "seed": seed,
                    "steps": f.get("steps", task["steps"]), "eval_every": ev,
                    "bad_batches": [list(x) for x in task.get("bad_batches", ())],
                    "cols": list(f["cols"]),
                })
    return specs


def _g(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def record(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one run; return its CSV text, manifest line and label inputs."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task, n, ev = spec["task"], spec["steps"], spec["eval_every"]
    xtr, ytr, xva, yva = tk.load_task(task)
    torch.manual_seed(spec["seed"])
    model = tk.build_model(task)
    opt = tk.build_optimizer(spec["optimizer"], model.parameters(), spec["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: tk.schedule_factor(spec["schedule"], t, n))
    batches = tk._Batches(len(xtr), spec["batch_size"], spec["seed"])
    bad = tk.bad_steps(task, n)
    rows: list[list[str]] = []
    steps: list[int] = []
    losses: list[float] = []
    val_steps: list[int] = []
    val_loss: list[float] = []
    val_acc: list[float] = []
    bad_since: int | None = None
    for t in range(n):
        model.train()
        lr = float(opt.param_groups[0]["lr"])
        idx = batches.next()
        xb, yb = xtr[idx], ytr[idx]
        if t in bad:
            xb, yb = tk.bad_batch(task, xb, yb, bad[t], spec["seed"] * 100_003 + t)
        loss = tk.loss_fn(task, model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        steps.append(t + 1)
        losses.append(lv)
        if not math.isfinite(lv) and bad_since is None:
            bad_since = t
        give_up = bad_since is not None and t - bad_since >= NONFINITE_EXTRA_STEPS
        row = [str(t + 1), _g(lv), _g(lr)]
        if (t + 1) % ev == 0 or give_up or t == n - 1:
            model.eval()
            v, acc = tk.evaluate(task, model, xva, yva)
            val_steps.append(t + 1)
            val_loss.append(v)
            val_acc.append(acc if acc is not None else math.nan)
            vals = {"val_loss": v, "val_acc": acc}
            row += [_g(vals[c]) for c in spec["cols"]]
        else:
            row += [""] * len(spec["cols"])
        rows.append(row)
        if give_up:
            break
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "train_loss", "lr", *spec["cols"]])
    w.writerows(rows)
    # labels see the values as written (6 significant digits)
    r6 = [float(f"{x:.6g}") for x in losses]
    if "val_loss" in spec["cols"]:
        metric, vals6 = "val_loss", [float(f"{x:.6g}") for x in val_loss]
    else:
        metric, vals6 = "val_error", [1.0 - float(f"{x:.6g}") for x in val_acc]
    accs6 = [float(f"{x:.6g}") for x in val_acc] if "val_acc" in spec["cols"] else None
    return {
        "spec": spec, "csv": buf.getvalue(), "steps": steps, "train_loss": r6,
        "val_steps": val_steps, "val_metric": vals6, "metric": metric, "val_acc": accs6,
        "stopped": "nonfinite" if bad_since is not None else "completed",
        "nonfinite_step": None if bad_since is None else bad_since + 1,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def make_label(rec: dict[str, Any], trivial: float) -> dict[str, Any]:
    spec = rec["spec"]
    lab = label_run(rec["steps"], rec["train_loss"], rec["val_steps"], rec["val_metric"],
                    trivial, rec["val_acc"])
    out = {"run_id": spec["run_id"], "task": spec["family"], "labelled_on": rec["metric"], **lab}
    if rec["metric"] == "val_error":
        out["final_val_error"] = out.pop("final_val_loss")
        out["best_val_error"] = out.pop("best_val_loss")
        out["final_val_loss"] = out["best_val_loss"] = None
    return out


COUNT_KEYS = ("diverged", "diverged_nonfinite", "diverged_blowup", "recovered",
              "diverged_dead", "recovered_spike", "stagnated", "oscillating",
              "stagnated_and_oscillating", "healthy", "healthy_strict")


def counts(labels: list[dict[str, Any]]) -> dict[str, int]:
    kind = [x["divergence_kind"] for x in labels]
    return {
        "runs": len(labels),
        "diverged": sum(x["diverged"] for x in labels),
        "diverged_nonfinite": kind.count("nonfinite"),
        "diverged_blowup": kind.count("blowup"),
        "recovered": sum(x["recovered"] for x in labels),
        "diverged_dead": kind.count("dead"),
        "recovered_spike": sum(x["recovered_spike"] for x in labels),
        "stagnated": sum(x["stagnated"] for x in labels),
        "oscillating": sum(x["oscillating"] for x in labels),
        "stagnated_and_oscillating": sum(x["stagnated"] and x["oscillating"] for x in labels),
        "healthy": sum(x["healthy"] for x in labels),
        "healthy_strict": sum(x["healthy_strict"] for x in labels),
        "rows": sum(x["n_steps"] for x in labels),
    }


def task_best(labels: list[dict[str, Any]], trivial: float) -> dict[str, Any]:
    """Best final / best-anywhere validation metric over a family's runs (and its run)."""
    key = "val_error" if labels[0]["labelled_on"] == "val_error" else "val_loss"
    fin = [x for x in labels if x[f"final_{key}"] is not None]
    anywhere = [x for x in labels if x[f"best_{key}"] is not None]
    out: dict[str, Any] = {"metric": key, "trivial_loss": trivial}
    if fin:
        b = min(fin, key=lambda x: x[f"final_{key}"])
        flags = [k for k in ("recovered_spike", "stagnated", "oscillating") if b[k]]
        out.update({f"best_final_{key}": b[f"final_{key}"], f"best_final_{key}_run": b["run_id"],
                    "best_final_run_flags": flags})
    if anywhere:
        b = min(anywhere, key=lambda x: x[f"best_{key}"])
        out.update({f"best_{key}": b[f"best_{key}"], f"best_{key}_run": b["run_id"]})
    ok = [x[f"final_{key}"] for x in fin if not x["diverged"]]
    out[f"median_final_{key}_non_diverged"] = statistics.median(ok) if ok else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "validation")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--limit", type=int, default=0, help="only the first N runs per family")
    a = ap.parse_args(argv)
    fams = [f for f in a.families.split(",") if f]
    specs = plan(fams)
    if a.limit:
        specs = [s for f in fams for s in [x for x in specs if x["family"] == f][: a.limit]]
    t0 = time.perf_counter()
    with Pool(a.jobs) as pool:
        recs = []
        for i, r in enumerate(pool.imap(record, specs, chunksize=1), 1):
            recs.append(r)
            print(f"[{i:3d}/{len(specs)}] {r['spec']['run_id']:58s} {r['stopped']:9s} "
                  f"{r['wall_s']:5.2f}s", flush=True)
    wall = time.perf_counter() - t0
    (a.out / "runs").mkdir(parents=True, exist_ok=True)
    trivial = {f: tk.trivial_loss(FAMILIES[f]["task"]) for f in fams}
    man, labs = [], []
    for r in recs:
        s = r["spec"]
        (a.out / "runs" / f"{s['run_id']}.csv").write_text(r["csv"])
        cfg = {k: s[k] for k in ("task", "optimizer", "lr", "schedule", "batch_size", "seed",
                                 "steps", "eval_every", "bad_batches")}
        man.append({"run_id": s["run_id"], "task": s["family"], "config": cfg,
                    "file": f"runs/{s['run_id']}.csv", "n_steps": len(r["steps"]),
                    "planned_steps": s["steps"], "stopped": r["stopped"],
                    "nonfinite_step": r["nonfinite_step"], "wall_s": r["wall_s"]})
        labs.append(make_label(r, trivial[s["family"]]))
    (a.out / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in man))
    (a.out / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labs))
    summ = {f: counts([x for x in labs if x["task"] == f]) for f in fams}
    summ["ALL"] = counts(labs)
    (a.out / "summary.json").write_text(json.dumps(summ, indent=1) + "\n")
    best = {f: task_best([x for x in labs if x["task"] == f], trivial[f]) for f in fams}
    (a.out / "task_best.json").write_text(json.dumps(best, indent=2) + "\n")
    (a.out / "README.md").write_text(readme(summ, best, man, labs, wall, a.jobs))
    print(f"{len(recs)} runs in {wall:.0f} s ({a.jobs} jobs) -> {a.out}")
    print(counts_table(summ))
    return 0


def counts_table(summ: dict[str, dict[str, int]]) -> str:
    keys = ["runs", *COUNT_KEYS, "rows"]
    lines = ["| family | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for f, c in summ.items():
        lines.append(f"| {f} | " + " | ".join(str(c[k]) for k in keys) + " |")
    return "\n".join(lines)


def readme(summ: dict[str, dict[str, int]], best: dict[str, Any], man: list[dict[str, Any]],
           labels: list[dict[str, Any]], wall: float, jobs: int) -> str:
    fams = [f for f in summ if f != "ALL"]
    grid_rows = []
    for f in fams:
        ms = [m for m in man if m["task"] == f]
        evs = sorted({m["config"]["eval_every"] for m in ms})
        grid_rows.append(f"| {f} | {FAMILIES[f]['task']} | {len(ms)} | {ms[0]['planned_steps']} "
                         f"| {', '.join(map(str, evs))} | {ms[0]['config']['batch_size']} | "
                         f"{', '.join(FAMILIES[f]['cols'])} |")
    best_rows = []
    for f in fams:
        b = best[f]
        k = b["metric"]
        best_rows.append(f"| {f} | {k} | {b.get(f'best_final_{k}')} | "
                         f"`{b.get(f'best_final_{k}_run')}` | {b['trivial_loss']:.6g} |")
    by_id = {x["run_id"]: x for x in labels}
    pairs = [(x, by_id[x["run_id"][:-1] + "50"]) for x in labels
             if x["run_id"].endswith("__ev1") and x["run_id"][:-1] + "50" in by_id]
    differ = sum((a["stagnation_onset"], a["oscillation_onset"])
                 != (b["stagnation_onset"], b["oscillation_onset"]) for a, b in pairs)
    same_div = sum((a["divergence_kind"], a["blowup_step"], a["spike_steps"])
                   == (b["divergence_kind"], b["blowup_step"], b["spike_steps"])
                   for a, b in pairs)
    lrs = "; ".join(f"{o} {{{', '.join(f'{x:g}' for x in v)}}}" for o, v in LR_GRID.items())
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    return f"""# Validation curve corpus

Real training runs of task families the `dev` corpus lacks, in the dev corpus's format
(`runs/*.csv`, `manifest.jsonl`, `labels.jsonl`, `task_best.json`, `summary.json`). Generated
{date} by `bench/make_validation.py` on a 2-core CI-class machine (torch {torch.__version__},
one torch thread per run, {jobs} runs in parallel, {wall:.0f} s in all). Purpose: score the
detectors on data they were never tuned on. Do not tune against it.

## Families

Tasks, models and data are those of `bench/_tasks.py` (its docstring has the details).

- `cancer_mlp`: scikit-learn breast cancer, 2 classes, **40-sample validation set**;
  `val_loss`, `val_acc`.
- `cancer_cadence`: the same task, 1000 steps; each drawn configuration run twice, evaluated
  every **1** and every **50** steps (same seed, so the same training; `__ev1` / `__ev50`).
- `synth_badbatch`: the data of `synth_acc` with `val_loss` and `val_acc`; **three injected bad
  minibatches** at 30 %, 50 % and 70 % of the steps (labels shuffled, inputs x100, labels
  shuffled).
- `gnll_reg`: heteroscedastic synthetic regression, `GaussianNLLLoss` (mean and log-variance
  heads): **the loss goes negative**; `val_loss` only.
- `char_lm`: character-level transformer LM (2 layers, d 64, context 32) on the GNU GPL v3
  text; `val_loss` every 10 steps.
- `synth_acc`: 5-class synthetic classification that logs **only `val_acc`** (no validation
  loss column).

| family | task | runs | steps | eval every (steps) | batch | validation columns |
|---|---|---|---|---|---|---|
{chr(10).join(grid_rows)}

Grid: per family, configurations drawn without replacement (fixed RNG per family) from
optimizer x LR x schedule, each with a seed drawn from {{0, 1, 2}}. Optimizers: `sgd`
(momentum 0.9), `adam`, `adamw` (weight decay 0.05). LRs: {lrs}. Schedules as in dev:
`constant`, `multistep`, `cosine`, `warmup_cosine`. After a non-finite train loss a run records
5 more steps (evaluated at the last) and stops. Floats have 6 significant digits.

## Labels

`rhythmd/eval/labels.py`, the dev README's fixed criteria (it reproduces all dev labels). T
(`trivial_loss`) is the train loss of the best constant predictor: the entropy of the train
class (or character) frequencies, and for `gnll_reg` (log var(y) + 1) / 2 = 0.5 (torch's
`GaussianNLLLoss` without its constant). Two generalisations, both identical on dev:

- the relative thresholds of the stagnation and oscillation rules use |B_s| and |median|, so
  a negative validation loss is judged by the same relative change;
- `synth_acc` has no validation loss: stagnation and oscillation are labelled on the
  validation error 1 - `val_acc` (`labelled_on` = `val_error`; `final_val_error`,
  `best_val_error` instead of the val-loss fields).

| family | {" | ".join(["runs", *COUNT_KEYS, "rows"])} |
|---{"|---" * (len(COUNT_KEYS) + 2)}|
{chr(10).join(counts_table(summ).splitlines()[2:])}

## Best over the grid (`task_best.json`)

| family | metric | best final | run | T |
|---|---|---|---|---|
{chr(10).join(best_rows)}

## Caveats

- The fixed criteria count the stagnation median (3) and the oscillation windows (8) in
  evaluations, not steps. In `cancer_cadence` the two runs of a pair train identically
  (divergence and spike labels equal in {same_div} of {len(pairs)} pairs) but their stagnation or
  oscillation labels differ in {differ} of {len(pairs)} pairs (evaluated every step, the 8
  evaluations of an oscillation window span 8 steps). Compare a detector's verdicts within a
  pair as well as against the labels.
- Labels are computed from the full curve (post hoc); an online detector sees only the prefix.
"""


if __name__ == "__main__":
    sys.exit(main())
