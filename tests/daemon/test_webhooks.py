"""Webhooks: a real local HTTP receiver, retries with backoff, once per event across processes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from rhythmd.app import create_app
from rhythmd.config import Settings
from tests.conftest import Daemon
from tests.daemon.test_analysis_ingest import DIVERGING, batches, read_curve


class Receiver:
    """A Slack-like endpoint that fails the first ``fail_first`` requests with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [m["rhythmd"]["event"] for m in self.received]

    def wait_for(self, n: int, timeout: float = 20.0, event: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= n and (event is None or event in self.events()):
                return
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()


def stream_diverging(post) -> str:
    rid = post("/v1/runs", {"name": "alerting", "config": {"total_steps": 600}})["run_id"]
    for body in batches(read_curve(DIVERGING), 5):
        post(f"/v1/runs/{rid}/metrics", body)
    return rid


def test_alerts_on_divergence_and_ack_with_retries(tmp_path):
    receiver = Receiver(fail_first=2)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}",
                        webhook_url=receiver.url, webhook_min_severity="high",
                        public_url="http://rhythmd.example:8000")
    try:
        with TestClient(create_app(settings)) as c:
            rid = stream_diverging(lambda path, body: c.post(path, json=body).json())
            receiver.wait_for(1)
            rec = c.get(f"/v1/runs/{rid}/recommendations").json()["recommendations"][0]
            c.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack",
                   json={"status": "applied", "step": 60, "lr_before": [0.3],
                         "lr_after": [0.09]})
            receiver.wait_for(2, timeout=30, event="recommendation_applied")
        events = receiver.events()
        # The divergence may open below "high" and alert when it escalates to it.
        assert events[0] in ("diagnosis_opened", "diagnosis_updated")
        assert "recommendation_applied" in events
        first = receiver.received[0]
        assert "divergence" in first["text"] and "alerting" in first["text"]
        assert f"http://rhythmd.example:8000/runs/{rid}" in first["text"]
        assert first["rhythmd"]["diagnosis"]["severity"] in ("high", "critical")
        assert receiver.attempts >= len(receiver.received) + 2  # two failures were retried
        assert len(events) == len(set(events))  # each event once
    finally:
        receiver.close()


def test_min_severity_filters(tmp_path):
    receiver = Receiver()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}",
                        webhook_url=receiver.url, webhook_min_severity="critical")
    try:
        with TestClient(create_app(settings)) as c:
            rid = c.post("/v1/runs", json={"name": "quiet"}).json()["run_id"]
            for i in range(0, 200, 20):  # a healthy, falling loss: nothing to say
                c.post(f"/v1/runs/{rid}/metrics", json={"series": [
                    {"name": "train_loss", "steps": list(range(i, i + 20)),
                     "values": [1 / (1 + s) for s in range(i, i + 20)]}]})
            time.sleep(1.0)
        assert receiver.received == []
    finally:
        receiver.close()


@pytest.mark.postgres
def test_each_webhook_sent_once_with_two_daemons(postgres_url, tmp_path):
    receiver = Receiver()
    env = {"RHYTHMD_WEBHOOK_URL": receiver.url, "RHYTHMD_WEBHOOK_MIN_SEVERITY": "warning"}
    a = Daemon(postgres_url, env=env, log_path=tmp_path / "a.log").start()
    b = Daemon(postgres_url, env=env, log_path=tmp_path / "b.log").start()
    try:
        urls = [a.url, b.url]
        turn = [0]

        def post(path: str, body: dict) -> dict:
            turn[0] += 1
            return httpx.post(urls[turn[0] % 2] + path, json=body).json()

        rid = stream_diverging(post)
        expected = len([e for e in httpx.get(f"{a.url}/v1/runs/{rid}/events").json()["events"]
                        if e["kind"] == "diagnosis_opened"
                        and e["payload"]["severity"] in ("warning", "high", "critical")])
        assert expected >= 1
        receiver.wait_for(expected)
        time.sleep(1.5)  # both dispatchers had time to send duplicates, if they would
        mine = [m for m in receiver.received if m["rhythmd"]["run_id"] == rid]
        keys = [(m["rhythmd"]["event"], m["rhythmd"]["diagnosis"]["id"]) for m in mine]
        assert len(set(keys)) == len(keys)  # nothing sent twice
        assert sum(1 for k in keys if k[0] == "diagnosis_opened") == expected
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            queued = conn.execute(text("SELECT count(*) FROM outbox WHERE run_id = :r"),
                                  {"r": rid}).scalar()
            sent = conn.execute(text("SELECT count(*) FROM outbox WHERE run_id = :r AND "
                                     "status = 'sent'"), {"r": rid}).scalar()
        engine.dispose()
        assert queued == sent == len(keys)
    finally:
        a.stop()
        b.stop()
        receiver.close()
