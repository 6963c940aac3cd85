"""Prometheus metrics (single process and across worker processes) and structured logs."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from rhythmd.observability import LogFormatter
from tests.conftest import ROOT, free_port


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_count_ingest_and_rejections(client):
    before = client.get("/metrics").text
    rid = client.post("/v1/runs", json={"name": "m"}).json()["run_id"]
    body = {"batch_id": "x1", "series": [{"name": "train_loss", "steps": [1, 2],
                                          "values": [1.0, "NaN"]}]}
    client.post(f"/v1/runs/{rid}/metrics", json=body)
    client.post(f"/v1/runs/{rid}/metrics", json=body)
    client.post(f"/v1/runs/{rid}/metrics", json={"series": [{"name": "a", "steps": [-1],
                                                             "values": [1]}]})
    client.post(f"/v1/runs/{rid}/recommendations", json={"action": "stop"})
    after = client.get("/metrics").text
    delta = lambda n, lab="": metric(after, n, lab) - metric(before, n, lab)  # noqa: E731
    assert delta("rhythmd_points_ingested_total") == 2
    assert delta("rhythmd_batches_total", '{result="stored"}') == 1
    assert delta("rhythmd_batches_total", '{result="duplicate"}') == 1
    assert delta("rhythmd_rejected_requests_total", '{reason="invalid"}') == 1
    assert metric(after, "rhythmd_recommendations", '{action="stop",status="pending"}') >= 1
    assert metric(after, "rhythmd_active_runs") >= 1
    assert "rhythmd_analysis_seconds_bucket" in after


@pytest.mark.postgres
def test_metrics_are_correct_across_worker_processes(postgres_url, tmp_path):
    port = free_port()
    env = {**os.environ, "RHYTHMD_DATABASE_URL": postgres_url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "rhythmd.cli", "serve", "--workers", "2",
                             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        base = metric(httpx.get(f"{url}/metrics").text, "rhythmd_points_ingested_total")
        rid = httpx.post(f"{url}/v1/runs", json={"name": "w"}).json()["run_id"]
        for i in range(40):  # new connections: the kernel spreads them over both workers
            httpx.post(f"{url}/v1/runs/{rid}/metrics", json={"series": [
                {"name": "train_loss", "steps": [i], "values": [1.0]}]})
        for _ in range(6):  # whichever worker answers, the total is the same
            text = httpx.get(f"{url}/metrics").text
            assert metric(text, "rhythmd_points_ingested_total") - base == 40
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_log_lines_carry_the_run_id():
    record = logging.LogRecord("rhythmd.service", logging.INFO, __file__, 1, "run created: %s",
                               ("x",), None)
    record.run_id = "abc"
    assert LogFormatter().format(record).endswith("run created: x run_id=abc")
    as_json = json.loads(LogFormatter(json_lines=True).format(record))
    assert as_json["run_id"] == "abc" and as_json["message"] == "run created: x"
