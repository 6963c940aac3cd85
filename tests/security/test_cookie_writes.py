"""No write on the strength of the page cookie from another origin (finding 4)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Daemon
from tests.security.conftest import ADMIN, Secured, bearer

BATCH = {"series": [{"name": "train/loss", "steps": [1], "values": [9.0]}]}


@pytest.fixture(scope="module")
def target(secured: Secured) -> tuple[str, str]:
    """(run id, ingest token of its project)."""
    token = secured.token("cookies", "admin")
    rid = secured.http.post("/v1/runs", json={"name": "c"}, headers=bearer(token)).json()["run_id"]
    return rid, token


def _points(s: Secured, rid: str) -> int:
    metrics = s.http.get(f"/v1/runs/{rid}/metrics", headers=bearer(ADMIN)).json()["metrics"]
    return sum(m["points"] for m in metrics)


def test_cross_origin_cookie_writes_are_refused(secured: Secured, target: tuple[str, str]) -> None:
    rid, token = target
    s = secured
    other = s.url.replace("127.0.0.1", "localhost")  # another origin on the same host
    cookie = {"Cookie": f"rhythmd_token={token}"}
    path = f"/v1/runs/{rid}/metrics"
    text = json.dumps(BATCH)
    forged = [
        ({"Content-Type": "text/plain", "Origin": other}, text, 415),
        ({"Content-Type": "text/plain"}, text, 415),
        ({"Content-Type": "application/x-www-form-urlencoded", "Origin": other},
         f"{text}=", 415),
        ({"Content-Type": "multipart/form-data; boundary=x", "Origin": other}, "--x--", 415),
        ({"Origin": other}, text, 403),  # a body without a content type (a Blob)
        ({"Content-Type": "application/json", "Origin": other}, text, 403),
        ({"Content-Type": "application/json", "Origin": "null"}, text, 403),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, text, 403),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, text, 403),
        ({"Content-Type": "application/json"}, text, 403),  # cookie, no proof of origin
    ]
    for headers, body, status in forged:
        r = s.http.post(path, headers={**cookie, **headers}, content=body)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"][0] == "header"
    stop = {"action": "stop"}
    r = s.http.post(f"/v1/runs/{rid}/recommendations", json=stop,
                    headers={**cookie, "Origin": other})
    assert r.status_code == 403
    r = s.http.post(f"/v1/runs/{rid}/finish", headers={**cookie, "Origin": other})
    assert r.status_code == 403
    assert _points(s, rid) == 0
    assert s.http.get(f"/v1/runs/{rid}", headers=bearer(ADMIN)).json()["status"] == "running"
    # a page of this origin may still read with the cookie
    assert s.http.get(f"/v1/runs/{rid}", headers=cookie).status_code == 200


def test_same_origin_and_bearer_writes_work(secured: Secured, target: tuple[str, str]) -> None:
    rid, token = target
    s = secured
    before = _points(s, rid)
    cookie = {"Cookie": f"rhythmd_token={token}"}
    same = [{"Origin": s.url}, {"Sec-Fetch-Site": "same-origin", "Origin": s.url}]
    for step, headers in enumerate(same, start=10):
        body = {"series": [{"name": "train/loss", "steps": [step], "values": [1.0]}]}
        r = s.http.post(f"/v1/runs/{rid}/metrics", json=body, headers={**cookie, **headers})
        assert r.status_code == 200, r.text
    # API clients: a bearer token and a JSON body, no Origin
    body = {"series": [{"name": "train/loss", "steps": [20], "values": [1.0]}]}
    r = s.http.post(f"/v1/runs/{rid}/metrics", headers={**bearer(token),
                    "Content-Type": "application/json; charset=utf-8"}, content=json.dumps(body))
    assert r.status_code == 200, r.text
    # the bearer token does not make a non-JSON body acceptable
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        r = s.http.post(f"/v1/runs/{rid}/metrics", headers={**bearer(token),
                        "Content-Type": media}, content=json.dumps(body))
        assert r.status_code == 415, media
    assert _points(s, rid) == before + 3


def test_login_form_from_another_origin_is_refused(secured: Secured) -> None:
    r = secured.http.post("/login", data={"token": ADMIN, "next": "/"},
                          headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = secured.http.post("/login", data={"token": ADMIN, "next": "/"},
                          headers={"Origin": secured.url})
    assert r.status_code in (302, 303) and "rhythmd_token" in r.headers["set-cookie"]


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon without authentication (loopback only)."""
    d = Daemon(f"sqlite:///{tmp_path_factory.mktemp('open') / 'd.db'}").start()
    yield d
    d.stop()


def test_without_auth_other_sites_cannot_write_or_rebind(open_daemon: Daemon) -> None:
    url = open_daemon.url
    port = open_daemon.port
    rid = httpx.post(f"{url}/v1/runs", json={"name": "open"}).json()["run_id"]
    text = json.dumps(BATCH)
    path = f"{url}/v1/runs/{rid}/metrics"
    # a form or a text/plain fetch from any page
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = httpx.post(path, content=text, headers={"Content-Type": media,
                                                    "Origin": "http://evil.example"})
        assert r.status_code == 415
    r = httpx.post(path, content=text, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    # DNS rebinding: evil.example resolved to 127.0.0.1, so the browser's request is
    # "same-origin" for it, but names a host that is not loopback
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}",
               "Content-Type": "application/json"}
    assert httpx.post(path, content=text, headers=rebound).status_code == 403
    r = httpx.get(f"{url}/v1/runs", headers={"Host": f"evil.example:{port}",
                                             "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 403
    assert httpx.get(f"{url}/v1/runs/{rid}/metrics").json()["metrics"] == []
    # this daemon's own pages, and clients that are not browsers, are served
    own = {"Origin": url, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert httpx.post(path, content=text, headers=own).status_code == 200
    assert httpx.get(f"{url}/", headers={"Host": f"localhost:{port}",
                                         "Sec-Fetch-Site": "none"}).status_code == 200
