"""``rhythmd export RUN``: a daemon's findings on a run, written to TensorBoard or MLflow."""

from __future__ import annotations

import argparse
import json

from rhythmd.cli._http import EXIT_CODES, add_daemon_args, client_from_args
from rhythmd.cli._writeback import add_writeback_args, wants_writeback, write_back


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's diagnoses and changes to TensorBoard or MLflow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a run's diagnoses and recommendations (with what the client did: "
                    "applied at which step, the LR it set) from a daemon and write them where "
                    "the run's curves already are:\n\n"
                    "  --to-tensorboard DIR  an event file in DIR: text rhythmd/diagnoses and\n"
                    "                        rhythmd/recommendations at their steps, scalars\n"
                    "                        rhythmd/open_diagnoses and rhythmd/lr_applied\n"
                    "  --to-mlflow [RUN]     rhythmd.* tags on the MLflow run and the artifact\n"
                    "                        rhythmd/findings.json; bare: the MLflow run the\n"
                    "                        daemon's run was replayed from\n\n"
                    "Exporting again replaces what the last export wrote.",
        epilog="examples:\n"
               "  rhythmd export 3f2a9c... --to-tensorboard runs/exp1/rhythmd\n"
               "  rhythmd export 3f2a9c... --to-mlflow runs:/0f3c... --tracking-uri "
               "http://mlflow:5000\n"
               "  rhythmd export replay-1a2b... --to-mlflow\n\n" + EXIT_CODES)
    p.add_argument("run_id", metavar="RUN", help="the daemon's run id (see `rhythmd runs`)")
    add_writeback_args(p, tensorboard_source=False)
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_daemon_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rhythmd.cli import CommandError
    from rhythmd.cli.query import get_json, get_run, run_path
    from rhythmd.interop.findings import Findings

    if not wants_writeback(args):
        raise CommandError("say where to write: --to-tensorboard DIR and/or --to-mlflow [RUN]",
                           2)
    client = client_from_args(args)
    run_doc = get_run(client, args.run_id)
    diagnoses = get_json(client, run_path(args.run_id, "/diagnoses")).get("diagnoses", [])
    recs = get_json(client, run_path(args.run_id, "/recommendations")).get(
        "recommendations", [])
    findings = Findings.from_daemon(run_doc, diagnoses, recs, client.url)
    done = write_back(findings, args, None, run_doc.get("config") or {}, quiet=args.json)
    if args.json:
        print(json.dumps({"run_id": args.run_id, "status": findings.status(),
                          "diagnoses": len(diagnoses), "recommendations": len(recs),
                          "written": done}, indent=2))
    return 0
