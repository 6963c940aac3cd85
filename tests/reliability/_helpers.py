"""Shared pieces of the reliability tests: a retrying streaming client, curves, comparisons."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rhythmd.eval.compare import strip_wall_times
from tests.daemon.test_analysis_ingest import batches as curve_batches
from tests.daemon.test_analysis_ingest import read_curve

DATA = Path(__file__).resolve().parents[1] / "data" / "e2e"
STAGNATING = DATA / "digits_mlp__adam__lr0.001__cosine__bs64__s0.csv"  # 800 steps, stagnates

RETRY_STATUSES = frozenset({502, 503, 504})


def curve_bodies(path: Path = STAGNATING, every: int = 10) -> list[dict[str, Any]]:
    """The curve as ingest bodies of ``every`` steps each (train_loss, lr, val_* series)."""
    return list(curve_batches(read_curve(path), every))


@dataclass
class StreamLog:
    """What one streaming client saw: per batch index the first 200 answer, and counters."""

    acked: dict[int, dict[str, Any]] = field(default_factory=dict)
    ack_times: dict[int, float] = field(default_factory=dict)
    conn_errors: int = 0
    retry_statuses: int = 0
    other_errors: list[str] = field(default_factory=list)


def stream_with_retries(url_of: Any, run_id: str, bodies: list[dict[str, Any]], log: StreamLog,
                        *, deadline: float, pace_s: float = 0.0,
                        stop: threading.Event | None = None) -> None:
    """Send ``bodies`` in order, each until it is answered 200: connection errors, timeouts and
    502/503/504 are retried with exponential backoff (50 ms doubling to 1 s) and the same
    ``batch_id``. ``url_of()`` gives the current base URL. Bounded by ``deadline``
    (``time.monotonic()``); any other status is recorded and ends the stream."""
    with httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0)) as http:
        for i, body in enumerate(bodies):
            backoff = 0.05
            while True:
                if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                    log.other_errors.append(f"batch {i}: gave up at the deadline")
                    return
                try:
                    r = http.post(f"{url_of()}/v1/runs/{run_id}/metrics", json=body)
                except httpx.TransportError:
                    log.conn_errors += 1
                else:
                    if r.status_code == 200:
                        log.acked[i] = r.json()
                        log.ack_times[i] = time.monotonic()
                        break
                    if r.status_code in RETRY_STATUSES:
                        log.retry_statuses += 1
                    else:
                        log.other_errors.append(f"batch {i}: {r.status_code} {r.text[:300]}")
                        return
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            if pace_s:
                time.sleep(pace_s)


def series_all(url: str, run_id: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/runs/{run_id}/metrics/{name}", params={"branch": "all"},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def diagnoses(url: str, run_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/v1/runs/{run_id}/diagnoses", timeout=30)
    assert r.status_code == 200, r.text
    return strip_wall_times(r.json()["diagnoses"])
