"""Every malformed body is a 4xx naming where it is wrong, never a 500 (finding 5)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

from tests.security.conftest import ADMIN, Secured, bearer

H = {**bearer(ADMIN), "Content-Type": "application/json"}
SURROGATE = '"\\ud800"'  # a lone surrogate, as JSON text
GOOD_BATCH = '{"batch_id": "b-1", "series": [{"name": "loss", "steps": [1], "values": [1.0]}]}'


def deep(n: int, kind: str) -> str:
    return "[" * n + "]" * n if kind == "list" else '{"a":' * n + "1" + "}" * n


def put(template: str, value: str) -> str:
    """``template`` with ``@`` replaced by ``value`` (JSON text)."""
    return template.replace("@", value)


def bodies() -> Iterator[tuple[str, str]]:
    """(path template, raw body) pairs; ``{run}`` and ``{rec}`` are filled in."""
    for n in (200, 1_000, 10_000, 100_000):
        for kind in ("list", "object"):
            d = deep(n, kind)
            yield "/v1/runs/{run}/metrics", d
            yield "/v1/runs/{run}/metrics", put('{"series": @}', d)
            yield "/v1/runs/{run}/metrics", (
                put('{"series": [{"name": "loss", "steps": [1], "values": @}]}', d))
            yield "/v1/runs", put('{"name": "x", "config": @}', d)
            yield "/v1/runs/{run}/recommendations", put('{"action": "stop", "params": @}', d)
            yield ("/v1/runs/{run}/recommendations/{rec}/ack",
                   put('{"status": "applied", "note": @}', d))
            yield "/v1/tokens", d
    run, metrics = "/v1/runs", "/v1/runs/{run}/metrics"
    recs, ack = "/v1/runs/{run}/recommendations", "/v1/runs/{run}/recommendations/{rec}/ack"
    lone = [
        (metrics, '{"batch_id": @, "series": []}'),
        (metrics, '{"series": [{"name": @, "steps": [1], "values": [1]}]}'),
        (metrics, '{"series": [{"name": "l", "steps": [1], "values": [@]}]}'),
        (metrics, '{@: 1, "series": []}'),
        (run, '{"name": @}'), (run, '{"name": "x", "project": @}'),
        (run, '{"name": "x", "config": {"k": @}}'), (run, '{"name": "x", "tags": {@: 1}}'),
        (run, '{"name": "x", "run_id": @}'),
        (recs, '{"action": @}'), (recs, '{"action": "stop", "reason": @}'),
        (ack, '{"status": "applied", "note": @}'), ("/v1/runs/{run}/finish", '{"status": @}'),
        ("/v1/tokens", '{"project": @, "scope": "read"}'),
        ("/v1/tokens", '{"project": "p", "scope": "read", "description": @}'),
    ]
    for path, template in lone:
        yield path, put(template, SURROGATE)
    for path in ("/v1/runs/{run}/metrics", "/v1/runs", "/v1/runs/{run}/recommendations",
                 "/v1/runs/{run}/finish", "/v1/tokens", "/v1/runs/{run}/recommendations/{rec}/ack"):
        for raw in ('{"a": "\\udc00\\ud800"}', "\udcff", "\x00", "{", "[]", "null", "1e400",
                    '{"name": "\\u0000"}', '"' + "x" * 100 + "\\", "NaN", "[NaN]",
                    '{"step": false}', '{"step": 1e400}', '{"step": 1' + "0" * 30 + "}"):
            yield path, raw
    rng = random.Random(16)
    for _ in range(60):  # the good batch with random bytes flipped
        raw = bytearray(GOOD_BATCH.encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        yield "/v1/runs/{run}/metrics", raw.decode("latin-1")


@pytest.fixture(scope="module")
def run_and_rec(secured: Secured) -> tuple[str, str]:
    http = secured.http
    rid = http.post("/v1/runs", json={"name": "m"}, headers=H).json()["run_id"]
    assert http.post(f"/v1/runs/{rid}/metrics", headers=H, content=GOOD_BATCH).status_code == 200
    rec = http.post(f"/v1/runs/{rid}/recommendations", json={"action": "stop"}, headers=H)
    return rid, rec.json()["id"]


def _state(s: Secured, rid: str) -> tuple[int, int, int]:
    metrics = s.http.get(f"/v1/runs/{rid}/metrics", headers=H).json()["metrics"]
    runs = s.http.get("/v1/runs", headers=H).json()["total"]
    tokens = len(s.http.get("/v1/tokens", headers=H).json()["tokens"])
    return sum(m["points"] for m in metrics), runs, tokens


def test_no_malformed_body_gives_a_500(secured: Secured, run_and_rec: tuple[str, str]) -> None:
    rid, rec = run_and_rec
    before = _state(secured, rid)
    cases = list(bodies())
    assert len(cases) >= 200
    for template, raw in cases:
        path = template.format(run=rid, rec=rec)
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        r = secured.http.post(path, headers=H, content=data)
        assert 400 <= r.status_code < 500 or r.status_code in (200, 201), (path, raw[:80])
        if r.status_code == 422:
            detail = r.json()["detail"]
            assert isinstance(detail, list) and detail[0]["loc"], (path, raw[:80], detail)
    assert _state(secured, rid)[0] == before[0]  # accepted data untouched
    assert secured.http.get("/healthz").json()["status"] == "ok"


def test_lone_surrogates_are_422_naming_the_body(secured: Secured,
                                                 run_and_rec: tuple[str, str]) -> None:
    rid, _ = run_and_rec
    for path, template in (("/v1/runs/{run}/metrics", '{"batch_id": @, "series": []}'),
                           ("/v1/runs", '{"name": @}')):
        body = put(template, SURROGATE)
        r = secured.http.post(path.format(run=rid), headers=H, content=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][0] == "body"
        assert "not valid JSON" in r.json()["detail"][0]["msg"]


def test_deep_nesting_is_422(secured: Secured, run_and_rec: tuple[str, str]) -> None:
    rid, _ = run_and_rec
    r = secured.http.post(f"/v1/runs/{rid}/metrics", headers=H, content=deep(1_000, "list"))
    assert r.status_code == 422 and "recursion" in json.dumps(r.json())
