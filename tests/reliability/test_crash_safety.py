"""kill -9 the daemon while 4 clients stream, restart it: nothing acknowledged is lost, nothing
is stored twice, and the diagnoses rebuilt from storage equal those of an uncrashed run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.conftest import Daemon
from tests.reliability._helpers import (
    StreamLog,
    curve_bodies,
    diagnoses,
    series_all,
    stream_with_retries,
)

CLIENTS = 4
CONFIG = {"total_steps": 800}


def _create_run(url: str, name: str) -> str:
    r = httpx.post(f"{url}/v1/runs", json={"name": name, "config": CONFIG}, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def test_kill_9_while_streaming_loses_and_duplicates_nothing(database_url: str,
                                                           tmp_path: Path) -> None:
    bodies = curve_bodies(every=10)  # 80 batches of ~10 steps: train_loss, lr, val_*
    n_batches = len(bodies)
    expected_points = sum(len(s["steps"]) for b in bodies for s in b["series"])
    expected_loss_steps = sorted(s for b in bodies for x in b["series"]
                                 if x["name"] == "train_loss" for s in x["steps"])

    daemon = Daemon(database_url, log_path=tmp_path / "daemon.log").start()
    try:
        runs = [_create_run(daemon.url, f"crash-{c}") for c in range(CLIENTS)]
        logs = [StreamLog() for _ in range(CLIENTS)]
        deadline = time.monotonic() + 90
        threads = [threading.Thread(
            target=stream_with_retries,
            args=(lambda: daemon.url, runs[c], bodies, logs[c]),
            kwargs={"deadline": deadline, "pace_s": 0.01}, daemon=True) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        # Kill when about 40% of all batches were acknowledged: mid-stream for every client.
        while sum(len(lg.acked) for lg in logs) < 0.4 * CLIENTS * n_batches:
            assert time.monotonic() < deadline, "streaming did not progress"
            assert all(t.is_alive() for t in threads), [lg.other_errors for lg in logs]
            time.sleep(0.005)
        daemon.stop(kill=True)  # SIGKILL: no shutdown hook runs
        acked_before = [dict(lg.acked) for lg in logs]
        assert all(0 < len(a) < n_batches for a in acked_before), [len(a) for a in acked_before]
        time.sleep(0.5)  # the clients now see connection errors and back off
        daemon.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "clients did not finish in time"
        for lg in logs:
            assert not lg.other_errors, lg.other_errors
            assert len(lg.acked) == n_batches
        assert sum(lg.conn_errors + lg.retry_statuses for lg in logs) > 0, "no retry happened"

        for c, rid in enumerate(runs):
            # Every batch acknowledged before the kill is stored: resending it is a duplicate.
            for i in sorted(acked_before[c]):
                r = httpx.post(f"{daemon.url}/v1/runs/{rid}/metrics", json=bodies[i], timeout=10)
                assert r.status_code == 200, r.text
                assert r.json()["duplicate"] is True, (c, i)
                assert r.json()["seq_start"] == acked_before[c][i]["seq_start"]
            run = httpx.get(f"{daemon.url}/v1/runs/{rid}", timeout=10).json()
            assert run["n_points"] == expected_points, (c, run)
            assert run["n_batches"] == n_batches, (c, run)
            loss = series_all(daemon.url, rid, "train_loss")
            assert sorted(loss["steps"]) == expected_loss_steps, "a step is missing or twice"
            assert loss["total_points"] == len(expected_loss_steps)
            # One answer per batch (a "duplicate" answer names the first delivery, committed
            # by the killed process): their arrival sequence ranges tile [0, n_points) exactly.
            ranges = sorted((a["seq_start"], a["accepted"]) for a in logs[c].acked.values())
            nxt = 0
            for seq, n in ranges:
                assert seq == nxt, f"run {c}: gap or overlap at seq {seq} (expected {nxt})"
                nxt = seq + n
            assert nxt == expected_points

        # Diagnoses rebuilt from storage equal those of a run that never saw a crash.
        ref = _create_run(daemon.url, "reference")
        ref_log = StreamLog()
        stream_with_retries(lambda: daemon.url, ref, bodies, ref_log,
                            deadline=time.monotonic() + 60)
        assert not ref_log.other_errors and len(ref_log.acked) == n_batches
        want = diagnoses(daemon.url, ref)
        assert want, "the reference curve should produce diagnoses"
        for rid in runs:
            assert diagnoses(daemon.url, rid) == want
    finally:
        daemon.stop()
