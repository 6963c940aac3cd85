"""``rhythmd analyze FILE…``: the daemon's analysis and policy, offline, on recorded curves."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent
from rhythmd.analysis.offline import read_csv_columns, replay
from rhythmd.policy import PolicyConfig, RunContext, decide


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="analyse recorded curves offline (no daemon)",
        description="Replay recorded curves through the same online analysis and policy the "
                    "daemon runs, and print the diagnoses, the identified LR schedule and the "
                    "recommendations rhythmd would have issued. FILE: a CSV whose first column "
                    "is the step and whose other columns are metrics (train_loss, lr, val_loss, "
                    "val_acc, ...; empty cells are missing points; nan/inf are data).")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--total-steps", type=int, default=None,
                   help="planned run length in steps (default: the last step in the file)")
    p.add_argument("--batch-steps", type=int, default=50,
                   help="steps per streamed batch, as a client would send them (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def analyze_file(path: Path, total_steps: int | None = None, batch_steps: int = 50
                 ) -> dict[str, Any]:
    """Diagnoses, schedule and the policy's recommendations for one file (pure but for I/O)."""
    from rhythmd.cli import CommandError

    try:
        columns = read_csv_columns(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    if not columns:
        raise CommandError(f"{path} has no data rows (expected a CSV: step, metric, ...)")
    last = max((int(s.max()) for s, _ in columns.values() if s.size), default=0)
    run_config = {"total_steps": total_steps or last}
    cfg = AnalysisConfig.from_run_config(run_config)
    policy = PolicyConfig.from_run_config(run_config)
    recs: list[dict[str, Any]] = []

    def on_events(events: list[DiagnosisEvent]) -> None:
        step = max(e.step for e in events)
        sched = analyzer_ref[0].sched if analyzer_ref else None
        ctx = RunContext(step=step, total_steps=cfg.total_steps,
                         in_warmup=bool(sched.in_warmup()) if sched else False,
                         warmup_end_step=sched.warmup_end_step if sched else None,
                         history=[{"id": str(i), "action": r["action"], "status": "applied",
                                   "issued_at_step": r["step"], "applied_step": r["step"],
                                   "note": None} for i, r in enumerate(recs)])
        for spec in decide(events, ctx, policy).issue:
            recs.append({"step": step, "action": spec.action, "params": spec.params,
                         "reason": spec.reason, "diagnosis_id": spec.diagnosis_id})

    analyzer_ref: list[Any] = []
    analyzer = replay(columns, cfg, batch_steps, on_events=on_events)
    analyzer_ref.append(analyzer)
    return {"file": str(path), "total_steps": cfg.total_steps,
            "diagnoses": [d.to_dict() for d in analyzer.diagnoses],
            "schedule": [s.to_dict() for s in analyzer.schedule()],
            "recommendations": recs}


def run(args: argparse.Namespace) -> int:
    reports = [analyze_file(f, args.total_steps, args.batch_steps) for f in args.files]
    if args.json:
        from rhythmd.api.encoding import encode_nonfinite

        print(json.dumps(encode_nonfinite(reports), indent=2))
        return 0
    for rep in reports:
        print(f"{rep['file']}  ({rep['total_steps']} steps)")
        if not rep["diagnoses"]:
            print("  no diagnoses: the run looks healthy")
        for d in rep["diagnoses"]:
            closed = f"closed@{d['closed_at_step']}" if d.get("closed_at_step") is not None \
                else "open"
            print(f"  {d['kind']:<14} {d['severity']:<8} onset {d['onset_step']:>7} "
                  f"flagged {d['detected_at_step']:>7} {closed:<14} {d['message']}")
        if rep["schedule"]:
            print("  schedule:")
            for s in rep["schedule"]:
                print(f"    {s['kind']:<12} steps {s['start_step']}-{s['end_step']}  "
                      f"lr {_g(s['lr_start'])} -> {_g(s['lr_end'])}")
        if rep["recommendations"]:
            print("  recommendations:")
            for r in rep["recommendations"]:
                params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
                print(f"    @{r['step']:<7} {r['action']}({params})  {r['reason']}")
    return 0


def _g(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else str(x)
