"""The pages rendered in process (no browser): content, escaping, markers, limits."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from rhythmd.web.svg import Chart, Series, choose_scale, log_ticks, nice_ticks
from tests.web import scenario

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, cls: str | None = None, **want: str) -> list[dict[str, str | None]]:
        out = []
        for _, attrs in self.tags:
            if cls is not None and cls not in (attrs.get("class") or "").split():
                continue
            if all(attrs.get(k.replace("_", "-")) == v for k, v in want.items()):
                out.append(attrs)
        return out


def parse(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    return t


def assert_no_injection(html: str) -> None:
    t = parse(html)
    scripts = [a for tag, a in t.tags if tag == "script"]
    code = [a for a in scripts if a.get("type") != "application/json"]
    assert [(a["src"] or "").split("?")[0] for a in code] == [
        "/static/uPlot.iife.min.js", "/static/rhythmd-charts.js", "/static/rhythmd.js"]
    assert all(set(a) == {"src", "defer"} for a in code), code
    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
        assert "<" not in block and json.loads(block)  # data only, nothing can close it early
    assert [tag for tag, _ in t.tags if tag in ("img", "i", "b")] == []
    assert "<script>alert(1)" not in html
    assert "onerror=" not in html.replace("onerror=alert(2)&gt;", "")


def test_run_page_shows_divergence_rollback_and_nan(web_client: Any) -> None:
    rid = scenario.diverging_run(web_client)
    r = web_client.get(f"/runs/{rid}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert_no_injection(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    t = parse(html)
    assert "".join(t.text).count("<script>alert(1)</script>") >= 1  # shown as text
    for cid in ("chart-loss", "chart-lr"):
        assert t.find(id=cid), cid
    div = t.find("diag-region", data_kind="divergence")
    assert div and div[0]["data-diag-id"] == "divergence-1"
    assert int(div[0]["data-end"] or 0) >= scenario.NAN_FROM  # spans what the old branch saw
    nan = t.find("nonfinite-marker", data_kind="NaN", data_series="train_loss")
    assert nan and nan[0]["data-step"] == str(scenario.NAN_FROM)
    assert nan[0]["data-count"] == str(scenario.NAN_TO - scenario.NAN_FROM + 1)
    assert t.find("recommendation-marker", data_action="rollback", data_status="applied")
    assert t.find("applied-marker", data_step=str(scenario.NAN_TO))
    assert t.find("rollback-marker", data_step=str(scenario.ROLLBACK_TO), data_branch="1")
    assert t.find("abandoned-series", data_series="train_loss")
    assert t.find("schedule-segment")
    kinds = {a["data-kind"] for a in t.find("timeline-item")}
    assert {"diagnosis_opened", "recommendation_issued", "recommendation_applied",
            "rollback"} <= kinds
    assert t.find("evidence", data_evidence_for="divergence-1")
    assert t.find("diag-row", data_diag_id="divergence-1")
    # the latest branch's view: the resumed branch's points, one per step
    loss = t.find("series", data_series="train_loss")
    assert loss and loss[0]["data-points"] == str(scenario.LAST_STEP + 1)


def test_every_nonfinite_kind_is_marked(web_client: Any) -> None:
    rid = web_client.post("/v1/runs", json={"name": "nf"}).json()["run_id"]
    values = [1.0, "NaN", "Infinity", 2.0, "-Infinity", "-Infinity", 1.5]
    web_client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "grad_norm", "steps": list(range(7)), "values": values}]})
    t = parse(web_client.get(f"/runs/{rid}").text)
    marks = {(a["data-kind"], a["data-step"], a["data-count"])
             for a in t.find("nonfinite-marker")}
    assert marks == {("NaN", "1", "1"), ("+Inf", "2", "1"), ("-Inf", "4", "2")}


def test_large_run_is_downsampled(web_client: Any) -> None:
    rid = web_client.post("/v1/runs", json={"name": "big"}).json()["run_id"]
    n = 120_000
    steps = np.arange(n)
    loss = 3 * np.exp(-steps / 30_000) + 0.1 * np.sin(steps / 50)
    loss[77_777] = np.nan
    for i in range(0, n, 40_000):  # grad_norm: stored and drawn, not analysed (fast ingest)
        web_client.post(f"/v1/runs/{rid}/metrics", json={"series": [
            {"name": "grad_norm", "steps": steps[i:i + 40_000].tolist(),
             "values": ["NaN" if np.isnan(v) else float(v) for v in loss[i:i + 40_000]]}]})
    r = web_client.get(f"/runs/{rid}")
    t = parse(r.text)
    shown = int(t.find("series", data_series="grad_norm")[0]["data-points"] or 0)
    assert 0 < shown <= 2_100
    assert t.find("nonfinite-marker", data_step="77777")
    assert "of 120000 points shown" in r.text
    assert len(r.content) < 400_000


def test_runs_list(web_client: Any) -> None:
    rid = scenario.diverging_run(web_client, finish=False)
    hid = scenario.healthy_run(web_client)
    r = web_client.get("/")
    assert r.status_code == 200
    html = r.text
    assert_no_injection(html)
    t = parse(html)
    rows = {a["data-run-id"]: a for a in t.find("run-row")}
    assert set(rows) == {rid, hid}
    assert rows[hid]["data-state"] == "finished"
    assert rows[rid]["data-state"] in ("running", "healthy", "diverging")
    assert t.find("run-select", value=rid) and t.find("run-link", href=f"/runs/{rid}")
    assert t.find(id="compare-form") and t.find(id="runs-table")
    body = parse(html).find(id="runs-body")
    assert body
    assert re.search(r'data-refresh="\d+"', html)  # a live run: the list refreshes itself
    # filters and paging
    only = parse(web_client.get("/?status=finished").text)
    assert [a["data-run-id"] for a in only.find("run-row")] == [hid]
    page1 = parse(web_client.get("/?limit=1").text)
    assert len(page1.find("run-row")) == 1
    assert "older →" in web_client.get("/?limit=1").text
    # best validation loss from the healthy run's val_loss
    best = re.search(rf'data-run-id="{hid}".*?title="val_loss">([0-9.]+)', html, re.S)
    assert best and 0.3 < float(best.group(1)) < 1.0


def test_runs_list_empty_and_not_live(web_client: Any) -> None:
    html = web_client.get("/").text
    assert "No runs yet" in html and "data-refresh" not in html


def test_compare(web_client: Any) -> None:
    rid = scenario.diverging_run(web_client)
    hid = scenario.healthy_run(web_client)
    for url in (f"/compare?runs={rid},{hid},nope", f"/compare?runs={rid}&runs={hid}&runs=nope"):
        r = web_client.get(url)
        assert r.status_code == 200
        assert_no_injection(r.text)
        t = parse(r.text)
        assert {a["data-run-id"] for a in t.find("compare-run")} == {rid, hid}
        for chart in ("compare-train", "compare-val", "compare-lr"):
            assert t.find(id=chart)
        train = re.search(r'id="compare-train".*?</svg>', r.text, re.S)
        assert train and train.group(0).count('class="series"') == 2
        assert "nope" in r.text and t.find(id="compare-missing")
    t = parse(web_client.get(f"/compare?runs={rid},{hid}&metric=val_loss").text)
    assert t.find(id="compare-metric")
    keys = {a["data-series"] for a in t.find("series")}
    assert f"{rid}:val_loss" in keys and f"{hid}:train_loss" in keys
    assert "Pick runs" in web_client.get("/compare").text


def test_unknown_run_and_static(web_client: Any) -> None:
    r = web_client.get("/runs/does-not-exist")
    assert r.status_code == 404 and "Run not found" in r.text
    xss = web_client.get("/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert xss.status_code == 404 and "<script>alert(1)" not in xss.text
    js = web_client.get("/static/rhythmd.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "innerHTML = fresh" in js.text  # only the server's own escaped HTML is copied
    assert web_client.get("/static/rhythmd.css").headers["content-type"].startswith("text/css")
    uplot = web_client.get("/static/uPlot.iife.min.js")
    assert uplot.status_code == 200 and "javascript" in uplot.headers["content-type"]
    assert "var uPlot=" in uplot.text
    assert "MIT License" in web_client.get("/static/uPlot.LICENSE").text
    assert web_client.get("/static/uPlot.min.css").headers["content-type"].startswith("text/css")
    assert "rhythmd:refreshed" in web_client.get("/static/rhythmd-charts.js").text
    assert web_client.get("/static/pages.py").status_code == 404
    assert web_client.get("/static/..%2Fpages.py").status_code == 404
    paths = web_client.get("/openapi.json").json()["paths"]
    assert not {"/", "/runs/{run_id}", "/compare"} & set(paths)


def test_no_external_resources(web_client: Any) -> None:
    rid = scenario.healthy_run(web_client)
    for url in ("/", f"/runs/{rid}", f"/compare?runs={rid}"):
        html = web_client.get(url).text
        for _, attrs in parse(html).tags:
            for key in ("src", "href"):
                value = attrs.get(key) or ""
                assert not re.match(r"^(https?:)?//", value), (url, value)


def test_svg_scales_and_ticks() -> None:
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert log_ticks(0.001, 0.1) == pytest.approx([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    s = choose_scale([np.array([0.5, 100.0, np.nan])])
    assert s.log and s.lo < 0.5 and s.hi > 100
    assert not choose_scale([np.array([0.0, 1.0])]).log
    assert choose_scale([np.array([np.nan])]).lo == 0.0
    c = Chart("c", (0, 10))
    c.series.append(Series("a<b>", "a<b>", np.arange(5), np.array([1, np.nan, 2, np.inf, 3.0])))
    svg = c.render()
    assert "a<b>" not in svg and "a&lt;b&gt;" in svg
    assert svg.count('class="nonfinite-marker"') == 2
    # the line breaks at each non-finite point: three separate moves
    path = re.search(r'<path d="([^"]*)" stroke', svg)
    assert path and path.group(1).count("M") == 3


def test_pages_follow_authentication(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from rhythmd.app import create_app
    from rhythmd.config import Settings

    admin = "a" * 32
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'auth.db'}", auth="required",
                              admin_token=admin))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        rid = c.post("/v1/runs", json={"name": "secret-run"},
                     headers={"Authorization": f"Bearer {admin}"}).json()["run_id"]
        for url in ("/", f"/runs/{rid}", f"/compare?runs={rid}"):
            r = c.get(url)
            assert r.status_code == 401, url
            assert "secret-run" not in r.text and 'id="login-form"' in r.text
        assert c.get("/static/rhythmd.css").status_code == 200
        r = c.post("/login", content=f"token=wrong&next=/runs/{rid}",
                   headers={"content-type": "application/x-www-form-urlencoded"},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 401  # the wrong token is refused
        r = c.post("/login", content=f"token={admin}&next=//evil.example/",
                   headers={"content-type": "application/x-www-form-urlencoded"},
                   follow_redirects=False)
        assert r.headers["location"] == "/"  # never redirected off the daemon
        assert "secret-run" in c.get("/").text
        assert "secret-run" in c.get(f"/runs/{rid}").text
        cross = c.post("/login", content="token=x", follow_redirects=False,
                       headers={"content-type": "application/x-www-form-urlencoded",
                                "origin": "http://evil.example"})
        assert cross.status_code == 403
        c.post("/logout", follow_redirects=False)
        assert c.get("/").status_code == 401
