"""``rhythmd replay``, ``runs``, ``show`` and ``timeline`` against a real daemon."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhythmd.cli.replay import batches_from_columns
from tests.cli.conftest import DIABETES, DIGITS
from tests.conftest import Daemon


def csv_points(path: Path) -> int:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return sum(1 for row in rows for cell in row[1:] if cell.strip())


def replay_json(cli: Any, *argv: Any) -> dict[str, Any]:
    r = cli("replay", *argv, "--json")
    assert r.code == 0, r
    return json.loads(r.out)


def test_replay_is_idempotent(cli: Any, daemon: Daemon) -> None:
    """Replaying the same file twice stores every point once (both backends)."""
    first = replay_json(cli, DIABETES, "--url", daemon.url, "--batch-steps", "10",
                        "--project", "cli")
    n = csv_points(DIABETES)
    assert first["accepted"] == n and first["duplicates"] == 0
    assert first["batches"] == 7 and first["n_points"] == n
    second = replay_json(cli, DIABETES, "--url", daemon.url, "--batch-steps", "10",
                         "--project", "cli")
    assert second["run_id"] == first["run_id"]
    assert second["accepted"] == 0 and second["duplicates"] == second["batches"] == 7
    run = httpx.get(f"{daemon.url}/v1/runs/{first['run_id']}").json()
    assert run["n_points"] == n and run["n_batches"] == 7
    assert run["status"] == "finished" and run["last_step"] == 65
    assert run["config"]["total_steps"] == 65
    # the daemon's analysis saw the divergence and asked for a rollback
    assert "divergence" in {d["kind"] for d in second["diagnoses"]}
    assert any(r["action"] == "rollback" for r in second["recommendations"])


def test_replay_prints_run_and_diagnoses(cli: Any, sqlite_daemon: Daemon) -> None:
    r = cli("replay", DIGITS, "--url", sqlite_daemon.url, "--name", "digits", "--no-progress")
    assert r.code == 0, r
    assert "run id replay-" in r.out
    # flat late in its own cosine decay: diagnosed, and deliberately not cut
    assert "stagnation" in r.out and "no recommendations" in r.out
    assert f"{csv_points(DIGITS)} new points stored" in r.out


def test_replay_speed_paces_the_batches(cli: Any, sqlite_daemon: Daemon) -> None:
    t0 = time.monotonic()
    out = replay_json(cli, DIABETES, "--url", sqlite_daemon.url, "--speed", "200",
                      "--batch-steps", "8", "--name", "paced")
    took = time.monotonic() - t0
    assert took >= 64 / 200 * 0.9  # 65 steps at 200 steps/s
    assert out["accepted"] == csv_points(DIABETES)


def test_replay_progress_bar_on_stderr(cli: Any, sqlite_daemon: Daemon) -> None:
    r = cli("replay", DIABETES, "--url", sqlite_daemon.url, "--name", "bar")
    assert r.code == 0, r
    assert "65/65" in r.err and "steps" in r.err


def test_batches_carry_stable_ids() -> None:
    from rhythmd.interop.files import read_columns

    cols = read_columns(DIABETES)
    a = [b.body["batch_id"] for b in batches_from_columns(cols, 20)]
    assert a == ["replay-20-1-20", "replay-20-21-40", "replay-20-41-60", "replay-20-61-65"]
    body = next(iter(batches_from_columns(cols, 100))).body
    values = next(s for s in body["series"] if s["name"] == "train_loss")["values"]
    assert "NaN" in values and "Infinity" in values  # non-finite values as the API's strings


def write_spool(path: Path, run_id: str) -> int:
    """A spool file as the client writes it ({run_id, points, body}), plus one bare batch
    and a rollback branch."""
    lines = []
    points = 0
    for i in range(4):
        steps = list(range(i * 10, i * 10 + 10))
        body = {"batch_id": f"sess-{i}", "branch": 0, "series": [
            {"name": "train_loss", "steps": steps, "values": [2.0 - 0.01 * s for s in steps],
             "wall_times": None},
            {"name": "lr", "steps": steps, "values": [0.1] * 10}]}
        points += 20
        lines.append({"run_id": run_id, "points": 20, "body": body})
    nan_batch = {"batch_id": "sess-4", "branch": 0, "series": [
        {"name": "train_loss", "steps": [40, 41], "values": [float("nan"), "Infinity"]}]}
    lines.append(nan_batch)  # a bare batch line, Python NaN literal included
    points += 2
    branch = {"batch_id": "sess-5", "branch": 1, "branch_start_step": 30, "series": [
        {"name": "train_loss", "steps": [30, 31, 32], "values": [1.7, 1.69, 1.68]}]}
    lines.append({"run_id": run_id, "points": 3, "body": branch})
    points += 3
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return points


def test_replay_spool_file(cli: Any, sqlite_daemon: Daemon, tmp_path: Path) -> None:
    spool = tmp_path / "rhythmd-spool.jsonl"
    n = write_spool(spool, "job-spool-1")
    out = replay_json(cli, spool, "--url", sqlite_daemon.url, "--name", "spooled")
    assert out["run_id"] == "job-spool-1"  # the spool names its run
    assert out["accepted"] == n and out["batches"] == 6 and not out["finished"]
    again = replay_json(cli, spool, "--url", sqlite_daemon.url)  # other name: attaches
    assert again["accepted"] == 0 and again["duplicates"] == 6
    run = httpx.get(f"{sqlite_daemon.url}/v1/runs/job-spool-1").json()
    assert run["n_points"] == n and run["branch"] == 1
    series = httpx.get(f"{sqlite_daemon.url}/v1/runs/job-spool-1/metrics/train_loss").json()
    assert series["values"][-1] == 1.68  # the latest branch's view


def test_runs_show_timeline(cli: Any, sqlite_daemon: Daemon) -> None:
    url = sqlite_daemon.url
    rid = replay_json(cli, DIABETES, "--url", url, "--name", "div", "--project", "q")["run_id"]
    r = cli("runs", "--url", url, "--project", "q")
    assert r.code == 0, r
    assert rid in r.out and "div" in r.out and "finished" in r.out and "1-1 of 1" in r.out
    r = cli("runs", "--url", url, "--project", "q", "--status", "running")
    assert r.code == 0 and "no runs" in r.out
    doc = json.loads(cli("runs", "--url", url, "--json").out)
    assert rid in [x["run_id"] for x in doc["runs"]]

    r = cli("show", rid, "--url", url)
    assert r.code == 0, r
    for text in ("train_loss", "val_loss", "NaN", "divergence-1", "critical", "rollback(",
                 "pending", "current lr"):
        assert text in r.out, text
    shown = json.loads(cli("show", rid, "--url", url, "--json").out)
    assert shown["run"]["run_id"] == rid and shown["diagnoses"]

    r = cli("timeline", rid, "--url", url)
    assert r.code == 0, r
    assert "diagnosis_opened" in r.out and "recommendation_issued" in r.out
    assert "run_finished" in r.out
    items = json.loads(cli("timeline", rid, "--url", url, "--json").out)["items"]
    steps = [i["step"] for i in items if i["kind"] == "diagnosis_opened"]
    assert steps and all(isinstance(s, int) for s in steps)


def test_unknown_run_exits_1(cli: Any, sqlite_daemon: Daemon) -> None:
    for cmd in ("show", "timeline"):
        r = cli(cmd, "no-such-run", "--url", sqlite_daemon.url)
        assert r.code == 1
        assert "not found" in r.err and "rhythmd runs" in r.err


@pytest.mark.parametrize("argv", [["runs"], ["show", "x"], ["timeline", "x"],
                                  ["replay", str(DIABETES)]])
def test_unreachable_daemon(cli: Any, argv: list[str]) -> None:
    from tests.conftest import free_port

    r = cli(*argv, "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert r.code == 1
    assert "is the daemon running? start it with `rhythmd serve`" in r.err
    assert "Traceback" not in r.err


def test_replay_usage_errors(cli: Any, tmp_path: Path) -> None:
    assert cli("replay", DIABETES, "--speed", "-1").code == 2
    assert cli("replay", DIABETES, "--batch-steps", "0").code == 2
    r = cli("replay", tmp_path / "nope.csv")
    assert r.code == 1 and "no such file" in r.err


@pytest.mark.parametrize("path", [DIABETES, DIGITS], ids=["diverging", "flat-in-cosine"])
def test_analyze_and_replay_agree(cli: Any, sqlite_daemon: Daemon, path: Path,
                                  tmp_path: Path) -> None:
    """The offline analysis and the daemon build the policy's context the same way: the same
    file gets the same diagnoses and recommendations (with no client applying any)."""
    offline = cli("analyze", path, "--json")
    assert offline.code == 0, offline
    off = json.loads(offline.out)
    off = off[0] if isinstance(off, list) else off
    live = replay_json(cli, path, "--url", sqlite_daemon.url, "--name", f"agree-{path.stem}",
                       "--run-id", f"agree-{path.stem[:20]}")
    assert sorted((d["kind"], d["detected_at_step"]) for d in off["diagnoses"]) == sorted(
        (d["kind"], d["detected_at_step"]) for d in live["diagnoses"])
    assert [(r["action"], r["params"], r["step"]) for r in off["recommendations"]] == [
        (r["action"], r["params"], r["issued_at_step"]) for r in live["recommendations"]]
