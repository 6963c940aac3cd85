"""``rhythmd analyze SOURCE…``: the daemon's analysis and policy, offline, on recorded curves.

Sources (read by :mod:`rhythmd.interop`): CSV, JSONL, TensorBoard event files, MLflow runs and
W&B offline runs. ``--to-tensorboard``/``--to-mlflow`` write the findings back.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent
from rhythmd.analysis.offline import replay
from rhythmd.cli._http import EXIT_CODES
from rhythmd.cli._writeback import add_writeback_args, wants_writeback, write_back
from rhythmd.interop import RunData, read_run
from rhythmd.interop.conventions import DEFAULT_NAMES, resolve_metric_names
from rhythmd.interop.files import TB_HINT
from rhythmd.interop.findings import Findings
from rhythmd.interop.mlflow_runs import MLFLOW_HINT
from rhythmd.interop.wandb_runs import WANDB_HINT
from rhythmd.policy import PolicyConfig, decide, run_context

Columns = dict[str, tuple[np.ndarray, np.ndarray]]

SOURCES_HELP = (
    "SOURCE is one of:\n"
    "  CSV        first column the step (or a column named _step, global_step, ...), other\n"
    "             columns metrics; empty cells are missing points, nan/inf are data\n"
    "  JSONL      one object per line: {\"step\": 10, \"train_loss\": 2.3, ...} (a W&B\n"
    "             scan_history() row works: _step, or the trainer's global step)\n"
    "  TensorBoard  an events.out.tfevents.* file or a directory of them (scalar tags;\n"
    f"             {TB_HINT})\n"
    "  MLflow     runs:/RUN_ID or mlflow://RUN_ID, from --tracking-uri or\n"
    f"             MLFLOW_TRACKING_URI ({MLFLOW_HINT})\n"
    "  W&B        an offline run: wandb/offline-run-*/ or its run-*.wandb file\n"
    f"             ({WANDB_HINT})\n\n"
    "Metric names: train_loss/val_loss/lr/val_acc, or common names (loss, train/loss,\n"
    "eval/loss, learning_rate, lr-AdamW, ...), or names whose role is plain (Loss/train,\n"
    "val_accuracy), or the --*-metric flags.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="analyse recorded curves offline (no daemon)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replay recorded curves through the same online analysis and policy the "
                    "daemon runs, and print the diagnoses, the identified LR schedule and the "
                    "recommendations rhythmd would have issued.\n\n" + SOURCES_HELP,
        epilog="examples:\n"
               "  rhythmd analyze run.csv\n"
               "  rhythmd analyze runs/exp1 --train-metric Loss/train --plot exp1.png\n"
               "  rhythmd analyze log.jsonl --json\n"
               "  rhythmd analyze runs:/0f3c... --tracking-uri sqlite:///mlflow.db --to-mlflow\n"
               "  rhythmd analyze wandb/offline-run-20250101_120000-abc123\n"
               "  rhythmd analyze runs/exp1 --to-tensorboard\n\n" + EXIT_CODES)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--total-steps", type=int, default=None,
                   help="planned run length in steps (default: the run's max_steps or similar "
                        "parameter, else its last step)")
    p.add_argument("--batch-steps", type=int, default=50,
                   help="steps per streamed batch, as a client would send them (default 50)")
    p.add_argument("--train-metric", help="train loss metric name (default: guessed)")
    p.add_argument("--val-metric", help="validation loss metric name (default: guessed)")
    p.add_argument("--lr-metric", help="learning-rate metric name (default: guessed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--plot", type=Path, metavar="OUT",
                   help="write a figure (.png, .svg or .pdf): train/val loss (log scale), LR, "
                        "diagnoses shaded, recommendations and non-finite points marked")
    add_writeback_args(p, tensorboard_source=True)
    p.set_defaults(func=run)


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
    metrics = {role: names.get(f"{role}_metric", DEFAULT_NAMES[f"{role}_metric"])
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


def analyze_file(path: Path | str, total_steps: int | None = None, batch_steps: int = 50,
                 train: str | None = None, val: str | None = None, lr: str | None = None,
                 tracking_uri: str | None = None) -> dict[str, Any]:
    """Read and analyse one source (a file, directory or run URI)."""
    data = read_run(path, tracking_uri)
    names = resolve_metric_names(data.columns, train, val, lr)
    return analyze_columns(data.columns, data.label, total_steps or data.total_steps,
                           batch_steps, names)


def tensorboard_home(data: RunData) -> Path | None:
    """Where a bare ``--to-tensorboard`` writes: ``rhythmd/`` in a TensorBoard source's logdir."""
    path = Path(data.label)
    if data.origin or not (path.is_dir() or "tfevents" in path.name):
        return None
    return (path if path.is_dir() else path.parent) / "rhythmd"


def run(args: argparse.Namespace) -> int:
    from rhythmd.cli import CommandError
    from rhythmd.cli._plot import RunPlot, check_output, plot_analysis
    from rhythmd.jsonsafe import encode_nonfinite

    if args.plot is not None:
        check_output(args.plot)
    if wants_writeback(args) and len(args.sources) > 1:
        raise CommandError("--to-tensorboard and --to-mlflow write one run's findings: give "
                           "one SOURCE", 2)
    reports: list[dict[str, Any]] = []
    plots: list[RunPlot] = []
    for ref in args.sources:
        data = read_run(ref, args.tracking_uri)
        names = resolve_metric_names(data.columns, args.train_metric, args.val_metric,
                                     args.lr_metric)
        rep = analyze_columns(data.columns, data.label, args.total_steps or data.total_steps,
                              args.batch_steps, names)
        reports.append(rep)
        if args.plot is not None:
            m = rep["metrics"]
            plots.append(RunPlot(data.label, data.columns, m["train"], m["val"], m["lr"],
                                 rep["diagnoses"], rep["recommendations"]))
    if args.json:
        print(json.dumps(encode_nonfinite(reports), indent=2))
    else:
        _print_reports(reports)
    if args.plot is not None:
        import sys

        plot_analysis(plots, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if wants_writeback(args):  # one source (checked above): after the report is out
        write_back(Findings.from_report(reports[0]), args, tensorboard_home(data), data.origin)
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
