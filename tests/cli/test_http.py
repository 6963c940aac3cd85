"""The CLI's HTTP client and fallbacks, against a scripted fake daemon; ``--help`` texts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rhythmd.cli import COMMANDS, CommandError
from rhythmd.cli._http import Client, HTTPStatusError, num

Route = Callable[[str, dict[str, str]], tuple[int, Any, dict[str, str]]]


class Fake:
    """A tiny HTTP server: ``routes[(method, path)]`` -> (status, json body, headers)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route | tuple[int, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                path = self.path.split("?")[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((method, self.path, headers, body))
                route = fake.routes.get((method, path))
                if route is None:
                    status, doc, extra = 404, {"detail": "Not Found"}, {}
                elif callable(route):
                    status, doc, extra = route(self.path, headers)
                else:
                    status, doc = route
                    extra = {}
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    yield f
    f.close()


RUN = {"run_id": "r1", "name": "old-daemon", "project": None, "config": {"total_steps": 10},
       "tags": None, "status": "running", "created_at": 1.7e9, "updated_at": 1.7e9,
       "last_step": 10, "n_points": 20, "n_batches": 1, "branch": 0}


def test_token_from_flag_and_environment(cli: Any, fake: Fake,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake.routes[("GET", "/v1/runs")] = (200, {"runs": [], "total": 0})
    assert cli("runs", "--url", fake.url, "--token", "s3cret").code == 0
    assert fake.requests[-1][2]["authorization"] == "Bearer s3cret"
    monkeypatch.setenv("RHYTHMD_TOKEN", "from-env")
    assert cli("runs", "--url", fake.url).code == 0
    assert fake.requests[-1][2]["authorization"] == "Bearer from-env"
    monkeypatch.delenv("RHYTHMD_TOKEN")
    assert cli("runs", "--url", fake.url).code == 0
    assert "authorization" not in fake.requests[-1][2]


def test_url_from_environment(cli: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.routes[("GET", "/v1/runs")] = (200, {"runs": [], "total": 0})
    monkeypatch.setenv("RHYTHMD_URL", fake.url)
    r = cli("runs", "--project", "p", "--status", "failed")
    assert r.code == 0, r
    assert "project=p" in fake.requests[-1][1] and "status=failed" in fake.requests[-1][1]


def test_refused_token_says_what_to_do(cli: Any, fake: Fake) -> None:
    fake.routes[("GET", "/v1/runs")] = (401, {"detail": "bad token"})
    r = cli("runs", "--url", fake.url, "--token", "nope")
    assert r.code == 1 and "RHYTHMD_TOKEN" in r.err and "bad token" in r.err


def test_503_is_retried_after_retry_after(fake: Fake) -> None:
    calls = {"n": 0}

    def flaky(path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        calls["n"] += 1
        if calls["n"] < 3:
            return 503, {"detail": "database unavailable"}, {"retry-after": "0.1"}
        return 200, {"ok": True}, {}

    fake.routes[("GET", "/x")] = flaky
    assert Client(fake.url).get("/x") == {"ok": True}
    assert calls["n"] == 3
    fake.routes[("GET", "/y")] = (500, {"detail": "boom"})
    with pytest.raises(CommandError, match="daemon's log"):
        Client(fake.url).get("/y")
    fake.routes[("POST", "/z")] = (422, {"detail": [{"loc": ["body", "name"], "msg": "bad"}]})
    with pytest.raises(HTTPStatusError) as info:
        Client(fake.url).post("/z", {})
    assert info.value.status == 422 and info.value.detail == "body.name: bad"


def test_num_decodes_api_floats() -> None:
    assert num("NaN") != num("NaN")
    assert num("Infinity") == float("inf") and num("-Infinity") == float("-inf")
    assert num(3) == 3.0 and num(None) is None and num(True) is None


@pytest.mark.parametrize("command", ["analyze", "replay", "schedule", "runs", "show",
                                     "timeline"])
def test_help_documents_exit_codes(cli: Any, command: str) -> None:
    r = cli(command, "--help")
    assert r.code == 0
    assert "exit codes:" in r.out and "2  usage" in r.out


def test_commands_registered() -> None:
    assert {"replay", "schedule", "query"} <= set(COMMANDS)
