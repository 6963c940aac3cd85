"""Over a real socket: rejected requests change nothing, and odd-but-valid ones are no 500.

(The in-process version of "a rejected batch stores nothing" is
``tests/daemon/test_api.py::test_rejected_batch_changes_nothing``; this one goes through
uvicorn's HTTP parsing, a non-UTF-8 body, and batches without ``batch_id``.)
"""

from __future__ import annotations

import httpx

from tests.conftest import Daemon


def _state(url: str, rid: str) -> tuple[dict, dict, list]:
    run = httpx.get(f"{url}/v1/runs/{rid}").json()
    run.pop("updated_at", None)
    metrics = httpx.get(f"{url}/v1/runs/{rid}/metrics").json()
    loss = httpx.get(f"{url}/v1/runs/{rid}/metrics/loss", params={"branch": "all"}).json()
    return run, metrics, [loss["steps"], loss["values"]]


def test_rejected_requests_over_a_socket_change_nothing(daemon: Daemon) -> None:
    url = daemon.url
    rid = httpx.post(f"{url}/v1/runs", json={"name": "rej"}).json()["run_id"]
    ok = {"batch_id": "b0", "series": [{"name": "loss", "steps": [0, 1], "values": [1.0, 0.5]}]}
    assert httpx.post(f"{url}/v1/runs/{rid}/metrics", json=ok).status_code == 200
    before = _state(url, rid)
    bad_bodies: list[bytes] = [
        b'{"batch_id": "b1", "series": [{"name": "loss", "steps": [2], "values": [0.4]},'
        b' {"name": "bad name!", "steps": [2], "values": [1.0]}]}',
        b'{"batch_id": "b1", "series": [{"name": "loss", "steps": [2, 3], "values": [0.4]}]}',
        b'{"batch_id": "b1", "series": [{"name": "loss", "steps": [-1], "values": [0.4]}]}',
        b'{"batch_id": "b1", "series": [{"name": "loss", "steps": [2], "values": [0.4]}',
        b"\xff\xfe{not utf-8}",
    ]
    for body in bad_bodies:
        r = httpx.post(f"{url}/v1/runs/{rid}/metrics", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
    # JSON endpoints parsed by FastAPI: an undecodable body is 422 too (it was 400)
    for path in ("/v1/runs", f"/v1/runs/{rid}/finish", f"/v1/runs/{rid}/recommendations"):
        r = httpx.post(f"{url}{path}", content=b"\xff\xfe\x00{",
                       headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.status_code, r.text)
    assert _state(url, rid) == before


def test_batches_without_batch_id_and_points_are_not_500(daemon: Daemon) -> None:
    """Found by schemathesis: the server-made id of a batch without ``batch_id`` was
    ``srv-<next seq>``, the same for two batches without points, and the second one hit the
    unique constraint (500)."""
    url = daemon.url
    rid = httpx.post(f"{url}/v1/runs", json={"name": "empty"}).json()["run_id"]
    ids = set()
    for body in ({"series": []}, {"series": []},
                 {"series": [{"name": "loss", "steps": [1], "values": [1.0]}]},
                 {"series": []}):
        r = httpx.post(f"{url}/v1/runs/{rid}/metrics", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] is False
        ids.add(r.json()["batch_id"])
    assert len(ids) == 4
    run = httpx.get(f"{url}/v1/runs/{rid}").json()
    assert run["n_points"] == 1 and run["n_batches"] == 4


def test_nul_characters_are_never_500(daemon: Daemon) -> None:
    """Found by schemathesis: PostgreSQL text cannot hold NUL (0x00); a query or insert with
    one raised DataError (500). Now it is 422 there (SQLite stores NUL as any character)."""
    url = daemon.url
    rid = httpx.post(f"{url}/v1/runs", json={"name": "nul"}).json()["run_id"]
    answers = [
        httpx.get(f"{url}/v1/runs", params={"project": "a\x00b"}),
        httpx.get(f"{url}/v1/runs/a%00b"),
        httpx.post(f"{url}/v1/runs", json={"name": "a\x00b", "project": "p\x00"}),
        httpx.get(f"{url}/v1/runs/{rid}/recommendations/x%00y"),
        httpx.post(f"{url}/v1/runs/{rid}/recommendations",
                   json={"action": "stop", "author": "a\x00", "reason": "r\x00"}),
    ]
    for r in answers:
        assert r.status_code < 500, (r.request.url, r.status_code, r.text)
    run = httpx.get(f"{url}/v1/runs/{rid}").json()
    assert run["n_points"] == 0 and run["name"] == "nul"
