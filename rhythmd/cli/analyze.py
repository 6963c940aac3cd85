"""``rhythmd analyze FILE…``: the daemon's analysis and policy, offline, on recorded curves.

Inputs: CSV (first column the step), JSONL (one object per line with ``step`` and metric
keys) and TensorBoard event files or directories (needs the ``tensorboard`` package).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent
from rhythmd.analysis.offline import read_csv_columns, replay
from rhythmd.cli._http import EXIT_CODES
from rhythmd.policy import PolicyConfig, decide, run_context

Columns = dict[str, tuple[np.ndarray, np.ndarray]]

# Names tried, in order, when a file does not use the corpus names (case-insensitive).
METRIC_ALIASES = {
    "train_metric": ("train_loss", "train/loss", "loss/train", "train.loss", "training_loss",
                     "training/loss", "train_loss_step", "loss"),
    "val_metric": ("val_loss", "val/loss", "loss/val", "valid_loss", "valid/loss",
                   "validation_loss", "validation/loss", "loss/validation", "eval_loss",
                   "eval/loss", "test_loss", "test/loss"),
    "aux_val_metric": ("val_acc", "val/acc", "val_accuracy", "val/accuracy", "valid_acc",
                       "eval/accuracy", "eval_accuracy", "accuracy/val", "test_acc"),
    "lr_metric": ("lr", "learning_rate", "train/lr", "lr/group0", "lr-0", "train/learning_rate",
                  "lr/pg0", "optim/lr"),
}
_DEFAULTS = {"train_metric": "train_loss", "val_metric": "val_loss",
             "aux_val_metric": "val_acc", "lr_metric": "lr"}
_NONFINITE = {"nan": math.nan, "inf": math.inf, "infinity": math.inf, "+inf": math.inf,
              "-inf": -math.inf, "-infinity": -math.inf}
TB_HINT = "pip install rhythmd[tensorboard]"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="analyse recorded curves offline (no daemon)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replay recorded curves through the same online analysis and policy the "
                    "daemon runs, and print the diagnoses, the identified LR schedule and the "
                    "recommendations rhythmd would have issued.\n\n"
                    "FILE is one of:\n"
                    "  CSV        first column the step, other columns metrics (train_loss, lr,\n"
                    "             val_loss, val_acc, ...); empty cells are missing points,\n"
                    "             nan/inf are data\n"
                    "  JSONL      one object per line: {\"step\": 10, \"train_loss\": 2.3, ...};\n"
                    "             null or absent keys are missing points, NaN/Infinity (literal\n"
                    "             or string) are data\n"
                    "  TensorBoard  an events.out.tfevents.* file or a directory of them (scalar\n"
                    f"             tags; needs tensorboard: {TB_HINT})\n\n"
                    "Metric names: train_loss/val_loss/lr/val_acc, or common aliases\n"
                    "(train/loss, eval/loss, learning_rate, ...), or the --*-metric flags.",
        epilog="examples:\n"
               "  rhythmd analyze run.csv\n"
               "  rhythmd analyze runs/exp1 --train-metric Loss/train --plot exp1.png\n"
               "  rhythmd analyze log.jsonl --json\n\n" + EXIT_CODES)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--total-steps", type=int, default=None,
                   help="planned run length in steps (default: the last step in the file)")
    p.add_argument("--batch-steps", type=int, default=50,
                   help="steps per streamed batch, as a client would send them (default 50)")
    p.add_argument("--train-metric", help="train loss metric name (default: guessed)")
    p.add_argument("--val-metric", help="validation loss metric name (default: guessed)")
    p.add_argument("--lr-metric", help="learning-rate metric name (default: guessed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--plot", type=Path, metavar="OUT",
                   help="write a figure (.png, .svg or .pdf): train/val loss (log scale), LR, "
                        "diagnoses shaded, recommendations and non-finite points marked")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- reading
def detect_format(path: Path) -> str:
    """"tensorboard", "jsonl" or "csv", from the name and then the first bytes."""
    if path.is_dir() or "tfevents" in path.name:
        return "tensorboard"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
    except OSError:
        return "csv"
    return "jsonl" if head.startswith(b"{") else "csv"


def read_columns(path: Path) -> Columns:
    """Read a recorded run into per-metric ``(steps int64, values float64)``, steps sorted."""
    from rhythmd.cli import CommandError

    if not path.exists():
        raise CommandError(f"{path}: no such file or directory")
    fmt = detect_format(path)
    try:
        if fmt == "tensorboard":
            cols = read_tensorboard(path)
        elif fmt == "jsonl":
            cols = read_jsonl(path)
        else:
            cols = read_csv_columns(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    return {k: _sorted(s, v) for k, (s, v) in cols.items()}


def _sorted(s: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if s.size > 1 and np.any(np.diff(s) < 0):
        order = np.argsort(s, kind="stable")
        return s[order], v[order]
    return s, v


def _to_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _NONFINITE:
            return _NONFINITE[t]
        try:
            return float(t)
        except ValueError:
            return None
    return None


def read_jsonl(path: Path) -> Columns:
    """One JSON object per line: ``step`` (or ``global_step``/``iteration``) and metrics."""
    from rhythmd.cli import CommandError

    cols: dict[str, tuple[list[int], list[float]]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CommandError(f"{path}:{lineno}: not a JSON object ({exc})") from None
            if not isinstance(obj, dict):
                raise CommandError(f"{path}:{lineno}: expected a JSON object per line")
            if "series" in obj or "body" in obj:
                raise CommandError(f"{path} is a client spool file (metric batches): send it "
                                   "to a daemon with `rhythmd replay`")
            raw = next((obj[k] for k in ("step", "global_step", "iteration") if k in obj), None)
            step = _to_float(raw)
            if step is None or not math.isfinite(step):
                raise CommandError(f"{path}:{lineno}: no numeric \"step\" key")
            for key, val in obj.items():
                if key in ("step", "global_step", "iteration", "wall_time", "timestamp"):
                    continue
                x = _to_float(val)
                if x is None:
                    continue
                st, va = cols.setdefault(key, ([], []))
                st.append(round(step))
                va.append(x)
    return {k: (np.asarray(s, np.int64), np.asarray(v, np.float64)) for k, (s, v) in cols.items()}


def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "tfevents" in p.name)


def read_tensorboard(path: Path) -> Columns:
    """Scalars of TensorBoard event files (``add_scalar`` and TF2 scalar tensors), through
    tensorboard's own event reader. Tags of files in subdirectories get ``subdir/`` prefixes."""
    from rhythmd.cli import CommandError

    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util.tensor_util import make_ndarray
    except ImportError:
        raise CommandError(f"{path} is TensorBoard data; reading it needs the tensorboard "
                           f"package: {TB_HINT}", 2) from None
    files = _event_files(path)
    if not files:
        raise CommandError(f"{path}: no TensorBoard event files (events.out.tfevents.*)")
    root = path if path.is_dir() else path.parent
    cols: dict[str, tuple[list[int], list[float]]] = {}
    for f in files:
        prefix = os.path.relpath(f.parent, root)
        prefix = "" if prefix == "." else prefix.replace(os.sep, "/") + "/"
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "tensors": 0})
        try:
            acc.Reload()
        except Exception as exc:  # corrupt or truncated record files
            raise CommandError(f"cannot read TensorBoard file {f}: {exc}") from None
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            st, va = cols.setdefault(prefix + tag, ([], []))
            for ev in acc.Scalars(tag):
                st.append(int(ev.step))
                va.append(float(ev.value))
        for tag in tags.get("tensors", []):
            events = acc.Tensors(tag)
            pts = []
            for ev in events:
                arr = make_ndarray(ev.tensor_proto)
                if arr.size != 1 or arr.dtype.kind not in "fiu":
                    break
                pts.append((int(ev.step), float(arr.reshape(-1)[0])))
            else:
                st, va = cols.setdefault(prefix + tag, ([], []))
                for s, v in pts:
                    st.append(s)
                    va.append(v)
    return {k: (np.asarray(s, np.int64), np.asarray(v, np.float64)) for k, (s, v) in cols.items()}


