"""The sender through an injected HTTP transport (no sockets): requests, outcomes, status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from rhythmd_client._http import HTTPResponse, StdlibHTTPTransport
from rhythmd_client.transport import Chunk, Transport


class ScriptedHTTP:
    """An ``HTTPTransport`` that records requests and answers from ``answer``."""

    def __init__(self, answer: Callable[[str, str, dict | None], HTTPResponse]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict | None]] = []
        self.closed = 0
        self.lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None) -> HTTPResponse:
        doc = json.loads(body) if body else None
        with self.lock:
            self.requests.append((method, path, doc))
        return self.answer(method, path, doc)

    def close(self) -> None:
        self.closed += 1

    def paths(self, method: str = "POST") -> list[str]:
        with self.lock:
            return [p for m, p, _ in self.requests if m == method]


def ok(doc: object = None) -> HTTPResponse:
    return HTTPResponse(200, json.dumps(doc or {}).encode())


def chunk(start: int, n: int) -> Chunk:
    steps = list(range(start, start + n))
    return Chunk(0, None, [("loss", steps, [float(s) for s in steps], [1.7e9] * n)])


def make(http: ScriptedHTTP, **kw: object) -> Transport:
    args: dict[str, object] = {"run_name": "t", "interval_s": 0.01, "backoff_s": 0.01,
                               "backoff_max_s": 0.05, "http": http}
    args.update(kw)
    return Transport("http://unused.invalid", **args)  # type: ignore[arg-type]


def test_injected_transport_carries_every_request() -> None:
    http = ScriptedHTTP(lambda m, p, d: ok({"run_id": d["run_id"]} if p == "/v1/runs" else {}))
    tr = make(http)
    tr.submit(chunk(0, 10))
    stats = tr.close()
    posts = http.paths()
    assert posts[0] == "/v1/runs" and posts[-1] == f"/v1/runs/{tr.run_id}/finish"
    sent = [d for m, p, d in http.requests if p.endswith("/metrics")]
    assert sent and sent[0]["series"][0]["steps"] == list(range(10))
    assert stats["sent"] == 10 and stats["errors"] == 0 and http.closed >= 1


def test_connection_errors_are_retried_with_backoff() -> None:
    failures = {"left": 3}

    def answer(method: str, path: str, doc: dict | None) -> HTTPResponse:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionRefusedError("down")
        return ok()

    http = ScriptedHTTP(answer)
    tr = make(http)
    tr.submit(chunk(0, 5))
    stats = tr.close()
    assert stats["retried"] == 3 and stats["sent"] == 5 and tr.daemon_up is True


def test_conflict_on_an_attached_run_is_used_but_a_refused_new_run_stops_sending() -> None:
    conflict = ScriptedHTTP(lambda m, p, d: HTTPResponse(409, b"{}") if p == "/v1/runs"
                            else ok())
    tr = make(conflict, run_id="mine")
    tr.submit(chunk(0, 5))
    assert tr.close()["sent"] == 5  # 409 on a given run id: attach anyway
    refused = ScriptedHTTP(lambda m, p, d: HTTPResponse(403, b"{}"))
    tr2 = make(refused)
    tr2.submit(chunk(0, 5))
    stats = tr2.close(timeout_s=0.3)
    assert stats["sent"] == 0 and refused.paths() == ["/v1/runs"]  # 403 on create: give up


def test_too_large_batch_is_dropped_not_retried() -> None:
    http = ScriptedHTTP(lambda m, p, d: HTTPResponse(413, b"{}") if p.endswith("/metrics")
                        else ok())
    tr = make(http)
    tr.submit(chunk(0, 8))
    stats = tr.close()
    assert stats["dropped"] == 8 and stats["retried"] == 0 and stats["errors"] == 1


def test_attach_moves_everything_to_the_resumed_run() -> None:
    http = ScriptedHTTP(lambda m, p, d: ok())
    tr = make(http)
    time.sleep(0.1)  # the transport's own run is created at once
    own = tr.run_id
    assert http.paths() == ["/v1/runs"]
    tr.attach("resumed-run")  # what a resumed hook does
    assert tr.run_id == "resumed-run"
    tr.submit(chunk(0, 3))
    tr.close()
    creates = [d for m, p, d in http.requests if p == "/v1/runs"]
    assert [d["run_id"] for d in creates] == [own, "resumed-run"]
    assert all("resumed-run" in p for p in http.paths()[2:])


def test_stdlib_transport_adds_the_prefix_and_the_token() -> None:
    std = StdlibHTTPTransport("https://example.invalid:9/base/", token="tok", timeout_s=1.0)
    assert (std._https, std._host, std._port, std._prefix) == (True, "example.invalid", 9,
                                                                "/base")
    assert std._auth == "Bearer tok"
    assert StdlibHTTPTransport("127.0.0.1:8000")._auth is None
