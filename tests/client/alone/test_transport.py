"""Transport: batching, idempotent retries, outages, bounds and the spool (stdlib fake daemon)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from fake_daemon import FakeDaemon

from rhythmd_client.transport import Chunk, Transport


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def chunk(start: int, n: int, branch: int = 0) -> Chunk:
    steps = list(range(start, start + n))
    return Chunk(branch, None, [("loss", steps, [float(s) for s in steps],
                                 [1.7e9 + s for s in steps])])


def make(url: str, **kw: object) -> Transport:
    args: dict[str, object] = {"run_name": "t", "interval_s": 0.02, "backoff_s": 0.02,
                               "backoff_max_s": 0.2, "timeout_s": 2.0}
    args.update(kw)
    return Transport(url, **args)  # type: ignore[arg-type]


def loss_steps(fake: FakeDaemon, run_id: str) -> list[int]:
    return [s for s, _ in fake.state.points(run_id, "loss")]



def test_sends_all_points_with_unique_batch_ids(fake: FakeDaemon) -> None:
    tr = make(fake.url)
    for i in range(20):
        tr.submit(chunk(i * 50, 50))
    stats = tr.close()
    run = fake.state.run(tr.run_id)
    assert loss_steps(fake, tr.run_id) == list(range(1000))
    assert stats["sent"] == 1000 and stats["dropped"] == 0 and stats["errors"] == 0
    posts = [p for m, p in fake.state.requests if p.endswith("/metrics")]
    assert len(posts) == len(run["batches"])  # every batch id distinct, none resent
    assert run["finished"] == {"status": "finished", "step": None}


def test_lost_responses_are_retried_with_the_same_batch_id(fake: FakeDaemon) -> None:
    fake.state.drop_after_commit = 3  # stored, then the connection dies before the answer
    tr = make(fake.url)
    for i in range(10):
        tr.submit(chunk(i * 10, 10))
        time.sleep(0.01)
    stats = tr.close()
    assert loss_steps(fake, tr.run_id) == list(range(100))  # no duplicate points
    assert stats["retried"] >= 3 and stats["duplicates"] >= 1
    assert stats["sent"] == 100 and stats["dropped"] == 0


def test_503_with_retry_after_is_retried(fake: FakeDaemon) -> None:
    fake.state.fail_next = 4
    tr = make(fake.url)
    tr.submit(chunk(0, 30))
    stats = tr.close()
    assert loss_steps(fake, tr.run_id) == list(range(30))
    assert stats["retried"] >= 4 and stats["errors"] == 0


def test_daemon_down_at_start_then_up() -> None:
    fake = FakeDaemon()  # port chosen, nothing listening yet
    tr = make(fake.url)
    tr.submit(chunk(0, 40))
    assert wait_for(lambda: tr.stats["retried"] >= 2, 5)
    assert tr.daemon_up is False
    fake.start()
    try:
        tr.submit(chunk(40, 40))
        assert wait_for(lambda: tr.stats["sent"] == 80, 5), tr.stats
        assert loss_steps(fake, tr.run_id) == list(range(80))
        tr.close()
    finally:
        fake.stop()


def test_daemon_restart_keeps_every_point_once(fake: FakeDaemon) -> None:
    tr = make(fake.url)
    tr.submit(chunk(0, 50))
    assert wait_for(lambda: tr.stats["sent"] == 50)
    fake.stop()
    for i in range(1, 6):
        tr.submit(chunk(i * 50, 50))
        time.sleep(0.02)
    assert wait_for(lambda: tr.stats["retried"] >= 1)
    fake.start()
    stats = tr.close()
    assert loss_steps(fake, tr.run_id) == list(range(300))
    assert stats["sent"] == 300 and stats["dropped"] == 0


def test_buffer_bound_drops_oldest_first() -> None:
    fake = FakeDaemon()
    tr = make(fake.url, max_points=200, max_batch_points=50)
    for i in range(20):  # 1000 points while the daemon is down
        tr.submit(chunk(i * 50, 50))
    assert wait_for(lambda: tr.stats["dropped"] >= 800 - 50, 5), tr.stats
    fake.start()
    try:
        stats = tr.close()
        got = loss_steps(fake, tr.run_id)
        assert stats["dropped"] + stats["sent"] == 1000
        assert 150 <= len(got) <= 250
        assert got[-50:] == list(range(950, 1000))  # the newest survive
        assert got == sorted(got)
    finally:
        fake.stop()


def test_spool_instead_of_dropping_then_upload(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    fake = FakeDaemon()
    tr = make(fake.url, max_points=100, max_batch_points=50, spool_path=spool)
    for i in range(10):
        tr.submit(chunk(i * 50, 50))
    assert wait_for(lambda: tr.stats["spooled"] >= 400, 5), tr.stats
    assert spool.stat().st_size > 0
    fake.start()
    try:
        assert wait_for(lambda: tr.stats["sent"] == 500, 5), tr.stats
        stats = tr.close()
        assert loss_steps(fake, tr.run_id) == list(range(500))
        assert stats["dropped"] == 0 and stats["spool_uploaded"] >= 400
        assert spool.read_bytes() == b""
    finally:
        fake.stop()


def test_spool_left_at_close_is_uploaded_by_the_next_session(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    fake = FakeDaemon()
    tr = make(fake.url, spool_path=spool)
    tr.submit(chunk(0, 60))
    stats = tr.close(timeout_s=0.5)
    assert stats["spooled"] == 60 and stats["dropped"] == 0
    line = json.loads(spool.read_text().splitlines()[0])
    assert line["run_id"] == tr.run_id and line["body"]["batch_id"]
    fake.start()
    try:
        tr2 = make(fake.url, run_id=tr.run_id, spool_path=spool)
        assert wait_for(lambda: tr2.stats["spool_uploaded"] == 60, 5)
        tr2.close()
        assert loss_steps(fake, tr.run_id) == list(range(60))
        assert spool.read_bytes() == b""
    finally:
        fake.stop()


def test_run_lost_by_daemon_is_recreated_with_the_same_id(fake: FakeDaemon) -> None:
    tr = make(fake.url)
    tr.submit(chunk(0, 10))
    assert wait_for(lambda: tr.stats["sent"] == 10)
    rid = tr.run_id
    fake.state.runs.clear()  # the daemon lost its database
    tr.submit(chunk(10, 10))
    tr.close()
    assert tr.run_id == rid and loss_steps(fake, rid) == list(range(10, 20))


def test_client_errors_are_not_retried(fake: FakeDaemon) -> None:
    fake.state.max_points = 5  # every batch gets 413
    tr = make(fake.url)
    tr.submit(chunk(0, 10))
    stats = tr.close()
    assert stats["retried"] == 0 and stats["errors"] == 1 and stats["dropped"] == 10


def test_attach_to_existing_run_and_receive_recommendations(fake: FakeDaemon) -> None:
    tr0 = make(fake.url, run_id="given-run")
    tr0.close()
    rec = fake.state.add_rec("given-run", "reduce_lr", {"factor": 0.5})
    got: list[str] = []
    tr = make(fake.url, run_id="given-run", on_recommendation=lambda: got.append("x"))
    tr.submit(chunk(0, 5))
    assert wait_for(lambda: tr.has_recs)
    recs = tr.take_recommendations()
    assert [r["id"] for r in recs] == [rec] and got and not tr.has_recs
    tr.ack(rec, {"status": "applied", "step": 4, "lr_before": [1.0], "lr_after": [0.5],
                 "note": ""})
    tr.close()
    run = fake.state.run("given-run")
    assert run["acks"][0]["id"] == rec and run["acks"][0]["status"] == "applied"
    # the same recommendation came back in later responses but was queued once
    assert tr.stats["recommendations"] == 1


def test_unresponsive_daemon_never_blocks_submit() -> None:
    with socket.socket() as lsock:  # accepts connections (backlog) but never answers
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        url = f"http://127.0.0.1:{lsock.getsockname()[1]}"
        tr = make(url, timeout_s=0.5)
        worst = 0.0
        for i in range(200):
            t0 = time.perf_counter()
            tr.submit(chunk(i * 5, 5))
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.002)
        t0 = time.perf_counter()
        stats = tr.close(timeout_s=0.3)
        assert time.perf_counter() - t0 < 3.0
    assert worst < 0.05
    assert stats["dropped"] == 1000 and stats["sent"] == 0
