"""A real uvicorn over a real socket, on SQLite and PostgreSQL; scale-out on PostgreSQL."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Daemon


def test_socket_round_trip_with_nan_literals(daemon):
    run = httpx.post(f"{daemon.url}/v1/runs", json={"name": "sock"}).json()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    # Exactly what Python's json.dumps writes for non-finite floats.
    body = json.dumps({"batch_id": "b0", "series": [
        {"name": "train_loss", "steps": [1, 2, 3], "values": [float("nan"), float("inf"), -1.5]},
    ]})
    assert "NaN" in body and "Infinity" in body
    conn.request("POST", f"/v1/runs/{run['run_id']}/metrics", body,
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert json.loads(resp.read())["accepted"] == 3
    conn.close()
    got = httpx.get(f"{daemon.url}/v1/runs/{run['run_id']}/metrics/train_loss").json()
    assert got["values"] == ["NaN", "Infinity", -1.5]
    assert httpx.get(f"{daemon.url}/openapi.json").status_code == 200
    assert httpx.get(f"{daemon.url}/docs").status_code == 200


def test_body_limit_while_streaming(daemon):
    run = httpx.post(f"{daemon.url}/v1/runs", json={"name": "big"}).json()

    def chunks():
        yield b'{"series": [{"name": "x", "steps": ['
        for _ in range(4000):  # ~20 MB, above the 16 MiB default, with no Content-Length
            yield b"1," * 2500
        yield b"1]}]}"

    r = httpx.post(f"{daemon.url}/v1/runs/{run['run_id']}/metrics", content=chunks(),
                   timeout=30)
    assert r.status_code == 413
    assert httpx.get(f"{daemon.url}/v1/runs/{run['run_id']}").json()["n_points"] == 0


def _stream(url: str | list[str], run_id: str, writer: int, n_batches: int, points: int,
            results: list, errors: list) -> None:
    urls = [url] if isinstance(url, str) else url
    with httpx.Client(timeout=30) as http:
        for b in range(n_batches):
            start = (writer * n_batches + b) * points
            body = {"batch_id": f"w{writer}-b{b}", "series": [
                {"name": "train_loss", "steps": list(range(start, start + points)),
                 "values": [1.0 / (1 + s) for s in range(start, start + points)]}]}
            for attempt in range(2):  # every batch is sent twice: a retry after a lost reply
                target = urls[(b + attempt) % len(urls)]
                r = http.post(f"{target}/v1/runs/{run_id}/metrics", json=body)
                if r.status_code != 200:
                    errors.append(r.text)
                    return
                results.append((r.json()["duplicate"], r.json()["seq_start"],
                                r.json()["accepted"]))


def _check_exactly_once(base: str, run_id: str, writers: int, n_batches: int, points: int,
                        results: list) -> None:
    total = writers * n_batches * points
    fresh = sorted((seq, n) for dup, seq, n in results if not dup)
    assert len(fresh) == writers * n_batches
    assert sum(1 for dup, _, _ in results if dup) == writers * n_batches
    # Arrival sequence numbers: contiguous, no overlap, across all writers and processes.
    expected = 0
    for seq, n in fresh:
        assert seq == expected
        expected += n
    assert expected == total
    got = httpx.get(f"{base}/v1/runs/{run_id}/metrics/train_loss").json()
    assert got["steps"] == list(range(total))
    assert httpx.get(f"{base}/v1/runs/{run_id}").json()["n_points"] == total


def test_concurrent_writers_exactly_once(daemon):
    run_id = httpx.post(f"{daemon.url}/v1/runs", json={"name": "conc"}).json()["run_id"]
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=_stream, args=(daemon.url, run_id, w, 15, 200, results,
                                                      errors)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _check_exactly_once(daemon.url, run_id, 4, 15, 200, results)


@pytest.mark.postgres
def test_two_daemon_processes_share_postgres(postgres_url, tmp_path):
    """Scale-out: two daemons on one PostgreSQL, each batch of one run sent to both in turn."""
    a = Daemon(postgres_url, log_path=tmp_path / "a.log").start()
    b = Daemon(postgres_url, log_path=tmp_path / "b.log").start()
    try:
        run_id = httpx.post(f"{a.url}/v1/runs", json={"name": "two"}).json()["run_id"]
        results: list = []
        errors: list = []
        threads = [threading.Thread(target=_stream, args=([a.url, b.url], run_id, w, 15, 100,
                                                          results, errors)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        _check_exactly_once(b.url, run_id, 4, 15, 100, results)
    finally:
        a.stop()
        b.stop()


@pytest.mark.postgres
def test_uvicorn_workers_on_postgres(postgres_url, tmp_path):
    d = Daemon(postgres_url, workers=2, log_path=tmp_path / "w.log").start()
    try:
        rid = httpx.post(f"{d.url}/v1/runs", json={"name": "w"}).json()["run_id"]
        for i in range(20):  # spread over both workers by the kernel
            with httpx.Client() as c:
                assert c.post(f"{d.url}/v1/runs/{rid}/metrics", json={"series": [
                    {"name": "x", "steps": [i], "values": [i]}]}).status_code == 200
        assert httpx.get(f"{d.url}/v1/runs/{rid}").json()["n_points"] == 20
    finally:
        d.stop()


def test_sqlite_is_single_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = Daemon(url, log_path=tmp_path / "first.log").start()
    try:
        second = Daemon(url, log_path=tmp_path / "second.log")
        with pytest.raises(RuntimeError):
            second.start(timeout=20)
        log = (tmp_path / "second.log").read_text()
        assert "single-process mode" in log and "PostgreSQL" in log
        assert httpx.get(f"{first.url}/healthz").json()["status"] == "ok"
    finally:
        first.stop()


def test_refuses_a_newer_schema(tmp_path):
    db = tmp_path / "future.db"
    url = f"sqlite:///{db}"
    d = Daemon(url).start()  # creates the schema
    d.stop()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO rhythmd_schema (version, applied_at) VALUES (99, 0)"))
    engine.dispose()
    late = Daemon(url, log_path=tmp_path / "late.log")
    with pytest.raises(RuntimeError):
        late.start(timeout=20)
    log = (tmp_path / "late.log").read_text()
    assert "schema is version 99" in log and "upgrade rhythmd" in log


def test_restart_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'keep.db'}"
    d = Daemon(url).start()
    rid = httpx.post(f"{d.url}/v1/runs", json={"name": "k"}).json()["run_id"]
    httpx.post(f"{d.url}/v1/runs/{rid}/metrics", json={"batch_id": "x", "series": [
        {"name": "loss", "steps": [1, 2], "values": ["NaN", 2.0]}]})
    d.stop(kill=True)
    time.sleep(0.2)
    d2 = Daemon(url).start()
    try:
        assert httpx.get(f"{d2.url}/v1/runs/{rid}/metrics/loss").json()["values"] == ["NaN", 2.0]
        again = httpx.post(f"{d2.url}/v1/runs/{rid}/metrics", json={"batch_id": "x", "series": [
            {"name": "loss", "steps": [1, 2], "values": ["NaN", 2.0]}]}).json()
        assert again["duplicate"] is True
    finally:
        d2.stop()
    assert Path(tmp_path / "keep.db").exists()



def test_start_up_sets_the_garbage_collector_threshold(tmp_path):
    """``RHYTHMD_GC_THRESHOLD``: the first threshold is set at start-up, the others kept;
    0 leaves Python's thresholds alone."""
    import gc

    from fastapi.testclient import TestClient

    from rhythmd.app import create_app
    from rhythmd.config import Settings

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}",
                                            gc_threshold=12_345))):
            assert gc.get_threshold() == (12_345, 10, 10)
        gc.set_threshold(700, 10, 10)
        with TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                            gc_threshold=0))):
            assert gc.get_threshold() == (700, 10, 10)
        assert Settings().gc_threshold == 50_000
    finally:
        gc.set_threshold(*saved)
