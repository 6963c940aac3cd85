"""The policy's loop through the API: what a client's answer to a recommendation triggers."""

from __future__ import annotations


def test_a_rejected_rollback_gets_its_fallback_at_once(client):
    rid = client.post("/v1/runs", json={"name": "nofix", "config": {"total_steps": 400}}
                      ).json()["run_id"]
    steps = list(range(1, 41))
    values = [2.3 - 0.01 * s for s in steps[:-1]] + ["NaN"]
    r = client.post(f"/v1/runs/{rid}/metrics", json={"batch_id": "b1", "series": [
        {"name": "train_loss", "steps": steps, "values": values},
        {"name": "lr", "steps": steps, "values": [0.1] * len(steps)}]})
    assert r.status_code == 200, r.text
    recs = r.json()["recommendations"]
    assert [x["action"] for x in recs] == ["rollback"]
    ack = client.post(f"/v1/runs/{rid}/recommendations/{recs[0]['id']}/ack",
                      json={"status": "rejected", "step": 40,
                            "note": "no snapshot keeper attached; cannot roll back"})
    assert ack.status_code == 200, ack.text
    pending = client.get(f"/v1/runs/{rid}/recommendations",
                         params={"status": "pending"}).json()["recommendations"]
    assert [x["action"] for x in pending] == ["warmup"], pending
    assert pending[0]["params"]["peak_factor"] == recs[0]["params"]["lr_factor"]
    assert pending[0]["diagnosis_id"] == recs[0]["diagnosis_id"]
    # acknowledging the rejection again changes nothing (idempotent), and issues nothing more
    client.post(f"/v1/runs/{rid}/recommendations/{recs[0]['id']}/ack",
                json={"status": "rejected", "step": 40, "note": "again"})
    assert len(client.get(f"/v1/runs/{rid}/recommendations",
                          params={"status": "pending"}).json()["recommendations"]) == 1


def test_a_revert_is_a_recommendation_like_any_other(client):
    rid = client.post("/v1/runs", json={"name": "rev"}).json()["run_id"]
    r = client.post(f"/v1/runs/{rid}/recommendations", json={
        "action": "revert", "params": {"to_step": 120, "change_id": "abc"}, "author": "alice",
        "reason": "that cut hurt"})
    assert r.status_code == 201, r.text
    bad = client.post(f"/v1/runs/{rid}/recommendations", json={
        "action": "revert", "params": {"to_step": 120}, "author": "alice", "reason": "x"})
    assert bad.status_code == 422 and "change_id" in bad.text


def test_ingest_answers_carry_the_blowup_bound_for_the_reflex(client):
    rid = client.post("/v1/runs", json={"name": "bound", "config": {"total_steps": 1000}}
                      ).json()["run_id"]

    def send(i: int, lo: int, hi: int) -> dict:
        steps = list(range(lo, hi))
        values = [2.3 * (1 + s / 50) ** -0.5 for s in steps]
        r = client.post(f"/v1/runs/{rid}/metrics", json={"batch_id": f"b{i}", "series": [
            {"name": "train_loss", "steps": steps, "values": values}]})
        assert r.status_code == 200, r.text
        return r.json()

    assert send(0, 1, 4)["blowup_bound"] is None  # no starting level yet (five steps)
    body = send(1, 4, 200)
    bound = body["blowup_bound"]
    assert bound is not None and 2.3 * 5 < bound < 2.3 * 1000  # about 10x above the start bar


def test_a_client_reports_its_own_change_as_applied(client):
    """The local reflex reports what it did: stored as applied at once (no client applies it
    again), then acknowledged with the LRs it set."""
    rid = client.post("/v1/runs", json={"name": "reflex"}).json()["run_id"]
    r = client.post(f"/v1/runs/{rid}/recommendations", json={
        "action": "rollback", "params": {"to_step": 10, "lr_factor": 0.1, "warmup_steps": 20,
                                         "warmup_start_factor": 0.1},
        "author": "rhythmd-client/reflex", "reason": "non-finite loss at step 14"})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["status"] == "pending"  # without auth every caller may steer: a plain issue
    ack = client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", json={
        "status": "applied", "step": 10, "lr_before": [0.5], "lr_after": [0.05]})
    assert ack.status_code == 200 and ack.json()["lr_before"] == [0.5]