def resolve_metric_names(columns: Columns, train: str | None = None, val: str | None = None,
                         lr: str | None = None) -> dict[str, str]:
    """Analysis config keys (train_metric, val_metric, aux_val_metric, lr_metric) naming the
    file's columns: the flags, else the default names, else the first alias present."""
    from rhythmd.cli import CommandError

    given = {"train_metric": train, "val_metric": val, "lr_metric": lr}
    lower = {k.lower(): k for k in columns}
    out: dict[str, str] = {}
    for key, aliases in METRIC_ALIASES.items():
        name = given.get(key)
        if name is not None:
            if name not in columns:
                raise CommandError(f"--{key.replace('_', '-')} {name!r} is not in the file; "
                                   f"its metrics: {', '.join(sorted(columns)) or 'none'}", 2)
            out[key] = name
            continue
        for a in aliases:
            if a.lower() in lower:
                out[key] = lower[a.lower()]
                break
    return out


# ---------------------------------------------------------------------------- analysis
def analyze_columns(columns: Columns, label: str, total_steps: int | None = None,
                    batch_steps: int = 50, names: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    """Diagnoses, schedule and the policy's recommendations for one run's columns."""
    from rhythmd.cli import CommandError

    if not columns:
        raise CommandError(f"{label} has no data points (expected step and metric columns)")
    if batch_steps < 1:
        raise CommandError("--batch-steps must be at least 1", 2)
    names = dict(names or {})
    last = max((int(s.max()) for s, _ in columns.values() if s.size), default=0)
    run_config: dict[str, Any] = {"total_steps": total_steps or last, **names}
    cfg = AnalysisConfig.from_run_config(run_config)
    policy = PolicyConfig.from_run_config(run_config)
    recs: list[dict[str, Any]] = []  # as the daemon would hold them with no client acting
    notes: list[dict[str, Any]] = []  # why a diagnosis got no action
    analyzer_ref: list[Any] = []

    def on_events(analyzer: Any, events: list[DiagnosisEvent]) -> None:
        # the daemon decides at the batch's last step
        step = max([*analyzer.last_step.values(), *(e.step for e in events)])
        decision = decide(events, run_context(analyzer, step, recs), policy)
        notes.extend({"step": step, "note": n} for n in decision.notes
                     if not any(x["note"] == n for x in notes))
        for r in recs:
            if r["id"] in decision.cancel:
                r["status"] = "expired"
        for spec in decision.issue:
            recs.append({"id": str(len(recs)), "step": step, "issued_at_step": step,
                         "action": spec.action, "params": spec.params, "reason": spec.reason,
                         "diagnosis_id": spec.diagnosis_id, "status": "pending",
                         "expires_at_step": spec.expires_at_step, "author": "rhythmd"})
        for r in recs:  # what the daemon does after the policy: pending ones past their expiry
            if r["status"] == "pending" and r["expires_at_step"] is not None \
                    and r["expires_at_step"] < step:
                r["status"] = "expired"

    analyzer = replay(columns, cfg, batch_steps, on_events=on_events)
    analyzer_ref.append(analyzer)
    metrics = {role: names.get(f"{role}_metric", _DEFAULTS[f"{role}_metric"])
               for role in ("train", "val", "lr")}
    return {"file": label, "total_steps": cfg.total_steps,
            "metrics": {k: (v if v in columns else None) for k, v in metrics.items()},
            "nonfinite_points": {k: int((~np.isfinite(v)).sum()) for k, (_, v) in
                                 columns.items() if (~np.isfinite(v)).any()},
            "diagnoses": [d.to_dict() for d in analyzer.diagnoses],
            "schedule": [s.to_dict() for s in analyzer.schedule()],
            "recommendations": [{k: r[k] for k in ("step", "action", "params", "reason",
                                                   "diagnosis_id")} for r in recs],
            "policy_notes": notes}


def analyze_file(path: Path, total_steps: int | None = None, batch_steps: int = 50,
                 train: str | None = None, val: str | None = None, lr: str | None = None
                 ) -> dict[str, Any]:
    """Read and analyse one file (CSV, JSONL or TensorBoard)."""
    columns = read_columns(path)
    names = resolve_metric_names(columns, train, val, lr)
    return analyze_columns(columns, str(path), total_steps, batch_steps, names)


def run(args: argparse.Namespace) -> int:
    from rhythmd.cli._plot import RunPlot, check_output, plot_analysis

    if args.plot is not None:
        check_output(args.plot)
    reports: list[dict[str, Any]] = []
    plots: list[RunPlot] = []
    for f in args.files:
        columns = read_columns(f)
        names = resolve_metric_names(columns, args.train_metric, args.val_metric,
                                     args.lr_metric)
        rep = analyze_columns(columns, str(f), args.total_steps, args.batch_steps, names)
        reports.append(rep)
        if args.plot is not None:
            m = rep["metrics"]
            plots.append(RunPlot(str(f), columns, m["train"], m["val"], m["lr"],
                                 rep["diagnoses"], rep["recommendations"]))
    if args.json:
        from rhythmd.api.encoding import encode_nonfinite

        print(json.dumps(encode_nonfinite(reports), indent=2))
    else:
        _print_reports(reports)
    if args.plot is not None:
        import sys

        plot_analysis(plots, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _print_reports(reports: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rhythmd.cli.query import console as make_console

    console = make_console()
    for rep in reports:
        m = rep["metrics"]
        console.print(f"[bold]{rep['file']}[/bold]  ({rep['total_steps']} steps; train="
                      f"{m['train']}, val={m['val']}, lr={m['lr']})", highlight=False)
        if rep["nonfinite_points"]:
            nf = ", ".join(f"{k}: {n}" for k, n in rep["nonfinite_points"].items())
            console.print(f"  [red]non-finite points[/red] {nf}", highlight=False)
        if not rep["diagnoses"]:
            console.print("  no diagnoses: the run looks healthy")
        else:
            t = Table(title="diagnoses", title_justify="left")
            t.add_column("kind", no_wrap=True)
            t.add_column("severity", no_wrap=True)
            t.add_column("steps", no_wrap=True, justify="right")
            t.add_column("flagged", no_wrap=True, justify="right")
            t.add_column("message", overflow="fold", ratio=1)
            for d in rep["diagnoses"]:
                end = d.get("closed_at_step")
                t.add_row(d["kind"], _sev(d["severity"]),
                          f"{d['onset_step']}-{'open' if end is None else end}",
                          str(d["detected_at_step"]), escape(d["message"]))
            console.print(t)
        if rep["schedule"]:
            t = Table(title="identified LR schedule", title_justify="left")
            for col in ("segment", "steps", "lr start", "lr end"):
                t.add_column(col)
            for s in rep["schedule"]:
                t.add_row(s["kind"], f"{s['start_step']}-{s['end_step']}", _g(s["lr_start"]),
                          _g(s["lr_end"]))
            console.print(t)
        if rep["recommendations"]:
            t = Table(title="recommended schedule changes", title_justify="left")
            for col in ("step", "action", "params"):
                t.add_column(col, justify="right" if col == "step" else "left",
                             no_wrap=col != "params")
            t.add_column("reason", overflow="fold", ratio=1)
            for r in rep["recommendations"]:
                params = ", ".join(f"{k}={_g(v)}" for k, v in r["params"].items())
                t.add_row(str(r["step"]), r["action"], escape(params), escape(r["reason"]))
            console.print(t)
        else:
            console.print("  no recommended schedule changes")
        for n in rep.get("policy_notes", []):
            console.print(f"  step {n['step']}: {escape(n['note'])}")
        console.print()


def _sev(s: str) -> str:
    color = {"critical": "bold red", "high": "red", "warning": "yellow"}.get(s)
    return f"[{color}]{s}[/{color}]" if color else s


def _g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else str(x)
