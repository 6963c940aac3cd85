"""``rhythmd runs``, ``rhythmd show RUN`` and ``rhythmd timeline RUN``: ask a daemon."""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
from typing import Any

from rhythmd.cli._http import (
    EXIT_CODES,
    Client,
    HTTPStatusError,
    add_daemon_args,
    client_from_args,
    num,
)

STATUSES = ("running", "finished", "failed", "stopped")


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "runs", help="list the runs a daemon knows (newest first)", formatter_class=fmt,
        description="List runs stored by a daemon, newest first: id, name, project, status, "
                    "last step, points, last update.",
        epilog="examples:\n  rhythmd runs\n  rhythmd runs --project demo --status running\n"
               "  rhythmd runs --url http://gpu-box:8000 --json\n\n" + EXIT_CODES)
    p.add_argument("--project", help="only runs of this project")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--limit", type=int, default=50, help="runs per page (default 50)")
    p.add_argument("--offset", type=int, default=0, help="runs to skip (default 0)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    add_daemon_args(p)
    p.set_defaults(func=run_runs)

    p = sub.add_parser(
        "show", help="one run: status, metrics, diagnoses, recommendations",
        formatter_class=fmt,
        description="Show one run: its status and current LR, the last and best value of each "
                    "metric, its diagnoses (what was detected, from which step) and the "
                    "recommendations issued (and what the client did with them).",
        epilog="examples:\n  rhythmd show 3f2a9c...\n  rhythmd show my-run --json\n\n"
               + EXIT_CODES)
    p.add_argument("run_id", metavar="RUN", help="run id (see `rhythmd runs`)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    add_daemon_args(p)
    p.set_defaults(func=run_show)

    p = sub.add_parser(
        "timeline", help="what happened to a run, in order", formatter_class=fmt,
        description="Everything that happened to a run, in order: diagnoses opened and "
                    "closed, recommendations issued, applied or rejected, rollbacks, schedule "
                    "segments, the end of the run. Uses GET /v1/runs/RUN/timeline, or the "
                    "event log (/events) and /diagnoses on daemons without it.",
        epilog="examples:\n  rhythmd timeline 3f2a9c...\n  rhythmd timeline my-run --json\n\n"
               + EXIT_CODES)
    p.add_argument("run_id", metavar="RUN", help="run id (see `rhythmd runs`)")
    p.add_argument("--json", action="store_true", help="print the items as JSON")
    add_daemon_args(p)
    p.set_defaults(func=run_timeline)


# ----------------------------------------------------------------------------- helpers
def run_path(run_id: str, suffix: str = "") -> str:
    return f"/v1/runs/{urllib.parse.quote(run_id, safe='')}{suffix}"


def get_run(client: Client, run_id: str) -> dict[str, Any]:
    """The run, or a CommandError (exit 1) saying how to find one."""
    from rhythmd.cli import CommandError

    try:
        return client.get(run_path(run_id))
    except HTTPStatusError as exc:
        if exc.status == 404:
            raise CommandError(f"run {run_id!r} not found at {client.url}; list the runs with "
                               "`rhythmd runs`") from None
        raise CommandError(f"cannot read run {run_id!r}: {exc.detail}") from None


def get_json(client: Client, path: str, params: dict[str, Any] | None = None) -> Any:
    from rhythmd.cli import CommandError

    try:
        return client.get(path, params=params)
    except HTTPStatusError as exc:
        raise CommandError(f"GET {path} failed ({exc.status}): {exc.detail}") from None


def fmt_num(v: Any) -> str:
    x = num(v)
    if x is None:
        return "-" if v is None else str(v)
    if math.isnan(x):
        return "[red]NaN[/red]"
    if math.isinf(x):
        return "[red]+inf[/red]" if x > 0 else "[red]-inf[/red]"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x)) if isinstance(v, int) else f"{x:.4g}"
    return f"{x:.4g}"


