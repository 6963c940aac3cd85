"""``rhythmd replay SOURCE --url URL``: stream a recorded run into a daemon.

Inputs: whatever ``rhythmd analyze`` reads (CSV, JSONL, TensorBoard, MLflow and W&B runs), cut
into batches of
``--batch-steps`` steps, or a client spool file (JSONL of metric batches, as the client hook
writes them when the daemon is unreachable), sent batch by batch as recorded. Every batch
carries a ``batch_id`` and the run id is derived from the content, so replaying the same file
again stores nothing twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rhythmd.cli._http import EXIT_CODES, Client, HTTPStatusError, add_daemon_args, client_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="stream a recorded run into a daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stream a recorded run into a daemon at a chosen speed, as a training job "
                    "would, then print the run id and the daemon's diagnoses and "
                    "recommendations.\n\n"
                    "SOURCE is a CSV, JSONL or TensorBoard log, an MLflow run (runs:/RUN_ID) or "
                    "a W&B offline run (as for `rhythmd analyze`), cut into batches of "
                    "--batch-steps steps, or a client spool file (JSONL of "
                    "metric batches {\"batch_id\", \"branch\", \"series\": [...]}, optionally "
                    "wrapped as {\"run_id\", \"body\": {...}}), sent as recorded, detected by "
                    "content.\n\n"
                    "Idempotent: each batch has a batch_id and the run id is derived from the "
                    "file's content, --name, --project and --batch-steps (a spool file names its "
                    "own run), so replaying again re-attaches to the same run and the daemon "
                    "answers every batch as a duplicate.\n\n"
                    "An MLflow or W&B run's id is kept in the run's config (mlflow_run_id, "
                    "wandb_run_id): `rhythmd export RUN --to-mlflow` writes back to it.",
        epilog="examples:\n"
               "  rhythmd replay run.csv --url http://127.0.0.1:8000\n"
               "  rhythmd replay run.csv --speed 200 --batch-steps 20 --name resnet-a "
               "--project demo\n"
               "  rhythmd replay spool.jsonl --token $TOKEN\n"
               "  MLFLOW_TRACKING_URI=http://mlflow:5000 rhythmd replay runs:/0f3c...\n"
               "  rhythmd replay wandb/offline-run-20250101_120000-abc123 --project demo\n\n"
               + EXIT_CODES)
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--speed", type=float, default=0.0,
                   help="steps per second; 0 sends as fast as possible (default 0)")
    p.add_argument("--batch-steps", type=int, default=50,
                   help="steps per batch for CSV/JSONL/TensorBoard input (default 50)")
    p.add_argument("--name", help="run name (default: the MLflow or W&B run name, else the file "
                                  "name without suffix)")
    p.add_argument("--project", help="project of the run")
    p.add_argument("--run-id", help="run id to create or attach to (default: derived from the "
                                    "content, or the spool file's own)")
    p.add_argument("--total-steps", type=int,
                   help="planned run length for the daemon's analysis (default: the run's "
                        "max_steps or similar parameter, else its last step)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking store or server for runs:/ sources (default: "
                        "MLFLOW_TRACKING_URI, else MLflow's default)")
    p.add_argument("--train-metric", help="train loss metric name (default: guessed)")
    p.add_argument("--val-metric", help="validation loss metric name (default: guessed)")
    p.add_argument("--lr-metric", help="learning-rate metric name (default: guessed)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the run 'running' (default: mark it finished after the last "
                        "batch; spool replays never finish the run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print the result (run id, counts, diagnoses, recommendations) as JSON")
    add_daemon_args(p)
    p.set_defaults(func=run)


@dataclass
class OutBatch:
    """One request body and how far into the run (in steps) it reaches."""

    body: dict[str, Any]
    progress: int
    points: int


@dataclass
class Recording:
    """What replay sends: run metadata and the batches."""

    kind: str  # "columns" or "spool"
    batches: list[OutBatch]
    total_progress: int
    last_step: int
    run_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the source's own run name


# ------------------------------------------------------------------------------ input
def _wire(values: np.ndarray) -> list[Any]:
    """Floats for JSON: finite as numbers, non-finite as the API's strings."""
    out: list[Any] = values.tolist()
    if not np.isfinite(values).all():
        for i in np.flatnonzero(~np.isfinite(values)):
            x = out[i]
            out[i] = "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return out


def is_spool(path: Path) -> bool:
    """True when the first non-empty line is a metric batch (``series``) or a spool record
    wrapping one (``body``)."""
    if path.is_dir():
        return False
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                if not line.startswith(b"{"):
                    return False
                try:
                    obj = json.loads(line)
                except ValueError:
                    return False
                return isinstance(obj, dict) and ("series" in obj or isinstance(obj.get("body"),
                                                                                 dict))
    except OSError:
        return False
    return False


