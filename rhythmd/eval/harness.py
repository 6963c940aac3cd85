"""Replay a curve corpus through the online analyzer and score it against the labels.

Usage: ``python bench/eval_detectors.py CORPUS_DIR [--jobs N] [--limit N] [--task T]``.
``CORPUS_DIR`` is either a ``dev``-style corpus (``manifest.jsonl`` + ``labels.jsonl``) or the
``public`` corpus (``labels.csv``). Every curve is streamed in batches of ``--batch`` steps
through ``RunAnalyzer.feed`` exactly as the daemon would; the baselines in
``rhythmd.eval.baselines`` see the same points in step order.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from rhythmd.analysis.analyzer import RunAnalyzer
from rhythmd.analysis.offline import read_csv_columns, replay
from rhythmd.analysis.types import AnalysisConfig, DiagnosisEvent
from rhythmd.eval.baselines import ALL_BASELINES

KINDS = ("divergence", "stagnation", "oscillation")
OURS = "rhythmd"
MAX_METRICS = ("acc", "dice", "bleu", "map", "win_rate")


# ---------------------------------------------------------------------------- loading
def load_specs(corpus: Path) -> tuple[str, list[dict[str, Any]]]:
    """Return ("dev"|"public", run specs)."""
    if (corpus / "manifest.jsonl").exists():
        man = {j["run_id"]: j for j in map(json.loads, (corpus / "manifest.jsonl").open())}
        specs = []
        for lab in map(json.loads, (corpus / "labels.jsonl").open()):
            m = man[lab["run_id"]]
            specs.append(
                {
                    "id": lab["run_id"],
                    "task": lab["task"],
                    "path": str(corpus / m["file"]),
                    "total_steps": m["planned_steps"],
                    "eval_every": m["config"]["eval_every"],
                    "label": lab,
                }
            )
        return "dev", specs
    specs = []
    with (corpus / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            specs.append(
                {
                    "id": row["file"],
                    "task": row["file"].split("/")[0],
                    "path": str(corpus / row["file"]),
                    "total_steps": None,
                    "eval_every": None,
                    "label": row,
                }
            )
    return "public", specs


def _metric_roles(names: list[str]) -> dict[str, Any]:
    """Pick train/val/aux/lr columns of a public CSV."""
    roles: dict[str, Any] = {"train_metric": "train_loss", "lr_metric": "lr"}
    vals = [n for n in names if n.startswith("val_")]
    loss = [n for n in vals if "loss" in n]
    other = [n for n in vals if "loss" not in n]
    if loss:
        roles.update(val_metric=loss[0], val_mode="min")
        roles["aux_val_metric"] = other[0] if other else None
    elif other:
        mode = "max" if any(k in other[0] for k in MAX_METRICS) else "min"
        roles.update(val_metric=other[0], val_mode=mode, aux_val_metric=None)
    else:
        roles.update(val_metric="val_loss", aux_val_metric=None)
    return roles


# ---------------------------------------------------------------------------- one run
def run_one(
    spec: dict[str, Any], batch_steps: int = 50, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Replay one curve through the analyzer and the baselines; return first flags."""
    t0 = time.perf_counter()
    cols = read_csv_columns(spec["path"])
    names = list(cols)
    roles = _metric_roles(names)
    last = max((int(s.max()) for s, _ in cols.values() if s.size), default=0)
    first = min((int(s.min()) for s, _ in cols.values() if s.size), default=0)
    total = spec["total_steps"] or last
    cfg = AnalysisConfig.from_run_config(
        {"total_steps": total, **roles, "analysis": dict(overrides or {})}
    )
    count_from = first + 0.1 * (last - first + 1)
    flags: dict[str, int | None] = {k: None for k in (*KINDS, "slow_progress", "spike")}

    def on_events(_an: RunAnalyzer, evs: list[DiagnosisEvent]) -> None:
        for e in evs:
            if e.type != "opened":
                continue
            k, st = e.diagnosis.kind, e.diagnosis.detected_at_step
            if k == "oscillation" and st < count_from:
                continue
            if flags.get(k) is None:
                flags[k] = st

    an = replay(cols, cfg, batch_steps, on_events)
    t_ours = time.perf_counter() - t0
    base = [b(total) for b in ALL_BASELINES]
    for b in base:
        if b.kind == "oscillation":
            b.count_from = math.ceil(count_from)
    tr = cols.get(cfg.train_metric)
    va = cols.get(cfg.val_metric)
    sign = -1.0 if cfg.val_mode == "max" else 1.0
    pts: list[tuple[int, int, float]] = []
    if tr is not None:
        pts += [(int(s), 0, float(v)) for s, v in zip(*tr, strict=True)]
    if va is not None:
        pts += [(int(s), 1, sign * float(v)) for s, v in zip(*va, strict=True)]
    pts.sort(key=lambda p: (p[0], p[1]))
    for s, r, v in pts:
        for b in base:
            (b.train if r == 0 else b.val)(s, v)
    ev_every = spec["eval_every"]
    if ev_every is None and va is not None and va[0].size > 1:
        ev_every = max(1, int(statistics.median((va[0][1:] - va[0][:-1]).tolist())))
    return {
        "id": spec["id"],
        "task": spec["task"],
        "N": last,
        "eval_every": ev_every or 1,
        "ours": flags,
        "base": {b.name: (b.kind, b.flag) for b in base},
        "n_diag": len(an.diagnoses),
        "secs": t_ours,
        "has_val": va is not None,
        "has_train": tr is not None,
    }


