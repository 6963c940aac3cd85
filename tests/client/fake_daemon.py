"""A small stdlib stand-in for the rhythmd daemon's HTTP contract (tests only).

State lives in :class:`FakeState`, outside the server, so a "restart" (stop + start on the same
port) keeps runs and seen batch ids, like a daemon backed by a database. Knobs inject failures:
``fail_next`` (503 + Retry-After), ``drop_after_commit`` (store the batch, then cut the
connection without answering), ``max_points`` (413).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeState:
    """Runs, points (as stored once per batch id), recommendations, acks and a request log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        self.drop_after_commit = 0
        self.max_points = 200_000
        self.retry_after = "0"
        self.seed_recs: list[tuple[str, dict[str, Any]]] = []  # queued on every new run
        self.store_points = True  # False: count only (benchmarks)
        self.extra: dict[str, Any] = {}  # added to every ingest response (e.g. blowup_bound)

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        """The named run, or the only one."""
        if run_id is None:
            assert len(self.runs) == 1, list(self.runs)
            return next(iter(self.runs.values()))
        return self.runs[run_id]

    def add_rec(self, run_id: str, action: str, params: dict[str, Any] | None = None,
                expires_at_step: int | None = None, issued_at_step: int = 0) -> str:
        """Queue a pending recommendation; returns its id."""
        rid = uuid.uuid4().hex[:16]
        with self.lock:
            self.runs[run_id]["recs"][rid] = {
                "id": rid, "action": action, "params": params or {}, "reason": "test",
                "issued_at_step": issued_at_step, "expires_at_step": expires_at_step,
                "status": "pending"}
        return rid

    def points(self, run_id: str, name: str, branch: int | None = None) -> list[tuple[int, Any]]:
        """(step, value) of one series in arrival order."""
        run = self.runs[run_id]
        return [(s, v) for b, n, s, v in run["points"]
                if n == name and (branch is None or b == branch)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        self.server.conns.discard(self.connection)
        super().finish()

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def do_GET(self) -> None:
        st = self.server.state
        st.requests.append(("GET", self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 4 and parts[3] == "recommendations" and parts[2] in st.runs:
            with st.lock:
                recs = [r for r in st.runs[parts[2]]["recs"].values() if r["status"] == "pending"]
            self._send(200, {"recommendations": recs})
        elif len(parts) == 3 and parts[2] in st.runs:
            self._send(200, {"run_id": parts[2]})
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:
        st = self.server.state
        st.requests.append(("POST", self.path))
        body = self._body()
        parts = self.path.strip("/").split("/")
        if parts == ["v1", "runs"]:
            with st.lock:
                rid = body.get("run_id") or uuid.uuid4().hex
                existed = rid in st.runs
                if not existed:
                    st.runs[rid] = {"run_id": rid, "name": body["name"], "project":
                                    body.get("project"), "batches": {}, "points": [],
                                    "recs": {}, "acks": [], "finished": None,
                                    "branches": {0: None}}
                    for action, params in self.state_seed():
                        rec_id = uuid.uuid4().hex[:16]
                        st.runs[rid]["recs"][rec_id] = {
                            "id": rec_id, "action": action, "params": params, "reason": "seed",
                            "issued_at_step": 0, "expires_at_step": None, "status": "pending"}
            self._send(200 if existed else 201, {"run_id": rid, "name": body["name"]})
            return
        if len(parts) < 4 or parts[2] not in st.runs:
            self._send(404, {"detail": "unknown run"})
            return
        run = st.runs[parts[2]]
        if parts[3] == "metrics":
            self._metrics(st, run, body)
        elif parts[3] == "recommendations" and len(parts) == 6 and parts[5] == "ack":
            with st.lock:
                rec = run["recs"].get(parts[4])
                if rec is None:
                    self._send(404, {"detail": "unknown recommendation"})
                    return
                rec["status"] = body["status"]
                run["acks"].append({"id": parts[4], **body})
            self._send(200, rec)
        elif parts[3] == "recommendations" and len(parts) == 4:
            with st.lock:
                rec_id = uuid.uuid4().hex[:16]
                rec = {"id": rec_id, "action": body["action"], "params": body.get("params", {}),
                       "reason": body.get("reason", ""), "author": body.get("author", "user"),
                       "issued_at_step": None, "expires_at_step": None, "status": "pending"}
                run["recs"][rec_id] = rec
            self._send(201, rec)
        elif parts[3] == "finish":
            run["finished"] = body
            self._send(200, {"run_id": parts[2], "status": body["status"]})
        else:
            self._send(404, {"detail": "not found"})

    def state_seed(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.server.state.seed_recs)

    def _metrics(self, st: FakeState, run: dict[str, Any], body: dict[str, Any]) -> None:
        with st.lock:
            if st.fail_next > 0:
                st.fail_next -= 1
                self._send(503, {"detail": "database away"}, {"Retry-After": st.retry_after})
                return
            n = sum(len(s["steps"]) for s in body["series"])
            if n > st.max_points:
                self._send(413, {"detail": "too large"})
                return
            bid = body.get("batch_id")
            dup = bid in run["batches"]
            if not dup:
                run["batches"][bid] = n
                branch = body.get("branch", 0)
                run["branches"].setdefault(branch, body.get("branch_start_step"))
                for s in body["series"]:
                    assert len(s["steps"]) == len(s["values"])
                    if not st.store_points:
                        continue
                    for step, v in zip(s["steps"], s["values"], strict=True):
                        run["points"].append((branch, s["name"], step, v))
            recs = [r for r in run["recs"].values() if r["status"] == "pending"]
            drop = st.drop_after_commit > 0
            if drop:
                st.drop_after_commit -= 1
        if drop:  # stored, but the client never hears back: it must retry with the same id
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(200, {"accepted": n, "duplicate": dup, "recommendations": recs,
                         **st.extra})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: FakeState) -> None:
        self.state = state
        self.conns: set[socket.socket] = set()
        super().__init__(addr, _Handler)


class FakeDaemon:
    """Start/stop/restart a fake daemon on 127.0.0.1; ``port=0`` picks a free port once."""

    def __init__(self, port: int = 0, state: FakeState | None = None) -> None:
        self.state = state or FakeState()
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeDaemon:
        self._server = _Server(("127.0.0.1", self.port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (like a killed process)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        for c in list(self._server.conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._server = None

    def __enter__(self) -> FakeDaemon:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    """``python fake_daemon.py PORT [--count-only]``: serve until killed (for benchmarks)."""
    import sys
    import time

    d = FakeDaemon(int(sys.argv[1]))
    d.state.store_points = "--count-only" not in sys.argv
    d.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