def content_run_id(columns: dict[str, tuple[np.ndarray, np.ndarray]], *parts: Any) -> str:
    """A run id that names this content and these settings: the same replay, the same run."""
    h = hashlib.sha256()
    for name in sorted(columns):
        s, v = columns[name]
        h.update(name.encode() + b"\0")
        h.update(np.ascontiguousarray(s, np.int64).tobytes())
        h.update(np.ascontiguousarray(v, np.float64).tobytes())
    h.update(json.dumps([str(p) for p in parts]).encode())
    return "replay-" + h.hexdigest()[:20]


def batches_from_columns(columns: dict[str, tuple[np.ndarray, np.ndarray]],
                         batch_steps: int) -> Iterator[OutBatch]:
    """Consecutive windows of ``batch_steps`` steps, with ids named by the window."""
    nonempty = [s for s, _ in columns.values() if s.size]
    if not nonempty:
        return
    lo = int(min(int(s.min()) for s in nonempty))
    hi = int(max(int(s.max()) for s in nonempty))
    for start in range(lo, hi + 1, batch_steps):
        end = min(start + batch_steps - 1, hi)
        series = []
        points = 0
        for name, (s, v) in columns.items():
            i0, i1 = np.searchsorted(s, [start, end + 1], side="left")
            if i1 > i0:
                series.append({"name": name, "steps": s[i0:i1].tolist(),
                               "values": _wire(v[i0:i1])})
                points += int(i1 - i0)
        if series:
            yield OutBatch({"batch_id": f"replay-{batch_steps}-{start}-{end}",
                            "series": series}, end - lo + 1, points)


def read_recording(args: argparse.Namespace) -> Recording:
    from rhythmd.cli import CommandError
    from rhythmd.interop import read_run
    from rhythmd.interop.conventions import DEFAULT_NAMES, resolve_metric_names

    path = Path(args.source)
    if is_spool(path):
        return read_spool(path)
    if args.batch_steps < 1:
        raise CommandError("--batch-steps must be at least 1", 2)
    data = read_run(args.source, args.tracking_uri)
    columns = data.columns
    if not columns:
        raise CommandError(f"{data.label} has no data points (expected step and metric columns)")
    names = resolve_metric_names(columns, args.train_metric, args.val_metric, args.lr_metric)
    config: dict[str, Any] = {k: v for k, v in names.items() if DEFAULT_NAMES.get(k) != v}
    batches = list(batches_from_columns(columns, args.batch_steps))
    last = max(int(s.max()) for s, _ in columns.values() if s.size)
    shown = path.name if path.exists() else data.label
    config = {"total_steps": args.total_steps or data.total_steps or last, **config,
              **data.origin, "source": f"rhythmd replay {shown}"}
    rid = args.run_id or content_run_id(columns, args.name or data.name, args.project,
                                        args.batch_steps, sorted(config.items()))
    return Recording("columns", batches, batches[-1].progress if batches else 0, last, rid,
                     config, data.name)


def read_spool(path: Path) -> Recording:
    """Batches of a client spool file, as recorded (branches and batch ids included)."""
    from rhythmd.cli import CommandError
    from rhythmd.interop.files import json_lines

    batches: list[OutBatch] = []
    run_ids: set[str] = set()
    progress = 0
    last = 0
    seen_steps: dict[int, int] = {}  # branch -> highest step sent
    for lineno, rec in json_lines(path):
        body = rec.get("body") if isinstance(rec.get("body"), dict) else rec
        if isinstance(rec.get("run_id"), str) and rec["run_id"]:
            run_ids.add(rec["run_id"])
        series = body.get("series")
        if not isinstance(series, list):
            raise CommandError(f"{path}:{lineno}: a metric batch needs a \"series\" list")
        body = {k: v for k, v in body.items() if k != "run_id"}
        if not body.get("batch_id"):
            body["batch_id"] = f"spool-{lineno}"
        steps = [int(x) for s in series if isinstance(s, dict)
                 for x in (s.get("steps") or []) if isinstance(x, (int, float))]
        points = len(steps)
        if steps:
            branch = int(body.get("branch") or 0)
            top = max(steps)
            prev = seen_steps.get(branch)
            # pace by new steps covered (a rollback branch revisits earlier steps)
            progress += len({x for x in steps if prev is None or x > prev})
            seen_steps[branch] = top if prev is None else max(prev, top)
            last = max(last, top)
        batches.append(OutBatch(body, progress, points))
    if not batches:
        raise CommandError(f"{path}: the spool file holds no metric batches")
    if len(run_ids) > 1:
        raise CommandError(f"{path} holds batches of {len(run_ids)} runs "
                           f"({', '.join(sorted(run_ids))}); pass --run-id to send them all "
                           "to one run", 2)
    return Recording("spool", batches, progress, last, next(iter(run_ids), None),
                     {"total_steps": last})