# ---------------------------------------------------------------------------- scoring
def _med(x: list[float]) -> float:
    return float(statistics.median(x)) if x else math.nan


def _fmt(x: float, pct: bool = False) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{100 * x:.0f}%" if pct else (f"{x:.2f}" if isinstance(x, float) else str(x))


def detectors_of(res: list[dict[str, Any]], kind: str) -> list[str]:
    names = [OURS]
    for b in ALL_BASELINES:
        if b.kind == kind:
            names.append(b.name)
    return names


def flag_of(r: dict[str, Any], det: str, kind: str) -> int | None:
    return r["ours"].get(kind) if det == OURS else r["base"][det][1]


def score_dev(res: list[dict[str, Any]], labels: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    # divergence
    out += [
        "#### Divergence",
        "",
        "| detector | recall | false alarms | lead median (all hits) | "
        "recall blowup>50 | lead median blowup>50 | lead min/max blowup>50 | "
        "ambiguous flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for det in detectors_of(res, "divergence"):
        pos = hit = neg = fa = amb = amb_f = 0
        leads: list[float] = []
        pos50 = hit50 = 0
        leads50: list[float] = []
        for r in res:
            lab = labels[r["id"]]
            f = flag_of(r, det, "divergence")
            ambiguous = (lab["diverged"] and lab["divergence_kind"] == "dead") or (
                not lab["diverged"] and lab["peak_over_ref"] >= 1.5
            )
            if ambiguous:
                amb += 1
                amb_f += f is not None
                continue
            if lab["diverged"]:
                pos += 1
                b = lab["blowup_step"]
                h = f is not None and f <= b + 20
                hit += h
                if h:
                    leads.append(b - f)
                if b > 50:
                    pos50 += 1
                    hit50 += h
                    if h:
                        leads50.append(b - f)
            else:
                neg += 1
                fa += f is not None
        out.append(
            f"| {det} | {hit / max(pos, 1):.2f} ({hit}/{pos}) | "
            f"{fa / max(neg, 1):.1%} ({fa}/{neg}) | {_fmt(_med(leads))} | "
            f"{hit50}/{pos50} | {_fmt(_med(leads50))} | "
            f"{min(leads50, default='-')}/{max(leads50, default='-')} | {amb_f}/{amb} |"
        )
    # stagnation
    out += [
        "",
        "#### Stagnation (non-diverged runs)",
        "",
        "| detector | recall | early alarms | late | missed | delay evals median / p90 |",
        "|---|---|---|---|---|---|",
    ]
    for det in detectors_of(res, "stagnation"):
        n = stag = hit = early = late = miss = 0
        delays: list[float] = []
        for r in res:
            lab = labels[r["id"]]
            if lab["diverged"]:
                continue
            n += 1
            f = flag_of(r, det, "stagnation")
            ev = r["eval_every"]
            on = lab["stagnation_onset"]
            if on is None:
                early += f is not None and f < 0.8 * r["N"]
                continue
            stag += 1
            if f is None:
                miss += 1
            elif f < on:
                early += 1
            elif f <= on + 10 * ev:
                hit += 1
                delays.append((f - on) / ev)
            else:
                late += 1
        p90 = sorted(delays)[int(0.9 * (len(delays) - 1))] if delays else math.nan
        out.append(
            f"| {det} | {hit / max(stag, 1):.2f} ({hit}/{stag}) | "
            f"{early / max(n, 1):.1%} ({early}/{n}) | {late} | {miss} | "
            f"{_fmt(_med(delays))} / {_fmt(p90)} |"
        )
    # oscillation
    out += [
        "",
        "#### Oscillation (non-diverged runs, flags after the first 10 % of the run)",
        "",
        "| detector | precision | recall | F1 | TP/FP/FN | delay evals median |",
        "|---|---|---|---|---|---|",
    ]
    for det in detectors_of(res, "oscillation"):
        tp = fp = fn = 0
        delays = []
        for r in res:
            lab = labels[r["id"]]
            if lab["diverged"]:
                continue
            f = flag_of(r, det, "oscillation")
            if lab["oscillating"]:
                if f is not None:
                    tp += 1
                    delays.append((f - lab["oscillation_onset"]) / r["eval_every"])
                else:
                    fn += 1
            elif f is not None:
                fp += 1
        p = tp / max(tp + fp, 1)
        rc = tp / max(tp + fn, 1)
        f1 = 2 * p * rc / max(p + rc, 1e-12)
        out.append(
            f"| {det} | {p:.2f} | {rc:.2f} | {f1:.2f} | {tp}/{fp}/{fn} | {_fmt(_med(delays))} |"
        )
    return out


def score_cadence_pairs(res: list[dict[str, Any]]) -> list[str]:
    """Verdict agreement between runs that differ only in evaluation cadence.

    Runs whose ids differ only in a trailing ``__ev<steps>`` train identically; a detector
    should flag the same kinds on each of them. Returns no lines if the corpus has no pairs.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in res:
        base, sep, ev = r["id"].rpartition("__ev")
        if sep and ev.isdigit():
            groups.setdefault(base, []).append(r)
    groups = {k: sorted(v, key=lambda r: r["eval_every"]) for k, v in groups.items()
              if len(v) > 1}
    if not groups:
        return []
    evs = sorted({r["eval_every"] for v in groups.values() for r in v})
    out = [
        "",
        f"#### Cadence pairs ({len(groups)} configurations, each evaluated every "
        f"{' and every '.join(map(str, evs))} steps)",
        "",
        "| detector | kind | flagged on all | on none | on some only |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for det in detectors_of(res, kind):
            counts = [0, 0, 0]
            for v in groups.values():
                n = sum(flag_of(r, det, kind) is not None for r in v)
                counts[0 if n == len(v) else (1 if n == 0 else 2)] += 1
            out.append(f"| {det} | {kind} | {counts[0]} | {counts[1]} | {counts[2]} |")
    return out


def _ev(lab: dict[str, Any]) -> str:
    return lab["event"]


def _stated(lab: dict[str, Any]) -> bool:
    return lab["label_origin"] == "source_stated"


PUBLIC_GROUPS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool]], ...] = (
    (
        "healthy controls: divergence flags (false alarms)",
        "divergence",
        lambda x: _ev(x).startswith("healthy"),
    ),
    (
        "DeepOBS runs with no computed tag: divergence flags",
        "divergence",
        lambda x: _ev(x).startswith("trains"),
    ),
    (
        "DeepOBS divergence to NaN/Inf (computed)",
        "divergence",
        lambda x: _ev(x).startswith("divergence_to_NaN/Inf"),
    ),
    (
        "DeepOBS divergence, finite blow-up (computed)",
        "divergence",
        lambda x: _ev(x).startswith("divergence (loss blow-up"),
    ),
    (
        "source-stated divergence / NaN loss",
        "divergence",
        lambda x: (
            _stated(x) and ("divergence" in _ev(x) or "NaN" in _ev(x)) and "grad" not in _ev(x)
        ),
    ),
    (
        "source-stated recovered spikes (divergence flag = false alarm)",
        "divergence",
        lambda x: (
            _stated(x)
            and _ev(x)
            in (
                "spike_recovered",
                "spike_then_slow_recovery",
                "large spike (slow to come down)",
                "spike",
            )
        ),
    ),
    (
        "source-stated NaN grad-norm snippets (loss finite or absent)",
        "divergence",
        lambda x: _stated(x) and "grad" in _ev(x).lower(),
    ),
    (
        "plateau / no progress (stagnation or slow_progress)",
        "stagnation",
        lambda x: any(k in _ev(x) for k in ("plateau", "no learning")),
    ),
    (
        "overfitting / val degrades late (stagnation)",
        "stagnation",
        lambda x: _ev(x).startswith("overfitting / val"),
    ),
    (
        "documented val oscillation (observed)",
        "oscillation",
        lambda x: _ev(x).startswith(("val_loss_oscillation", "overfitting: val")),
    ),
    ("healthy controls: oscillation flags", "oscillation", lambda x: _ev(x).startswith("healthy")),
    ("healthy controls: stagnation flags", "stagnation", lambda x: _ev(x).startswith("healthy")),
    (
        "failed to reach target (status): stagnation flags",
        "stagnation",
        lambda x: _ev(x).startswith("failed_to_reach"),
    ),
)


def score_public(res: list[dict[str, Any]], labels: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| group | kind | runs | rhythmd | baselines of that kind (runs flagged) |",
        "|---|---|---|---|---|",
    ]
    for title, kind, pred in PUBLIC_GROUPS:
        rows = [r for r in res if pred(labels[r["id"]])]
        if not rows:
            continue

        def flagged(r: dict[str, Any], det: str, kind: str = kind, title: str = title) -> bool:
            if det == OURS and kind == "stagnation" and "plateau" in title:
                return r["ours"]["stagnation"] is not None or r["ours"]["slow_progress"] is not None
            return flag_of(r, det, kind) is not None

        ours = sum(flagged(r, OURS) for r in rows)
        bl = [f"{d}: {sum(flagged(r, d) for r in rows)}" for d in detectors_of(res, kind)[1:]]
        out.append(f"| {title} | {kind} | {len(rows)} | {ours} | {'; '.join(bl)} |")
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rhythmd eval", description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--task", default="")
    ap.add_argument("--batch", type=int, default=50, help="steps per fed batch")
    ap.add_argument("--json", type=Path, default=None, help="write per-run flags here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an AnalysisConfig field (for sensitivity checks)",
    )
    a = ap.parse_args(argv)
    kind, specs = load_specs(a.corpus)
    if a.task:
        specs = [s for s in specs if s["task"] == a.task]
    specs = [s for s in specs if Path(s["path"]).exists()]
    if a.limit:
        specs = specs[: a.limit]
    t0 = time.perf_counter()
    over = {k: json.loads(v) for k, v in (x.split("=", 1) for x in a.set)}
    args = [(s, a.batch, over) for s in specs]
    if a.jobs > 1:
        with Pool(a.jobs) as pool:
            res = pool.starmap(run_one, args, chunksize=2)
    else:
        res = [run_one(*x) for x in args]
    wall = time.perf_counter() - t0
    labels = {s["id"]: s["label"] for s in specs}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(
        f"corpus {a.corpus} ({kind}): {len(res)} curves, replayed in {wall:.1f}s "
        f"(analysis {sum(r['secs'] for r in res):.1f} cpu-s, batches of {a.batch} steps)"
    )
    if kind == "dev":
        tasks = sorted({r["task"] for r in res})
        for t in [*tasks, "ALL"] if len(tasks) > 1 else tasks:
            sub = [r for r in res if t in ("ALL", r["task"])]
            print(f"\n### {t} ({len(sub)} runs)\n")
            print("\n".join(score_dev(sub, labels) + score_cadence_pairs(sub)))
    else:
        print()
        print("\n".join(score_public(res, labels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
