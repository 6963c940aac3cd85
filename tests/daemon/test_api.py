"""The v1 REST API, in process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import math
import uuid

import pytest


def new_run(client, **body):
    body.setdefault("name", "run")
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def post_raw(client, run_id, text):
    return client.post(f"/v1/runs/{run_id}/metrics", content=text,
                       headers={"content-type": "application/json"})


def series(client, run_id, name, **params):
    r = client.get(f"/v1/runs/{run_id}/metrics/{name}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_health(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["database"] == "ok" and r.json()["schema_version"] == 1


def test_create_get_list_runs(client):
    project = f"p-{uuid.uuid4().hex[:8]}"
    ids = [new_run(client, name=f"r{i}", project=project, config={"lr": 0.1, "total_steps": 800},
                   tags={"team": "x"}) for i in range(5)]
    run = client.get(f"/v1/runs/{ids[0]}").json()
    assert run["name"] == "r0" and run["project"] == project
    assert run["config"] == {"lr": 0.1, "total_steps": 800} and run["status"] == "running"
    page1 = client.get("/v1/runs", params={"project": project, "limit": 2}).json()
    assert page1["total"] == 5 and len(page1["runs"]) == 2 and page1["next_offset"] == 2
    seen = [r["run_id"] for r in page1["runs"]]
    offset = page1["next_offset"]
    while offset is not None:
        page = client.get("/v1/runs", params={"project": project, "limit": 2,
                                              "offset": offset}).json()
        seen += [r["run_id"] for r in page["runs"]]
        offset = page["next_offset"]
    assert sorted(seen) == sorted(ids)
    assert client.get("/v1/runs", params={"project": "nobody-" + project}).json()["total"] == 0


def test_client_chosen_run_id_is_idempotent(client):
    rid = f"job-{uuid.uuid4().hex[:8]}"
    r1 = client.post("/v1/runs", json={"name": "a", "run_id": rid})
    r2 = client.post("/v1/runs", json={"name": "a", "run_id": rid})
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r2.json()["run_id"] == rid
    r3 = client.post("/v1/runs", json={"name": "other", "run_id": rid})
    assert r3.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "name"), ({"name": ""}, "name"), ({"name": "a", "project": 3}, "project"),
     ({"name": "a", "config": [1]}, "config"), ({"name": "a", "extra": 1}, "extra"),
     ({"name": "a", "run_id": "no spaces"}, "run_id")],
)
def test_create_run_rejects_bad_fields(client, body, field):
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 422
    assert any(field in map(str, e["loc"]) for e in r.json()["detail"])


def test_unknown_run_is_404_everywhere(client):
    for method, path in [("get", "/v1/runs/nope"), ("get", "/v1/runs/nope/metrics"),
                         ("get", "/v1/runs/nope/metrics/train_loss"),
                         ("get", "/v1/runs/nope/recommendations"),
                         ("post", "/v1/runs/nope/finish")]:
        assert getattr(client, method)(path).status_code == 404, path
    r = client.post("/v1/runs/nope/metrics", json={"series": []})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_nonfinite_round_trip_exactly(client):
    rid = new_run(client)
    text = ('{"batch_id": "b-1", "series": [{"name": "train_loss", "steps": [1,2,3,4,5,6,7,8], '
            '"values": [0.5, NaN, Infinity, -Infinity, "NaN", "Infinity", "-Infinity", null]}]}')
    r = post_raw(client, rid, text)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 8 and r.json()["duplicate"] is False
    got = series(client, rid, "train_loss")
    assert got["steps"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert got["values"] == [0.5, "NaN", "Infinity", "-Infinity", "NaN", "Infinity",
                             "-Infinity", "NaN"]
    # The raw body has no bare literals a browser's JSON.parse would reject.
    raw = client.get(f"/v1/runs/{rid}/metrics/train_loss").text
    assert "NaN," not in raw.replace('"NaN",', "")
    listing = client.get(f"/v1/runs/{rid}/metrics").json()["metrics"]
    assert listing == [{"name": "train_loss", "points": 8, "nonfinite_points": 7,
                        "first_step": 1, "last_step": 8}]


def test_float_precision_survives(client):
    rid = new_run(client)
    values = [math.pi, 1e-308, 5e-324, 1.7976931348623157e308, -0.0, 0.1 + 0.2]
    client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "x", "steps": list(range(6)), "values": values}]})
    assert series(client, rid, "x")["values"] == values


def test_retried_batch_is_stored_once(client):
    rid = new_run(client)
    body = {"batch_id": "job1:0001", "series": [
        {"name": "train_loss", "steps": [1, 2, 3], "values": [3.0, 2.0, 1.0]},
        {"name": "lr", "steps": [1, 2, 3], "values": [0.1, 0.1, 0.1]}]}
    first = client.post(f"/v1/runs/{rid}/metrics", json=body).json()
    again = client.post(f"/v1/runs/{rid}/metrics", json=body).json()
    assert first["duplicate"] is False and again["duplicate"] is True
    assert again["accepted"] == first["accepted"] == 6
    assert series(client, rid, "train_loss")["steps"] == [1, 2, 3]
    assert client.get(f"/v1/runs/{rid}").json()["n_points"] == 6


def test_rejected_batch_changes_nothing(client):
    rid = new_run(client)
    client.post(f"/v1/runs/{rid}/metrics", json={"batch_id": "ok", "series": [
        {"name": "train_loss", "steps": [1], "values": [1.0]}]})
    before = client.get(f"/v1/runs/{rid}").json()
    bad = {"batch_id": "bad", "series": [
        {"name": "train_loss", "steps": [2, 3], "values": [1.0, 2.0]},
        {"name": "val_loss", "steps": [2, 3], "values": [1.0]}]}
    r = client.post(f"/v1/runs/{rid}/metrics", json=bad)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "series", 1, "values"]
    assert "match" in r.json()["detail"][0]["msg"]
    after = client.get(f"/v1/runs/{rid}").json()
    assert after["n_points"] == before["n_points"] == 1
    assert series(client, rid, "train_loss")["steps"] == [1]
    assert [m["name"] for m in client.get(f"/v1/runs/{rid}/metrics").json()["metrics"]] == [
        "train_loss"]
    # The same batch_id, fixed, is accepted: a rejection does not burn the id.
    bad["series"][1]["values"] = [1.0, 2.0]
    assert client.post(f"/v1/runs/{rid}/metrics", json=bad).json()["duplicate"] is False


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"series": [{"name": "a", "steps": [-1], "values": [1]}]}',
     '{"series": [{"name": "a b  c", "steps": [1], "values": [1]}]}', "[]", "null",
     '{"series": [{"name": "a", "steps": [1], "values": [[1]]}]}', b"\xff\xfe"],
)
def test_malformed_batches_are_422_not_500(client, text):
    rid = new_run(client)
    r = post_raw(client, rid, text)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"


def test_body_limit_is_413(client):
    rid = new_run(client)
    big = {"series": [{"name": "x", "steps": list(range(400_000)),
                       "values": [1.0] * 400_000}]}
    r = client.post(f"/v1/runs/{rid}/metrics", content=json.dumps(big))
    assert r.status_code == 413
    assert "RHYTHMD_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield b'{"series": [{"name": "x", "steps": ['
        for _ in range(300):
            yield b"1," * 5000
        yield b"1]}]}"

    r = client.post(f"/v1/runs/{rid}/metrics", content=chunks())
    assert r.status_code == 413
    many_points = {"series": [{"name": "x", "steps": list(range(60_000)),
                               "values": [1] * 60_000}]}
    r = client.post(f"/v1/runs/{rid}/metrics", json=many_points)
    assert r.status_code == 413 and "points" in r.json()["detail"]
    assert client.get(f"/v1/runs/{rid}").json()["n_points"] == 0


def test_metric_names_with_slashes(client):
    rid = new_run(client)
    client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "train/loss", "steps": [1], "values": [2.0]},
        {"name": "val/acc@1", "steps": [1], "values": [0.5]}]})
    assert series(client, rid, "train/loss")["values"] == [2.0]
    assert client.get(f"/v1/runs/{rid}/metrics/val%2Facc%401").json()["values"] == [0.5]
    assert client.get(f"/v1/runs/{rid}/metrics/val/acc@2").status_code == 404


def test_step_range_and_downsampling(client):
    rid = new_run(client)
    n = 20_000
    values = [1.0 / (1 + i) for i in range(n)]
    values[12_345] = 99.0
    values[15_000] = float("nan")
    for start in range(0, n, 5_000):
        client.post(f"/v1/runs/{rid}/metrics", json={"series": [
            {"name": "train_loss", "steps": list(range(start, start + 5_000)),
             "values": [v if v == v else "NaN" for v in values[start:start + 5_000]]}]})
    window = series(client, rid, "train_loss", start_step=4_990, end_step=5_009)
    assert window["steps"] == list(range(4_990, 5_010))
    small = series(client, rid, "train_loss", max_points=200)
    assert small["downsampled"] is True and small["total_points"] == n
    assert small["returned_points"] <= 201
    assert 99.0 in small["values"] and "NaN" in small["values"]
    assert small["steps"] == sorted(small["steps"])
    assert small["steps"][0] == 0 and small["steps"][-1] == n - 1


def test_repeated_steps_and_branches(client):
    rid = new_run(client)
    post = lambda body: client.post(f"/v1/runs/{rid}/metrics", json=body)  # noqa: E731
    post({"batch_id": "a", "series": [{"name": "loss", "steps": list(range(0, 10)),
                                       "values": [float(s) for s in range(10)]}]})
    # Rollback to step 6: branch 1 resumes there and overwrites nothing.
    post({"batch_id": "b", "branch": 1, "branch_start_step": 6,
          "series": [{"name": "loss", "steps": [6, 7, 8], "values": [60.0, 70.0, 80.0]}]})
    latest = series(client, rid, "loss")
    assert latest["steps"] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert latest["values"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 60.0, 70.0, 80.0]
    old = series(client, rid, "loss", branch="0")
    assert old["values"] == [float(s) for s in range(10)]
    everything = series(client, rid, "loss", branch="all")
    assert everything["total_points"] == 13
    assert everything["branches"] == [0] * 10 + [1] * 3
    assert everything["steps"] == [*range(10), 6, 7, 8]  # arrival order
    # A second rollback, further back than the first.
    post({"batch_id": "c", "branch": 2, "branch_start_step": 3,
          "series": [{"name": "loss", "steps": [3, 4], "values": [300.0, 400.0]}]})
    assert series(client, rid, "loss")["values"] == [0.0, 1.0, 2.0, 300.0, 400.0]
    assert series(client, rid, "loss", branch="1")["steps"] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # The same step twice on one branch: both kept, in arrival order.
    post({"batch_id": "d", "branch": 2, "series": [{"name": "loss", "steps": [4],
                                                    "values": [401.0]}]})
    assert series(client, rid, "loss")["values"][-2:] == [400.0, 401.0]
    branches = client.get(f"/v1/runs/{rid}/branches").json()["branches"]
    assert [(b["branch"], b["start_step"], b["parent_branch"]) for b in branches] == [
        (0, None, None), (1, 6, 0), (2, 3, 1)]
    run = client.get(f"/v1/runs/{rid}").json()
    assert run["branch"] == 2 and run["last_step"] == 4
    assert client.get(f"/v1/runs/{rid}/metrics/loss", params={"branch": "7"}).status_code == 404
    assert client.get(f"/v1/runs/{rid}/metrics/loss",
                      params={"branch": "newest"}).status_code == 422


def test_recommendations_by_hand_and_ack(client):
    rid = new_run(client)
    r = client.post(f"/v1/runs/{rid}/recommendations",
                    json={"action": "reduce_lr", "params": {"factor": 0.5}, "author": "alice",
                          "reason": "loss is flat"})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["status"] == "pending" and rec["author"] == "alice"
    ingest = client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "train_loss", "steps": [10], "values": [1.0]}]}).json()
    assert [x["id"] for x in ingest["recommendations"]] == [rec["id"]]
    ack = {"status": "applied", "step": 11, "lr_before": [0.1, 0.01], "lr_after": [0.05, 0.005]}
    done = client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", json=ack)
    assert done.status_code == 200 and done.json()["lr_after"] == [0.05, 0.005]
    # A retried ack is idempotent; a contradicting one is a conflict.
    assert client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack",
                       json=ack).status_code == 200
    assert client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack",
                       json={"status": "rejected"}).status_code == 409
    assert client.get(f"/v1/runs/{rid}/recommendations",
                      params={"status": "pending"}).json()["recommendations"] == []
    kinds = [e["kind"] for e in client.get(f"/v1/runs/{rid}/events").json()["events"]]
    assert kinds == ["recommendation_issued", "recommendation_applied"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"action": "explode"}, "action"), ({"action": "reduce_lr", "params": {}}, "factor"),
     ({"action": "reduce_lr", "params": {"factor": 2}}, "factor"),
     ({"action": "increase_lr", "params": {"factor": 0.5}}, "factor"),
     ({"action": "set_schedule", "params": {"kind": "cosine"}}, "T_max"),
     ({"action": "set_schedule", "params": {"kind": "multistep", "milestones": [5, 3]}},
      "milestones"),
     ({"action": "warmup", "params": {"warmup_steps": 0}}, "warmup_steps")],
)
def test_bad_recommendations_are_422(client, body, field):
    rid = new_run(client)
    r = client.post(f"/v1/runs/{rid}/recommendations", json=body)
    assert r.status_code == 422, r.text
    assert field in map(str, r.json()["detail"][0]["loc"])


def test_stale_recommendations_expire(client):
    rid = new_run(client)
    rec = client.post(f"/v1/runs/{rid}/recommendations",
                      json={"action": "stop", "expires_at_step": 5}).json()
    r = client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "train_loss", "steps": [6], "values": [1.0]}]}).json()
    assert r["recommendations"] == []
    got = client.get(f"/v1/runs/{rid}/recommendations").json()["recommendations"]
    assert [(x["id"], x["status"]) for x in got] == [(rec["id"], "expired")]


def test_finish_run(client):
    rid = new_run(client)
    r = client.post(f"/v1/runs/{rid}/finish", json={"status": "stopped", "step": 42})
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    assert r.json()["last_step"] == 42
    assert client.post(f"/v1/runs/{rid}/finish", json={"status": "exploded"}).status_code == 422


def test_openapi_documents_nonfinite_strings(client):
    spec = client.get("/openapi.json").json()
    values = spec["components"]["schemas"]["SeriesOut"]["properties"]["values"]
    assert {"enum": ["NaN", "Infinity", "-Infinity"], "type": "string"} in values["items"][
        "anyOf"] or "NaN" in json.dumps(values)
    body = spec["paths"]["/v1/runs/{run_id}/metrics"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("MetricBatchIn")
    assert "SeriesIn" in spec["components"]["schemas"]