# ------------------------------------------------------------------------------ sending
def create_run(client: Client, rec: Recording, name: str, project: str | None,
               run_id: str | None, quiet: bool) -> str:
    from rhythmd.cli import CommandError

    body: dict[str, Any] = {"name": name, "project": project, "config": rec.config}
    if run_id:
        body["run_id"] = run_id
    try:
        doc = client.post("/v1/runs", body)
    except HTTPStatusError as exc:
        if exc.status == 409 and rec.kind == "spool" and run_id:
            if not quiet:
                print(f"run {run_id} exists with another name or project; attaching to it",
                      file=sys.stderr)
            return run_id
        if exc.status == 409:
            raise CommandError(f"{exc.detail}. Pass the run's own --name/--project, or another "
                               "--run-id") from None
        if exc.status == 422:
            raise CommandError(f"the daemon refused the run: {exc.detail}", 2) from None
        raise CommandError(f"cannot create the run ({exc.status}): {exc.detail}") from None
    return str(doc["run_id"])


def send_all(client: Client, run_id: str, rec: Recording, speed: float, show: bool
             ) -> dict[str, int]:
    """Send every batch, paced at ``speed`` steps/s; counts of what the daemon did."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rhythmd.cli import CommandError
    from rhythmd.cli.query import run_path

    counts = {"batches": 0, "accepted": 0, "duplicates": 0, "points": 0, "pending": 0}
    path = run_path(run_id, "/metrics")
    progress = Progress(TextColumn("[bold]replay[/bold]"), BarColumn(bar_width=24),
                        MofNCompleteColumn(), TextColumn("steps {task.description}"),
                        TimeElapsedColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=not show, transient=False)
    t0 = time.monotonic()
    with progress:
        task = progress.add_task("", total=max(rec.total_progress, 1))
        for b in rec.batches:
            if speed > 0:
                delay = t0 + b.progress / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                resp = client.post(path, b.body)
            except HTTPStatusError as exc:
                hint = ""
                if exc.status == 413:
                    hint = "; replay with a smaller --batch-steps"
                raise CommandError(f"batch {b.body.get('batch_id')} refused ({exc.status}): "
                                   f"{exc.detail}{hint}") from None
            counts["batches"] += 1
            counts["points"] += b.points
            if resp.get("duplicate"):
                counts["duplicates"] += 1
            else:
                counts["accepted"] += int(resp.get("accepted") or 0)
            pending = [r for r in resp.get("recommendations") or []
                       if r.get("status") == "pending"]
            counts["pending"] = len(pending)
            progress.update(task, completed=b.progress,
                            description=f"{counts['points']} points"
                                        + (f", {len(pending)} pending" if pending else ""))
    return counts


def run(args: argparse.Namespace) -> int:
    from rhythmd.cli import CommandError
    from rhythmd.cli.query import (
        console,
        diagnoses_table,
        esc,
        get_json,
        recommendations_table,
        run_path,
    )

    if args.speed < 0 or not math.isfinite(args.speed):
        raise CommandError("--speed must be >= 0 (0: as fast as possible)", 2)
    rec = read_recording(args)
    client = client_from_args(args)
    name = args.name or rec.name or Path(args.source).stem or "replay"
    run_id = create_run(client, rec, name, args.project, args.run_id or rec.run_id, args.json)
    show = not args.no_progress and not args.json
    t0 = time.monotonic()
    counts = send_all(client, run_id, rec, args.speed, show)
    elapsed = time.monotonic() - t0
    run_doc = get_json(client, run_path(run_id))
    finished = False
    if rec.kind == "columns" and not args.keep_running and run_doc.get("status") == "running":
        try:
            run_doc = client.post(run_path(run_id, "/finish"),
                                  {"status": "finished", "step": rec.last_step})
        except HTTPStatusError as exc:
            raise CommandError(f"every batch was sent, but marking run {run_id} finished "
                               f"failed ({exc.status}): {exc.detail}") from None
        finished = True
    diagnoses = get_json(client, run_path(run_id, "/diagnoses")).get("diagnoses", [])
    recs = get_json(client, run_path(run_id, "/recommendations")).get("recommendations", [])
    if args.json:
        print(json.dumps({"run_id": run_id, "url": client.url, **counts,
                          "seconds": round(elapsed, 3), "finished": finished,
                          "n_points": run_doc.get("n_points"), "diagnoses": diagnoses,
                          "recommendations": recs}, indent=2))
        return 0
    con = console()
    dup = f", {counts['duplicates']} already stored" if counts["duplicates"] else ""
    con.print(f"run id [bold]{esc(run_id)}[/bold]  ({client.url})")
    con.print(f"sent {counts['batches']} batches, {counts['points']} points in {elapsed:.1f} s: "
              f"{counts['accepted']} new points stored{dup}; the run holds "
              f"{run_doc.get('n_points')} points, last step {run_doc.get('last_step')}")
    if diagnoses:
        con.print(diagnoses_table(diagnoses))
    else:
        con.print("no diagnoses: the run looks healthy")
    if recs:
        con.print(recommendations_table(recs))
    else:
        con.print("no recommendations")
    con.print(f"more: rhythmd show {run_id} --url {client.url}", soft_wrap=True)
    return 0
