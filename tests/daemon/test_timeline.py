"""Summary, timeline and run lifecycle (finished, lost and back), in process on both backends."""

from __future__ import annotations

import time
import uuid

from fastapi.testclient import TestClient

from rhythmd.app import create_app
from rhythmd.config import Settings
from tests.daemon.test_analysis_ingest import DIVERGING, batches, read_curve


def test_diverging_run_summary_and_timeline(client):
    rid = client.post("/v1/runs", json={"name": "div", "config": {"total_steps": 600}}
                      ).json()["run_id"]
    for body in batches(read_curve(DIVERGING), 5):
        assert client.post(f"/v1/runs/{rid}/metrics", json=body).status_code == 200
    summary = client.get(f"/v1/runs/{rid}/summary").json()
    assert summary["status"] == "diverging" and summary["health"] == "diverging"
    assert summary["current_lr"] == 0.299937  # the last lr in the file
    assert summary["metrics"]["train_loss"]["last"] in ("Infinity", "NaN")
    assert summary["metrics"]["train_loss"]["nonfinite_points"] >= 1
    best = summary["metrics"]["val_loss"]
    assert best["best"] <= best["last"] if isinstance(best["last"], float) else best["best"]
    assert summary["counts"]["recommendations"] == {"pending": 1}
    listed = client.get("/v1/runs", params={"status": "diverging"}).json()["runs"]
    assert rid in [r["run_id"] for r in listed]
    assert client.get(f"/v1/runs/{rid}").json()["state"] == "diverging"

    rec = client.get(f"/v1/runs/{rid}/recommendations").json()["recommendations"][0]
    client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", json={
        "status": "applied", "step": 50, "lr_before": [0.3], "lr_after": [0.09]})
    client.post(f"/v1/runs/{rid}/metrics", json={
        "batch_id": "after", "branch": 1, "branch_start_step": 50,
        "series": [{"name": "train_loss", "steps": [50, 51], "values": [0.9, 0.85]}]})
    client.post(f"/v1/runs/{rid}/finish", json={"status": "finished", "step": 51})

    items = client.get(f"/v1/runs/{rid}/timeline").json()["items"]
    kinds = [i["kind"] for i in items]
    for k in ("diagnosis_opened", "recommendation_issued", "recommendation_applied",
              "rollback", "schedule_segment", "run_finished"):
        assert k in kinds, k
    assert kinds.index("diagnosis_opened") < kinds.index("recommendation_issued") \
        < kinds.index("recommendation_applied") < kinds.index("run_finished")
    rollback = items[kinds.index("rollback")]
    assert rollback["detail"]["resumed_at_step"] == 50
    assert rollback["detail"]["abandoned_to_step"] == 65
    issued = items[kinds.index("recommendation_issued")]
    diag_link = issued["links"]["diagnosis"]
    assert client.get(diag_link).json()["kind"] == "divergence"
    assert client.get(issued["links"]["recommendation"]).json()["status"] == "applied"
    assert all(i["title"] for i in items)
    assert client.get(f"/v1/runs/{rid}/summary").json()["status"] == "finished"
    assert client.get(f"/v1/runs/{rid}/diagnoses/nope").status_code == 404


def test_silent_run_becomes_lost_and_comes_back(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}",
                        lost_after_intervals=3, lost_min_seconds=0.5)
    with TestClient(create_app(settings)) as c:
        project = uuid.uuid4().hex
        rid = c.post("/v1/runs", json={"name": "l", "project": project}).json()["run_id"]
        for i in range(3):
            c.post(f"/v1/runs/{rid}/metrics", json={"series": [
                {"name": "train_loss", "steps": [i], "values": [1.0]}]})
            time.sleep(0.05)
        assert c.get(f"/v1/runs/{rid}/summary").json()["status"] == "healthy"
        time.sleep(0.7)
        assert c.get(f"/v1/runs/{rid}/summary").json()["status"] == "lost"
        lost = c.get("/v1/runs", params={"status": "lost", "project": project}).json()
        assert [r["run_id"] for r in lost["runs"]] == [rid]
        assert c.get("/v1/runs", params={"status": "healthy", "project": project}
                     ).json()["total"] == 0
        assert c.get(f"/v1/runs/{rid}/timeline").json()["items"][-1]["kind"] == "run_lost"
        c.post(f"/v1/runs/{rid}/metrics", json={"series": [
            {"name": "train_loss", "steps": [9], "values": [1.0]}]})
        assert c.get(f"/v1/runs/{rid}/summary").json()["status"] == "healthy"
        kinds = [i["kind"] for i in c.get(f"/v1/runs/{rid}/timeline").json()["items"]]
        assert "run_resumed" in kinds and "run_lost" not in kinds
