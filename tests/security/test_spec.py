"""The OpenAPI schema and the behaviour agree (finding 8); ``/docs`` works offline (finding 9)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from rhythmd.api.schemas import Action
from rhythmd.recommendations import ACTIONS
from tests.conftest import Daemon
from tests.security.conftest import ADMIN, Secured, bearer
from tests.web.conftest import browser  # noqa: F401  (the fixture)

H = bearer(ADMIN)


@pytest.fixture(scope="module")
def schema(secured: Secured) -> dict[str, Any]:
    return secured.http.get("/openapi.json").json()  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:  # an optional body: the object, or null
        node = next(n for n in node["anyOf"] if n.get("type") != "null")
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _body_schema(schema: dict[str, Any], path: str) -> dict[str, Any]:
    op = schema["paths"][path]["post"]
    return _resolve(schema, op["requestBody"]["content"]["application/json"]["schema"])


def _int_schema(node: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in node.get("anyOf", [node]) if s.get("type") == "integer")


def test_step_false_is_rejected_as_the_schema_says(secured: Secured,
                                                   schema: dict[str, Any]) -> None:
    http = secured.http
    rid = secured.run("spec")
    finish = _body_schema(schema, "/v1/runs/{run_id}/finish")
    assert _int_schema(finish["properties"]["step"])["type"] == "integer"
    r = http.post(f"/v1/runs/{rid}/finish", json={"status": "finished", "step": False},
                  headers=H)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "step"]
    rec = http.post(f"/v1/runs/{rid}/recommendations", json={"action": "stop"}, headers=H)
    r = http.post(f"/v1/runs/{rid}/recommendations/{rec.json()['id']}/ack", headers=H,
                  json={"status": "applied", "step": True})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "step"]
    r = http.post(f"/v1/runs/{rid}/metrics", headers=H,
                  json={"series": [{"name": "l", "steps": [False], "values": [1.0]}]})
    assert r.status_code == 422
    # 3.0 is an integer to JSON Schema, and so to the daemon
    r = http.post(f"/v1/runs/{rid}/metrics", headers=H,
                  json={"series": [{"name": "l", "steps": [3.0], "values": [1.0]}], "branch": 0.0})
    assert r.status_code == 200, r.text
    r = http.post(f"/v1/runs/{rid}/finish", json={"status": "finished", "step": 3.0}, headers=H)
    assert r.status_code == 200 and r.json()["status"] == "finished", r.text


def test_what_the_schema_allows_is_accepted_and_the_rest_is_declared(
        secured: Secured, schema: dict[str, Any]) -> None:
    batch = _body_schema(schema, "/v1/runs/{run_id}/metrics")
    series = _resolve(schema, batch["properties"]["series"]["items"])
    # unknown fields: refused, and the schema says so
    for node in (batch, series, _body_schema(schema, "/v1/runs"),
                 _body_schema(schema, "/v1/tokens"),
                 _body_schema(schema, "/v1/runs/{run_id}/recommendations")):
        assert node.get("additionalProperties") is False, node.get("title")
    # a step as large as the server takes, and no larger
    step = series["properties"]["steps"]["items"]
    assert step["maximum"] == 2**53 and step["minimum"] == 0  # exact in every JSON parser
    rid = secured.run("spec")
    ok = {"series": [{"name": "l", "steps": [2**53], "values": [1.0]}]}
    assert secured.http.post(f"/v1/runs/{rid}/metrics", json=ok, headers=H).status_code == 200
    ok["series"][0]["steps"] = [2**53 + 1]
    assert secured.http.post(f"/v1/runs/{rid}/metrics", json=ok, headers=H).status_code == 422
    # metric names: the schema's pattern is the server's rule
    pattern = re.compile(series["properties"]["name"]["pattern"])
    for name, accepted in (("train/loss", True), ("val/acc@1", True), ("eval/loss (ema)", True),
                           ("pérte", False), ("名", False), (" x", False), ("a  b", False)):
        assert bool(pattern.search(name)) is accepted, name
        body = {"series": [{"name": name, "steps": [1], "values": [1.0]}]}
        r = secured.http.post(f"/v1/runs/{rid}/metrics", json=body, headers=H)
        assert (r.status_code == 200) is accepted, (name, r.text)
    # actions: an enum of exactly the actions the server knows (no empty action)
    action = _body_schema(schema, "/v1/runs/{run_id}/recommendations")["properties"]["action"]
    assert set(action["enum"]) == set(ACTIONS) == set(get_args(Action))
    r = secured.http.post(f"/v1/runs/{rid}/recommendations", json={"action": ""}, headers=H)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "action"]
    # learning rates: numbers >= 0, as the schema says
    rec = secured.http.post(f"/v1/runs/{rid}/recommendations", json={"action": "stop"},
                            headers=H).json()["id"]
    lr = _body_schema(schema, "/v1/runs/{run_id}/recommendations/{rec_id}/ack")["properties"]
    assert lr["lr_after"]["anyOf"][0]["items"] == {"type": "number", "minimum": 0}
    for bad in ([False], [-1e-197]):
        r = secured.http.post(f"/v1/runs/{rid}/recommendations/{rec}/ack", headers=H,
                              json={"status": "applied", "lr_after": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "lr_after"]


def test_405_names_every_method_of_the_path(secured: Secured, schema: dict[str, Any]) -> None:
    for path, concrete in (("/v1/runs", "/v1/runs"), ("/v1/runs/{run_id}", "/v1/runs/x"),
                           ("/v1/tokens/{token_id}", "/v1/tokens/x"), ("/healthz", "/healthz")):
        documented = {m.upper() for m in schema["paths"][path]}
        for method in ("OPTIONS", "PATCH", "PUT"):
            r = secured.http.request(method, concrete, headers=H)
            assert r.status_code == 405, (method, concrete)
            assert set(r.headers["allow"].split(", ")) == documented, (concrete, r.headers)


def test_schema_declares_the_bearer_scheme(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API token (`rhythmd token create --project P --scope S`)."}
    ops = [op for p, item in schema["paths"].items() if p.startswith("/v1/")
           for op in item.values()]
    assert ops and all(op["security"] == [{"bearer": []}] for op in ops)
    assert all("401" in op["responses"] for op in ops)
    assert "security" not in schema["paths"]["/healthz"]["get"]


# /docs offline ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(f"sqlite:///{tmp_path_factory.mktemp('docs') / 'd.db'}").start()
    yield d
    d.stop()


def test_docs_assets_come_from_the_daemon(plain_daemon: Daemon) -> None:
    page = httpx.get(f"{plain_daemon.url}/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"url: ['\"]([^'\"]+)['\"]", page.text)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
    for url in urls:
        r = httpx.get(f"{plain_daemon.url}{url}")
        assert r.status_code == 200 and len(r.content) > 100, url
    schema = httpx.get(f"{plain_daemon.url}/openapi.json").json()
    ops = [op for p, item in schema["paths"].items() if p.startswith("/v1/")
           for op in item.values()]
    assert all(op["security"] == [{}, {"bearer": []}] for op in ops)  # optional without auth


def test_docs_render_offline_with_an_authorize_button(browser: Any,  # noqa: F811
                                                      plain_daemon: Daemon,
                                                      tmp_path: Path) -> None:
    page = browser.new_page()
    external: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(plain_daemon.url):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(f"{plain_daemon.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "rhythmd" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator("button.authorize").count() == 1
    assert page.locator(".opblock").count() > 10
    assert external == []
    page.close()
