"""``--to-tensorboard`` and ``--to-mlflow``: write rhythmd's findings where people look."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rhythmd.interop.findings import Findings

FROM_SOURCE = "\0source"  # the flag given without a value: the run that was read


def add_writeback_args(p: argparse.ArgumentParser, tensorboard_source: bool) -> None:
    """The sink flags. ``--to-mlflow`` given bare means the MLflow run the data came from;
    with ``tensorboard_source``, a bare ``--to-tensorboard`` means the TensorBoard source."""
    bare = {"nargs": "?", "const": FROM_SOURCE}
    g = p.add_argument_group("other tools (docs/interop.md)")
    if tensorboard_source:
        g.add_argument("--to-tensorboard", metavar="DIR", **bare,
                       help="write diagnoses and recommendations as text and scalars "
                            "(rhythmd/*) to an event file in DIR; bare, with a TensorBoard "
                            "source: in rhythmd/ beside its event files")
    else:
        g.add_argument("--to-tensorboard", metavar="DIR",
                       help="write diagnoses and recommendations as text and scalars "
                            "(rhythmd/*) to an event file in DIR")
    g.add_argument("--to-mlflow", metavar="RUN", **bare,
                   help="set rhythmd.* tags on the MLflow run RUN (runs:/RUN_ID or "
                        "mlflow://RUN_ID) and attach rhythmd/findings.json; bare: the MLflow "
                        "run the data came from")
    g.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking store or server (default: MLFLOW_TRACKING_URI, else "
                        "MLflow's default)")


def wants_writeback(args: argparse.Namespace) -> bool:
    return args.to_tensorboard is not None or args.to_mlflow is not None


def write_back(findings: Findings, args: argparse.Namespace, tb_default: Path | None,
               mlflow_default: dict[str, Any] | None, quiet: bool = False) -> list[str]:
    """Write to the sinks the flags name; ``*_default`` stand for a bare flag. What was
    written, one line each (also printed on stderr unless ``quiet``)."""
    from rhythmd.cli import CommandError
    from rhythmd.interop.mlflow_sink import write_mlflow
    from rhythmd.interop.tensorboard_sink import write_tensorboard

    done: list[str] = []
    if args.to_tensorboard is not None:
        target = tb_default if args.to_tensorboard == FROM_SOURCE else Path(args.to_tensorboard)
        if target is None:
            raise CommandError("--to-tensorboard needs a directory unless the source is "
                               "TensorBoard data", 2)
        done.append(f"wrote {write_tensorboard(findings, target)}")
    if args.to_mlflow is not None:
        ref, uri = args.to_mlflow, args.tracking_uri
        if ref == FROM_SOURCE:
            if not mlflow_default or not mlflow_default.get("mlflow_run_id"):
                raise CommandError("--to-mlflow needs a run (runs:/RUN_ID) unless the source "
                                   "is an MLflow run", 2)
            ref = f"runs:/{mlflow_default['mlflow_run_id']}"
            uri = uri or mlflow_default.get("mlflow_tracking_uri")
        done.append(f"tagged MLflow {write_mlflow(findings, ref, uri)}")
    if not quiet:
        for line in done:
            print(line, file=sys.stderr)
    return done