def fmt_lrs(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(fmt_num(x) for x in v[:4]) + ("…" if len(v) > 4 else "")
    return fmt_num(v)


def fmt_ago(ts: Any, now: float | None = None) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    dt = (now if now is not None else time.time()) - float(ts)
    if dt < 0:
        dt = 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if dt >= size:
            return f"{int(dt // size)}{unit} ago"
    return f"{int(dt)}s ago"


def fmt_time(ts: Any, short: bool = False) -> str:
    """Local time; ``short``: only the time of day when it is today."""
    if not isinstance(ts, (int, float)):
        return "-"
    t = time.localtime(float(ts))
    if short:
        today = time.localtime()
        if (t.tm_year, t.tm_yday) == (today.tm_year, today.tm_yday):
            return time.strftime("%H:%M:%S", t)
        return time.strftime("%m-%d %H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M:%S", t)


def fmt_params(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return ", ".join(f"{k}={_plain(v)}" for k, v in params.items())


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "|".join(_plain(x) for x in v)
    return str(v)


_STATUS_STYLE = {"running": "green", "healthy": "green", "finished": "blue", "failed": "red",
                 "diverging": "bold red", "stopped": "yellow", "stagnating": "yellow",
                 "oscillating": "yellow", "slow": "yellow", "lost": "magenta",
                 "pending": "cyan", "applied": "green", "rejected": "red", "expired": "dim",
                 "open": "yellow", "closed": "dim", "critical": "bold red", "high": "red",
                 "warning": "yellow"}


def styled(s: Any) -> str:
    text = "-" if s is None else str(s)
    style = _STATUS_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def esc(v: Any) -> str:
    """Free text for a rich cell (brackets are not markup)."""
    from rich.markup import escape

    return escape("" if v is None else str(v))


def console() -> Any:
    """A rich console on stdout; 120 columns when stdout is a file or a pipe (unless
    ``COLUMNS`` says otherwise), so piped tables are not squeezed to 80."""
    import os

    from rich.console import Console

    con = Console(highlight=False)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con = Console(highlight=False, width=120)
    return con


def diagnoses_table(diagnoses: list[dict[str, Any]]) -> Any:
    """id (kind-n), severity, steps (onset-closed, or open), flagged step, message."""
    from rich.table import Table

    t = Table(title=f"diagnoses ({len(diagnoses)})", title_justify="left")
    t.add_column("id", no_wrap=True)
    t.add_column("severity", no_wrap=True)
    t.add_column("steps", no_wrap=True, justify="right")
    t.add_column("flagged", no_wrap=True, justify="right")
    t.add_column("message", overflow="fold", ratio=1)
    for d in diagnoses:
        closed = d.get("closed_at_step")
        span = f"{d.get('onset_step')}-{'[yellow]open[/yellow]' if closed is None else closed}"
        t.add_row(esc(d.get("id") or d.get("kind")), styled(d.get("severity")), span,
                  str(d.get("detected_at_step")), esc(d.get("message", "")))
    return t


def recommendations_table(recs: list[dict[str, Any]]) -> Any:
    """issued step, action(params), status (and where applied, LR before -> after), reason."""
    from rich.table import Table

    t = Table(title=f"recommendations ({len(recs)})", title_justify="left")
    t.add_column("step", justify="right", no_wrap=True)
    t.add_column("action", overflow="fold")
    t.add_column("status", overflow="fold")
    t.add_column("reason", overflow="fold", ratio=1)
    for r in recs:
        status = styled(r.get("status"))
        if r.get("applied_step") is not None:
            status += f"@{r['applied_step']}"
        if r.get("lr_before") is not None or r.get("lr_after") is not None:
            status += f"\nlr {fmt_lrs(r.get('lr_before'))} → {fmt_lrs(r.get('lr_after'))}"
        reason = esc(r.get("reason", ""))
        if r.get("author") not in (None, "rhythmd"):
            reason += f" [dim](by {esc(r['author'])})[/dim]"
        if r.get("note"):
            reason += f" [dim]({esc(r['note'])})[/dim]"
        issued = r.get("issued_at_step")
        t.add_row("-" if issued is None else str(issued),
                  esc(f"{r.get('action')}({fmt_params(r.get('params'))})"), status, reason)
    return t


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


# ------------------------------------------------------------------------------ runs
def run_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rhythmd.cli import CommandError

    if args.limit < 1 or args.offset < 0:
        raise CommandError("--limit must be >= 1 and --offset >= 0", 2)
    client = client_from_args(args)
    doc = get_json(client, "/v1/runs", {"project": args.project, "status": args.status,
                                        "limit": args.limit, "offset": args.offset})
    if args.json:
        print_json(doc)
        return 0
    runs = doc.get("runs", [])
    total = doc.get("total", len(runs))
    con = console()
    if not runs:
        where = " matching the filters" if args.project or args.status else ""
        con.print(f"no runs{where} at {client.url} (total {total})")
        return 0
    now = time.time()
    t = Table(title=f"runs at {client.url}", title_justify="left")
    t.add_column("run id", no_wrap=True)
    t.add_column("name", overflow="fold", ratio=1, min_width=10)
    t.add_column("project", overflow="fold")
    t.add_column("status")
    t.add_column("step", justify="right")
    t.add_column("points", justify="right")
    t.add_column("updated", justify="right")
    for r in runs:
        t.add_row(esc(r.get("run_id")), esc(r.get("name")), esc(r.get("project") or "-"),
                  styled(r.get("status")),
                  "-" if r.get("last_step") is None else str(r.get("last_step")),
                  str(r.get("n_points", "-")), fmt_ago(r.get("updated_at"), now))
    con.print(t)
    shown_to = args.offset + len(runs)
    more = doc.get("next_offset")
    tail = f"; next page: --offset {more}" if more is not None else ""
    con.print(f"{args.offset + 1}-{shown_to} of {total} runs{tail}")
    return 0


# ------------------------------------------------------------------------------ show
def collect_show(client: Client, run_id: str) -> dict[str, Any]:
    run = get_run(client, run_id)
    summary = get_json(client, run_path(run_id, "/summary"))
    diagnoses = get_json(client, run_path(run_id, "/diagnoses")).get("diagnoses", [])
    recs = get_json(client, run_path(run_id, "/recommendations")).get("recommendations", [])
    return {"run": run, "summary": summary, "diagnoses": diagnoses, "recommendations": recs}


def run_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    client = client_from_args(args)
    doc = collect_show(client, args.run_id)
    if args.json:
        print_json(doc)
        return 0
    run, summary = doc["run"], doc["summary"]
    con = console()
    status = summary.get("status")
    con.print(f"[bold]run {esc(run['run_id'])}[/bold]  {esc(run.get('name'))}"
              + (f"  (project {esc(run['project'])})" if run.get("project") else ""))
    facts = [f"status {styled(status)}"]
    if summary.get("run_status") and summary.get("run_status") != status:
        facts[0] += f" ({summary['run_status']})"
    facts.append(f"last step {run.get('last_step') if run.get('last_step') is not None else '-'}")
    facts.append(f"current lr {fmt_num(summary.get('current_lr'))}")
    facts.append(f"{run.get('n_points', 0)} points in {run.get('n_batches', 0)} batches")
    if run.get("branch"):
        facts.append(f"branch {run['branch']} ({run['branch']} rollbacks)")
    facts.append(f"created {fmt_time(run.get('created_at'))}, updated "
                 f"{fmt_ago(run.get('updated_at'))}")
    con.print("  " + " · ".join(facts))
    cfg = run.get("config")
    if cfg:
        con.print("  config " + esc(", ".join(f"{k}={_plain(v)}" for k, v in cfg.items())),
                  soft_wrap=True)
    t = Table(title="metrics", title_justify="left")
    for col in ("metric", "last", "at step", "best", "best step", "points", "non-finite"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in (summary.get("metrics") or {}).items():
        t.add_row(esc(name), fmt_num(m.get("last")), _s(m.get("last_step")),
                  fmt_num(m.get("best")), _s(m.get("best_step")), _s(m.get("points")),
                  _s(m.get("nonfinite_points", "-")))
    con.print(t)
    if doc["diagnoses"]:
        con.print(diagnoses_table(doc["diagnoses"]))
    else:
        con.print("no diagnoses: nothing detected so far")
    if doc["recommendations"]:
        con.print(recommendations_table(doc["recommendations"]))
    else:
        con.print("no recommendations")
    return 0


def _s(v: Any) -> str:
    return "-" if v is None else str(v)


# -------------------------------------------------------------------------- timeline
def collect_timeline(client: Client, run_id: str) -> list[dict[str, Any]]:
    """The run's timeline items."""
    get_run(client, run_id)
    return list(get_json(client, run_path(run_id, "/timeline")).get("items", []))


_KIND_STYLE = {"diagnosis_opened": "yellow", "diagnosis_closed": "dim",
               "recommendation_issued": "cyan", "recommendation_applied": "green",
               "recommendation_rejected": "red", "rollback": "magenta",
               "schedule_segment": "blue", "run_finished": "bold"}


def run_timeline(args: argparse.Namespace) -> int:
    from rich.table import Table

    client = client_from_args(args)
    items = collect_timeline(client, args.run_id)
    if args.json:
        print_json({"run_id": args.run_id, "items": items})
        return 0
    con = console()
    if not items:
        con.print(f"run {esc(args.run_id)}: nothing happened yet (no diagnoses, recommendations "
                  "or events)")
        return 0
    t = Table(title=f"timeline of run {esc(args.run_id)}", title_justify="left")
    t.add_column("step", justify="right")
    t.add_column("time", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("what", overflow="fold", ratio=1)
    for it in items:
        kind = str(it.get("kind"))
        style = _KIND_STYLE.get(kind)
        t.add_row(_s(it.get("step")), fmt_time(it.get("wall_time"), short=True)
                  if it.get("wall_time") else "", f"[{style}]{kind}[/{style}]" if style else kind,
                  esc(it.get("title", "")))
    con.print(t)
    return 0
