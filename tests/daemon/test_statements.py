"""``store.statements.FastStatement``: the hot-path statements behave as ``Connection.execute``
does, on both backends: parameters by name (positional or pyformat drivers), values bound in the
statement, rows as dicts, errors wrapped in SQLAlchemy's classes, the transaction shared, and
the engine's ``before_cursor_execute`` listeners told of every statement."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError

from rhythmd.store import runs as runs_q
from rhythmd.store.schema import batches, runs
from rhythmd.store.statements import FastStatement
from rhythmd.store.store import Store

_ADD = FastStatement(update(runs).where(runs.c.run_id == bindparam("rid")).values(
    n_batches=runs.c.n_batches + 1, n_points=runs.c.n_points + bindparam("add")))
_GET = FastStatement(select(runs.c.run_id, runs.c.n_points, runs.c.n_batches)
                     .where(runs.c.run_id == bindparam("rid")))
_INSERT_BATCH = FastStatement(insert(batches), column_keys=[
    "run_id", "batch_id", "seq_start", "n_points", "branch", "received_at"])


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.open()
    yield s
    s.close()


@pytest.fixture
def rid(store: Store) -> str:
    """A new run (the PostgreSQL database is shared by the session)."""
    run_id = f"fast-{uuid.uuid4().hex[:12]}"
    with store.write(run_id) as conn:
        runs_q.insert_run(conn, run_id, "one", "p", None, None)
    return run_id


def _batch(rid: str, batch_id: str) -> dict:
    return {"run_id": rid, "batch_id": batch_id, "seq_start": 0, "n_points": 3, "branch": 0,
            "received_at": 1.5}


def test_binds_fixed_values_and_rows_as_dicts(store: Store, rid: str) -> None:
    with store.write(rid) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 5}, {"rid": rid, "add": 2}])
        assert _GET.first(conn, {"rid": rid}) == {"run_id": rid, "n_points": 7, "n_batches": 2}
        assert _GET.first(conn, {"rid": "nope"}) is None
    with store.read() as conn:  # committed, and visible to Connection.execute
        row = conn.execute(select(runs.c.n_points).where(runs.c.run_id == rid)).one()
        assert row.n_points == 7


def test_errors_are_sqlalchemy_errors_and_roll_back_the_transaction(store: Store, rid: str
                                                                     ) -> None:
    with store.write(rid) as conn:
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b1")])
    with pytest.raises(IntegrityError), store.write(rid) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 100}])
        # b1 again: duplicate key
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b2"), _batch(rid, "b1")])
    with store.write(rid) as conn:  # nothing of the failed transaction stayed; the store works
        assert _GET.first(conn, {"rid": rid})["n_points"] == 0
        ids = conn.execute(select(batches.c.batch_id).where(batches.c.run_id == rid)).all()
        assert [r.batch_id for r in ids] == ["b1"]


def test_expanding_parameters_are_refused(store: Store) -> None:
    stmt = FastStatement(select(runs).where(runs.c.run_id.in_(bindparam("ids", expanding=True))))
    with store.read() as conn, pytest.raises(ValueError, match="expanding"):
        stmt.all(conn, {"ids": ["x"]})


# pipelined transactions (psycopg's pipeline mode on PostgreSQL; plain on SQLite) -------------

def test_pipelined_reads_and_writes_share_the_transaction(store: Store, rid: str) -> None:
    with store.write(rid, pipelined=True) as conn:
        before = _GET.submit(conn, {"rid": rid})  # sent, not yet read
        _ADD.executemany(conn, [{"rid": rid, "add": 4}])
        after = _GET.submit(conn, {"rid": rid})
        missing = _GET.submit(conn, {"rid": "nope"})
        # each read sees the statements sent before it, whenever its rows are taken
        assert after.first() == {"run_id": rid, "n_points": 4, "n_batches": 1}
        assert before.first() == {"run_id": rid, "n_points": 0, "n_batches": 0}
        assert missing.first() is None and missing.all() == []
        # Connection.execute works inside the pipeline too (the engine hook syncs it)
        n = conn.execute(select(runs.c.n_points).where(runs.c.run_id == rid)).scalar_one()
        assert n == 4
        conn.execute(update(runs).where(runs.c.run_id == rid).values(n_points=runs.c.n_points + 1))
        assert _GET.first(conn, {"rid": rid})["n_points"] == 5
    with store.read() as conn:
        assert conn.execute(select(runs.c.n_points).where(runs.c.run_id == rid)).scalar_one() == 5


def test_pipelined_error_is_wrapped_and_rolls_back(store: Store, rid: str) -> None:
    with store.write(rid) as conn:
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b1")])
    # the duplicate is only queued; its error surfaces at the next read (or at the end)
    with pytest.raises(IntegrityError), store.write(rid, pipelined=True) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 100}])
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b1")])
        _GET.first(conn, {"rid": rid})
    with pytest.raises(IntegrityError), store.write(rid, pipelined=True) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 100}])
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b1")])
    with store.write(rid, pipelined=True) as conn:  # nothing stayed; the pool's connection works
        assert _GET.first(conn, {"rid": rid})["n_points"] == 0
        _INSERT_BATCH.executemany(conn, [_batch(rid, "b2")])
    with store.read() as conn:
        ids = conn.execute(select(batches.c.batch_id).where(batches.c.run_id == rid)).all()
        assert sorted(r.batch_id for r in ids) == ["b1", "b2"]


def test_pipelined_transaction_fails_whole_on_an_application_error(store: Store, rid: str
                                                                   ) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.write(rid, pipelined=True) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 7}])
        raise RuntimeError("boom")
    with store.read() as conn:
        assert conn.execute(select(runs.c.n_points).where(runs.c.run_id == rid)).scalar_one() == 0


def test_save_state_is_an_upsert(store: Store, rid: str) -> None:
    from rhythmd.store import analysis as analysis_q

    with store.write(rid, pipelined=True) as conn:
        analysis_q.save_state(conn, rid, 10, {"a": 1.0})
        analysis_q.save_state(conn, rid, 20, {"a": float("nan")})
    with store.write(rid, pipelined=True) as conn:
        analysis_q.save_state(conn, rid, 30, {"a": float("inf")})
    with store.read() as conn:
        found = analysis_q.load_state(conn, rid).get()
    assert found is not None
    seq, state = found
    assert seq == 30 and state == {"a": float("inf")}


def test_upsert_diagnoses_replaces_by_id_and_keeps_created_at(store: Store, rid: str) -> None:
    from rhythmd.store import analysis as analysis_q
    from rhythmd.store.schema import diagnoses
    from rhythmd.store.statements import deferred_writes

    # a whole diagnosis as the analysis stores it: the PostgreSQL database is shared by the
    # session, and other tests (schemathesis) read every run's diagnoses through the API
    d = {"id": "stagnation-1", "kind": "stagnation", "metric": "val_loss", "status": "open",
         "severity": "warning", "detected_at_step": 40, "onset_step": 30, "confidence": 0.9,
         "evidence": {}, "message": "val_loss has stopped improving"}
    with store.write(rid, pipelined=True) as conn:
        analysis_q.upsert_diagnoses(conn, rid, [d])
    with store.read() as conn:
        created = conn.execute(select(diagnoses.c.created_at)
                               .where(diagnoses.c.run_id == rid)).scalar_one()
    with store.write(rid, pipelined=True) as conn, deferred_writes(conn):  # as a group does
        analysis_q.upsert_diagnoses(conn, rid, [{**d, "status": "closed", "severity": "info"},
                                                {**d, "id": "divergence-1", "kind": "divergence"}])
    with store.read() as conn:
        rows = conn.execute(select(diagnoses).where(diagnoses.c.run_id == rid)
                            .order_by(diagnoses.c.diagnosis_id)).mappings().all()
        got = analysis_q.list_diagnoses(conn, rid, "stagnation", None)
    assert [(r["diagnosis_id"], r["status"]) for r in rows] == [
        ("divergence-1", "open"), ("stagnation-1", "closed")]
    assert rows[1]["created_at"] == created and rows[1]["updated_at"] >= created
    assert got == [{**d, "status": "closed", "severity": "info"}]


def test_pipelined_transaction_on_a_dropped_connection_is_a_503_and_the_pool_recovers(
        store: Store, rid: str) -> None:
    """The server drops the pooled connection between two batches (a restart, an idle
    timeout): the next transaction fails as ``StoreUnavailableError`` (a 503 with a retry hint
    over HTTP), and the one after it works on a new connection, with no pre-ping."""
    if store.sqlite:
        pytest.skip("PostgreSQL: a server that can drop a connection")
    from sqlalchemy import create_engine, text

    from rhythmd.errors import StoreUnavailableError

    pid_of = FastStatement(text("SELECT pg_backend_pid() AS pid"))
    with store.write(rid, pipelined=True) as conn:
        pid = pid_of.first(conn, {})["pid"]
    admin = create_engine(store.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    admin.dispose()
    with pytest.raises(StoreUnavailableError), store.write(rid, pipelined=True) as conn:
        _ADD.executemany(conn, [{"rid": rid, "add": 1}])
        _GET.first(conn, {"rid": rid})
    with store.write(rid, pipelined=True) as conn:
        assert _GET.first(conn, {"rid": rid})["n_points"] == 0
        _ADD.executemany(conn, [{"rid": rid, "add": 2}])
    with store.read() as conn:
        assert conn.execute(select(runs.c.n_points).where(runs.c.run_id == rid)).scalar_one() == 2


def test_the_engines_statement_listeners_see_every_statement(store: Store, rid: str) -> None:
    seen: list[tuple[str, bool]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, executemany))

    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        with store.write(rid) as conn:
            _ADD.executemany(conn, [{"rid": rid, "add": 5}])
            _ADD.executemany(conn, [{"rid": rid, "add": 1}, {"rid": rid, "add": 2}])
            assert _GET.submit(conn, {"rid": rid}).first()["n_points"] == 8
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    ours = [(sql.split()[0].upper(), many) for sql, many in seen if "runs" in sql]
    assert ours == [("UPDATE", False), ("UPDATE", True), ("SELECT", False)], seen
