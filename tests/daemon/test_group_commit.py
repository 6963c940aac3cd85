"""Group commit: ``Service.ingest_many`` stores several runs' batches in one transaction, with
the same outcome as storing them one by one, and a bad batch fails alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import event

from rhythmd.core.ingest import Ingestor, IngestResult
from rhythmd.errors import NotFoundError
from rhythmd.service import Service
from rhythmd.store import Store
from rhythmd.store import points as points_q
from tests.daemon.test_analysis_ingest import (
    DIVERGING,
    STAGNATING,
    _comparable,
    _to_batch,
    batches,
    read_curve,
)

CURVES = {"d": (DIVERGING, 5, 600), "s": (STAGNATING, 10, 800)}


def _outcome(service: Service, run_ids: list[str]) -> list[tuple]:
    out = []
    for rid in run_ids:
        run = service.get_run(rid)
        series = {m["name"]: service.read_metric(rid, m["name"]) for m in
                  service.list_metrics(rid)}
        out.append((
            {k: run[k] for k in ("n_points", "last_step", "status")},
            service.list_metrics(rid),
            {name: (v.steps.tolist(), v.values.tobytes()) for name, v in series.items()},
            _comparable(service.list_diagnoses(rid)),
            [(r["action"], r["params"], r["issued_at_step"], r["status"])
             for r in service.list_recommendations(rid)],
            service.schedule(rid),
        ))
    return out


def _services(store: Store, n: int) -> list[Service]:
    services = [Service(store) for _ in range(n)]
    for s in services:
        s.analyzers.save_every_batches = 5  # saved states to start from after a restart
    return services


def _run(database_url: str, grouped: bool, replicas: int = 1, restart_at: int | None = None,
         listener: Callable[..., None] | None = None) -> list[tuple]:
    """Four runs streamed one by one or in groups, through ``replicas`` services taking the
    rounds in turn (new ones at ``restart_at``); ``listener``: told of every statement."""
    tag = f"{'g' if grouped else 'o'}{replicas}{restart_at}"  # one database, fresh runs each
    store = Store(database_url)
    store.open()
    if listener is not None:
        event.listen(store.engine, "before_cursor_execute", listener)
    services = _services(store, replicas)
    streams = {}
    for i in range(4):  # two runs of each curve, started together
        name = "ds"[i % 2]
        path, every, total = CURVES[name]
        rid = services[0].create_run(f"{name}{i}", run_id=f"{tag}-{name}{i}",
                                     config={"total_steps": total})[0]["run_id"]
        streams[rid] = [_to_batch(b) for b in batches(read_curve(path), every)]
    rounds = max(len(s) for s in streams.values())
    for k in range(rounds):
        if k == restart_at:  # new processes: analyzers start from the saved states
            services = _services(store, replicas)
        items = [(rid, s[k]) for rid, s in streams.items() if k < len(s)]
        service = services[k % replicas]
        if grouped:
            results = service.ingest_many(items)
            assert all(isinstance(r, IngestResult) and not r.duplicate for r in results)
        else:
            for rid, batch in items:
                service.ingest(rid, batch)
    out = _outcome(services[-1], list(streams))
    store.close()
    return out


def test_groups_store_and_analyse_exactly_as_one_by_one(database_url):
    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    one_by_one = _run(database_url, grouped=False)
    assert one_by_one[0][3] and one_by_one[0][4], "expected a diagnosed and answered divergence"
    assert one_by_one[1][3], "expected diagnoses on the stagnating runs"
    assert _run(database_url, grouped=True, listener=listener) == one_by_one
    # two replicas taking the groups in turn, then restarted: cold analyzers (with and
    # without a saved state), replays and series lookups, read with the group's first round
    # trip
    assert _run(database_url, grouped=True, replicas=2) == one_by_one
    assert _run(database_url, grouped=True, replicas=2, restart_at=33) == one_by_one
    if "postgresql" in database_url:  # the group's rows went out in one statement each (an
        # unnest of arrays), and the first batches' new series were created in one
        for start in ("INSERT INTO chunks", "UPDATE series", "INSERT INTO series"):
            assert any(sql.startswith(start) and "unnest(" in sql for sql in statements), start
        # and its runs, batch ids and recommendations were read in one statement each
        for table, many in (("runs", "ANY ("), ("batches", "unnest("),
                            ("recommendations", "ANY (")):
            assert any(sql.startswith("SELECT ") and f"FROM {table} " in sql and many in sql
                       for sql in statements), table


def _stream(database_url: str) -> tuple[Store, Service, list, dict[str, str]]:
    """Three new runs (ids by letter; the database may be shared by the module) and the
    batches of a curve."""
    store = Store(database_url)
    store.open()
    service = Service(store)
    curve = [_to_batch(b) for b in batches(read_curve(STAGNATING), 10)]
    tag = uuid.uuid4().hex[:8]
    ids = {x: f"{tag}-{x}" for x in "abc"}
    for rid in ids.values():
        service.create_run(rid, run_id=rid)
    return store, service, curve, ids


def test_an_unknown_run_fails_alone(database_url):
    store, service, curve, ids = _stream(database_url)
    results = service.ingest_many([(ids["a"], curve[0]), ("nope", curve[0]),
                                   (ids["b"], curve[0])])
    assert isinstance(results[1], NotFoundError)
    assert [r.accepted for r in (results[0], results[2])] == [curve[0].n_points] * 2
    assert service.get_run(ids["a"])["n_points"] == service.get_run(ids["b"])["n_points"] > 0
    store.close()


def test_a_batch_that_fails_midway_costs_the_others_nothing(database_url, monkeypatch):
    store, service, curve, ids = _stream(database_url)
    a, b, c = ids["a"], ids["b"], ids["c"]
    write_series = points_q.write_series

    def failing(conn, run_id, *args, **kwargs):
        if run_id == b:
            raise RuntimeError("disk on fire")
        return write_series(conn, run_id, *args, **kwargs)

    monkeypatch.setattr(points_q, "write_series", failing)
    results = service.ingest_many([(a, curve[0]), (b, curve[0]), (c, curve[0])])
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], IngestResult) and isinstance(results[2], IngestResult)
    # the group was rolled back and the good batches stored again, each exactly once
    assert service.get_run(a)["n_points"] == service.get_run(c)["n_points"] == curve[0].n_points
    assert service.get_run(b)["n_points"] == 0
    monkeypatch.setattr(points_q, "write_series", write_series)
    again = service.ingest_many([(a, curve[0]), (b, curve[0]), (c, curve[1])])
    assert [r.duplicate for r in again] == [True, False, False]
    assert service.get_run(a)["n_points"] == service.get_run(b)["n_points"] == curve[0].n_points
    store.close()


def test_one_batch_per_run_and_group(database_url):
    store, service, curve, ids = _stream(database_url)
    with pytest.raises(ValueError, match="one batch per run"):
        service.ingest_many([(ids["a"], curve[0]), (ids["a"], curve[1])])
    store.close()


def test_overlapping_groups_in_two_processes_do_not_deadlock(postgres_url, monkeypatch):
    """Two replicas (two stores: separate pools and in-process locks) store groups of the same
    runs, listed in opposite orders, at the same time: the locks are taken in one global order
    (checked on every group), so no group waits on the other in a cycle (PostgreSQL would
    break the cycle with an error, and the group would fall back to one-by-one storing:
    counted here)."""
    import threading

    stores = [Store(postgres_url) for _ in range(2)]
    for s in stores:
        s.open()
    services = [Service(s) for s in stores]
    run_ids = [f"{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    for rid in run_ids:
        services[0].create_run(rid, run_id=rid)
    import rhythmd.store.store as store_module

    lock_runs = store_module.lock_runs_in_transaction
    locked: list[list[int]] = []

    def spy_locks(conn, keys):
        locked.append(list(keys))
        return lock_runs(conn, keys)

    monkeypatch.setattr(store_module, "lock_runs_in_transaction", spy_locks)
    fallbacks = []
    ingest = Ingestor.ingest
    monkeypatch.setattr(Ingestor, "ingest", lambda self, *a: fallbacks.append(a) or ingest(
        self, *a))
    curve = [_to_batch(b) for b in batches(read_curve(STAGNATING), 10)]
    errors = []

    def stream(k: int) -> None:
        order = run_ids if k == 0 else run_ids[::-1]
        try:
            for i in range(k, 40, 2):  # each replica its own batches of every run
                results = services[k].ingest_many([(rid, curve[i]) for rid in order])
                errors.extend(r for r in results if not isinstance(r, IngestResult))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert errors == [] and fallbacks == []
    assert len(locked) == 40 and all(keys == sorted(keys) for keys in locked)
    expected = sum(curve[i].n_points for i in range(40))
    assert [services[1].get_run(rid)["n_points"] for rid in run_ids] == [expected] * 6
    for s in stores:
        s.close()


def test_a_lost_database_fails_the_group_at_once(database_url, monkeypatch):
    from contextlib import contextmanager

    from rhythmd.errors import StoreUnavailableError

    store, service, curve, ids = _stream(database_url)

    @contextmanager
    def gone(run_ids):
        raise StoreUnavailableError("database unavailable: connection refused")
        yield  # pragma: no cover

    monkeypatch.setattr(store, "write_many", gone)
    monkeypatch.setattr(service.ingestor, "ingest",
                        lambda *a: pytest.fail("retried one by one"))
    results = service.ingest_many([(ids["a"], curve[0]), (ids["b"], curve[0])])
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert results[0] is not results[1]  # one error per request
    store.close()
