"""Analysis on ingest: diagnoses over HTTP, and the same diagnoses after a restart mid-run."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import event

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent, RunAnalyzer
from rhythmd.batch import MetricBatch, SeriesData
from rhythmd.service import Service
from rhythmd.store import Store

DATA = Path(__file__).resolve().parents[1] / "data" / "e2e"
DIVERGING = DATA / "diabetes_mlp__sgd__lr0.3__warmup_cosine__bs32__s0.csv"  # blowup_step 55
STAGNATING = DATA / "digits_mlp__adam__lr0.001__cosine__bs64__s0.csv"  # stagnation onset 300


def read_curve(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            for name in ("train_loss", "lr", "val_loss", "val_acc"):
                if row[name] != "":
                    out.setdefault(name, []).append((int(row["step"]), float(row[name])))
    return out


def constant_lr(curve: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """The curve with its LR stream held at the first LR: a plateau the policy cuts (it leaves
    a flat stretch inside the run's own cosine decay alone)."""
    first = curve["lr"][0][1]
    return {**curve, "lr": [(s, first) for s, _ in curve["lr"]]}


def batches(curve: dict[str, list[tuple[int, float]]], every: int):
    last = max(s for pts in curve.values() for s, _ in pts)
    for lo in range(1, last + 1, every):
        series = []
        for name, pts in curve.items():
            chunk = [(s, v) for s, v in pts if lo <= s < lo + every]
            if chunk:
                series.append({"name": name, "steps": [s for s, _ in chunk],
                               "values": [v if math.isfinite(v) else str(v).replace(
                                   "inf", "Infinity").replace("nan", "NaN") for _, v in chunk]})
        yield {"batch_id": f"b{lo}", "series": series}


def test_divergence_read_back_over_http(daemon):
    rid = httpx.post(f"{daemon.url}/v1/runs", json={
        "name": "diverging", "config": {"total_steps": 600}}).json()["run_id"]
    for body in batches(read_curve(DIVERGING), 5):
        r = httpx.post(f"{daemon.url}/v1/runs/{rid}/metrics", json=body)
        assert r.status_code == 200, r.text
    got = httpx.get(f"{daemon.url}/v1/runs/{rid}/diagnoses",
                    params={"kind": "divergence"}).json()["diagnoses"]
    assert got, "the blow-up was not diagnosed"
    first = got[0]
    assert first["detected_at_step"] <= 55 + 20
    assert first["metric"] == "train_loss" and first["message"]
    assert {"id", "kind", "onset_step", "severity", "confidence", "evidence"} <= set(first)
    kinds = [e["kind"] for e in httpx.get(f"{daemon.url}/v1/runs/{rid}/events").json()["events"]]
    assert "diagnosis_opened" in kinds
    recs = httpx.get(f"{daemon.url}/v1/runs/{rid}/recommendations").json()["recommendations"]
    assert recs[0]["action"] == "rollback" and recs[0]["author"] == "rhythmd"
    assert recs[0]["diagnosis_id"] == first["id"] and recs[0]["status"] == "pending"
    assert 0 < recs[0]["params"]["lr_factor"] < 1
    segments = httpx.get(f"{daemon.url}/v1/runs/{rid}/schedule").json()["segments"]
    assert segments and segments[0]["start_step"] <= 5


def _to_batch(body: dict) -> MetricBatch:
    import numpy as np

    from rhythmd.batch import NONFINITE_STRINGS

    return MetricBatch(body["batch_id"], 0, None, tuple(
        SeriesData(s["name"], np.array(s["steps"], dtype=np.int64),
                   np.array([NONFINITE_STRINGS.get(v, v) if isinstance(v, str) else v
                             for v in s["values"]], dtype=np.float64))
        for s in body["series"]))


def test_restart_mid_run_rebuilds_the_same_diagnoses(database_url):
    curve = read_curve(STAGNATING)
    all_batches = [_to_batch(b) for b in batches(curve, 10)]

    def run(restart_every: int | None) -> list[dict]:
        store = Store(database_url)
        store.open()
        service = Service(store)
        service.analyzers.save_every_batches = 7
        rid = service.create_run("s", config={"total_steps": 800})[0]["run_id"]
        for i, b in enumerate(all_batches):
            if restart_every and i and i % restart_every == 0:
                service = Service(store)  # a fresh process: empty analyzer cache
                service.analyzers.save_every_batches = 7
            service.ingest(rid, b)
        out = service.list_diagnoses(rid)
        store.close()
        return out

    straight = run(None)
    restarted = run(13)
    assert straight, "expected diagnoses on a stagnating run"
    assert straight == restarted


def test_state_saved_on_its_cadence_only_loses_nothing_across_restarts(database_url):
    """The analyzer state is saved on its regular cadence, not when a diagnosis opens or
    closes: a process that restarts right after such a batch replays the batches after the
    saved state. After every batch a reader sees the diagnoses, recommendations and diagnosis
    events of a process that never restarted, with no event doubled."""
    diverging = [_to_batch(b) for b in batches(read_curve(DIVERGING), 5)]

    def run(restart_every: int | None) -> list[tuple]:
        store = Store(database_url)
        store.open()
        service = Service(store)
        service.analyzers.save_every_batches = 9
        rid = service.create_run("d", config={"total_steps": 600})[0]["run_id"]
        seen = []
        for i, b in enumerate(diverging):
            if restart_every and i and i % restart_every == 0:
                service = Service(store)  # a fresh process: empty analyzer cache
                service.analyzers.save_every_batches = 9
            service.ingest(rid, b)
            seen.append((_comparable(service.list_diagnoses(rid)),
                         [(r["action"], r["status"], r["issued_at_step"])
                          for r in service.list_recommendations(rid)],
                         [(e["kind"], e["step"], e["payload"]) for e in service.list_events(rid)
                          if e["kind"].startswith("diagnosis_")]))
        store.close()
        return seen

    straight = run(None)
    assert any(kind == "diagnosis_opened" for kind, _, _ in straight[-1][2])
    assert run(2) == straight
    assert run(5) == straight


def test_loss_is_analysed_as_the_train_loss(client):
    """The client hook and the trainers name the stream ``loss``."""
    rid = client.post("/v1/runs", json={"name": "alias"}).json()["run_id"]
    for body in batches(read_curve(DIVERGING), 5):
        for s in body["series"]:
            if s["name"] == "train_loss":
                s["name"] = "loss"
        assert client.post(f"/v1/runs/{rid}/metrics", json=body).status_code == 200
    got = client.get(f"/v1/runs/{rid}/diagnoses", params={"kind": "divergence"}).json()
    assert got["diagnoses"] and got["diagnoses"][0]["metric"] == "train_loss"


def _comparable(diags: list[dict]) -> list[dict]:
    """Diagnoses without their wall-clock fields."""
    return [{k: v for k, v in d.items() if not k.endswith("_at")} for d in diags]


def test_replicas_taking_turns_give_the_diagnoses_of_one(database_url):
    """Two services on one database (two replicas: separate analyzer caches) take the batches
    of each run in turn, as a round-robin balancer hands them out. Each one catches up on the
    other's batches (the replay query goes out with the batch's first reads once a replica has
    been behind), and the diagnoses, recommendations and schedule are those of one service
    taking every batch (the diagnosis events too: a replica knows what changed from its own
    analyzer, which has seen the other's batches)."""
    diverging = [_to_batch(b) for b in batches(read_curve(DIVERGING), 5)]
    stagnating = [_to_batch(b) for b in batches(read_curve(STAGNATING), 10)]

    def run(n_services: int, pattern: list[int] | None = None) -> list[tuple]:
        store = Store(database_url)
        store.open()
        services = [Service(store) for _ in range(n_services)]
        out = []
        for name, curve, total in (("d", diverging, 600), ("s", stagnating, 800)):
            rid = services[0].create_run(name, config={"total_steps": total})[0]["run_id"]
            for i, b in enumerate(curve):
                turn = pattern[i % len(pattern)] if pattern else i % n_services
                services[turn].ingest(rid, b)
            last = services[-1]
            out.append((_comparable(last.list_diagnoses(rid)),
                        [(r["action"], r["params"], r["issued_at_step"])
                         for r in last.list_recommendations(rid)],
                        last.schedule(rid),
                        [(e["kind"], e["step"], e["payload"]) for e in last.list_events(rid)
                         if e["kind"].startswith("diagnosis_")]))
        store.close()
        return out

    one = run(1)
    assert one[0][0] and one[0][1], "expected a diagnosed and answered divergence"
    assert one[1][0], "expected diagnoses on the stagnating run"
    assert run(2) == one  # strict alternation: every batch finds the other's to replay
    assert run(2, [0, 0, 1, 0, 1, 1, 1]) == one  # irregular turns: speculation right and wrong


def test_a_relapse_after_a_rollback_goes_back_before_the_restored_state(client):
    # a run blows up at step 120, is rolled back (the client restores its snapshot of step
    # 100 and resumes at 101 on branch 1) and blows up again right away: the restored state
    # was already damaged, so the second rollback must target an earlier snapshot
    rid = client.post("/v1/runs", json={"name": "relapse",
                                        "config": {"total_steps": 1000}}).json()["run_id"]

    def send(lo: int, hi: int, loss, branch: int = 0, start: int | None = None) -> dict:
        steps = list(range(lo, hi))
        body = {"batch_id": f"b{branch}-{lo}", "branch": branch, "series": [
            {"name": "train_loss", "steps": steps, "values": [loss(s) for s in steps]},
            {"name": "lr", "steps": steps, "values": [0.1] * len(steps)}]}
        if start is not None:
            body["branch_start_step"] = start
        r = client.post(f"/v1/runs/{rid}/metrics", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def healthy(s: int) -> float:
        return 2.0 * math.exp(-s / 40) + 0.5 + 0.02 * math.sin(s)

    for lo in range(0, 120, 10):
        send(lo, lo + 10, healthy)
    for lo in range(120, 200, 10):
        recs = send(lo, lo + 10, lambda s: healthy(s) * 1.15 ** (s - 119))["recommendations"]
        if recs:
            break
    first = recs[0]
    assert first["action"] == "rollback" and first["params"]["to_step"] >= 100
    ack = {"status": "applied", "step": lo + 9, "lr_before": [0.1],
           "lr_after": [0.1 * first["params"]["lr_factor"]]}
    assert client.post(f"/v1/runs/{rid}/recommendations/{first['id']}/ack",
                       json=ack).status_code == 200
    for lo2 in range(101, 200, 10):
        recs = send(lo2, lo2 + 10, lambda s: healthy(s) * 1.15 ** (s - 100), branch=1,
                    start=101 if lo2 == 101 else None)["recommendations"]
        if recs:
            break
    second = recs[0]
    assert second["action"] == "rollback" and second["id"] != first["id"]
    assert second["params"]["to_step"] < 100, second
    assert "after resuming from the state of step 100" in second["reason"]


@contextmanager
def _new_run(database_url: str, name: str, total_steps: int) -> Iterator[tuple[Service, str]]:
    """A service on the backend and a new run planned for ``total_steps``; closed after."""
    store = Store(database_url)
    store.open()
    try:
        service = Service(store)
        yield service, service.create_run(name, config={"total_steps": total_steps})[0]["run_id"]
    finally:
        store.close()


def test_diagnosis_events_record_what_changed(database_url):
    """``diagnosis_opened``/``closed`` for every opening and closing; ``diagnosis_updated``
    only when an update changed the diagnosis' severity (an open one's evidence is refreshed
    at every evaluation without an event)."""
    for path, every, total in ((DIVERGING, 5, 600), (STAGNATING, 10, 800)):
        curve = [_to_batch(b) for b in batches(read_curve(path), every)]
        analyzer = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": total}))
        expected = []
        for b in curve:
            before = analyzer.open_severities()
            latest: dict[str, DiagnosisEvent] = {}
            events = analyzer.feed({s.name: (s.steps, s.values) for s in b.series})
            for ev in events:
                latest[ev.diagnosis.id] = ev
            for ev in events:
                d = ev.diagnosis
                last = latest[d.id].diagnosis
                if ev.type == "updated" and (d.id not in before or (
                        last.severity, last.status) == (before[d.id], "open")):
                    continue
                expected.append((f"diagnosis_{ev.type}", ev.step, d.severity))
        assert any(k == "diagnosis_updated" for k, _, _ in expected), path.name
        with _new_run(database_url, "r", total) as (service, rid):
            for b in curve:
                service.ingest(rid, b)
            got = [(e["kind"], e["step"], e["payload"]["severity"])
                   for e in service.list_events(rid) if e["kind"].startswith("diagnosis_")]
        assert got == expected, path.name


@contextmanager
def _recommendation_reads(store: Store) -> Iterator[list[str]]:
    """The reads of the recommendations table, as the engine's statement listeners see them
    (every statement, the driver's compiled ones included): ``"history"`` for a read of all
    the run's recommendations, ``"pending"`` for a read filtered by status."""
    reads: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        sql = " ".join(statement.split())
        if sql.upper().startswith("SELECT") and "FROM recommendations" in sql:
            reads.append("pending" if "recommendations.status =" in sql else "history")

    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        yield reads
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)


def test_an_open_diagnosis_costs_its_batches_no_reads_of_their_own(database_url):
    """While a run has an open diagnosis, nearly every evaluation updates it, and the policy
    answers a persistent one (stagnation) by reading the run's recommendation history. That
    history comes with the batch's first reads (one round trip on PostgreSQL), as it does for
    a batch with a validation point, where diagnoses open: each batch reads the
    recommendations once."""
    curve = [_to_batch(b) for b in batches(constant_lr(read_curve(STAGNATING)), 10)]
    per_batch: list[list[str]] = []
    with _new_run(database_url, "s", 800) as (service, rid):
        for b in curve:
            with _recommendation_reads(service.store) as reads:
                service.ingest(rid, b)
            per_batch.append(reads)
        events = service.list_events(rid)
    issued = sum(e["kind"] == "recommendation_issued" for e in events)
    assert issued >= 2, events
    assert all(len(reads) == 1 for reads in per_batch), per_batch
    assert sum(reads == ["history"] for reads in per_batch) >= 8, per_batch


def test_each_batch_answers_the_pending_recommendations_as_stored(database_url):
    """The recommendations in a batch's answer are the run's pending ones after the batch,
    without reading them again after the policy issued or cancelled some: a pending one set by
    hand, cancelled by the divergence fix, and the fix itself."""
    curve = [_to_batch(b) for b in batches(read_curve(DIVERGING), 5)]
    with _new_run(database_url, "d", 600) as (service, rid):
        by_hand = service.create_recommendation(rid, "reduce_lr", {"factor": 0.5},
                                                reason="by hand", author="test")
        answers, stored = [], []
        for b in curve:
            with _recommendation_reads(service.store) as reads:
                answers.append([r["id"] for r in service.ingest(rid, b).recommendations])
            # the batch's first read, and no re-read of the pending ones after the policy acted
            assert reads[:1] in (["pending"], ["history"]) and "pending" not in reads[1:], reads
            stored.append([r["id"] for r in service.list_recommendations(rid, "pending")])
        final = {r["id"]: r for r in service.list_recommendations(rid)}
    assert answers == stored
    assert answers[0] == [by_hand["id"]]
    assert final[by_hand["id"]]["status"] == "expired"
    assert final[by_hand["id"]]["note"] == "superseded by a divergence fix"
    fixes = [i for i, r in final.items() if r["action"] == "rollback"]
    assert fixes and any(a == fixes[:1] for a in answers), answers
