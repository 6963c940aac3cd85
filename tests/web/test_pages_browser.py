"""The pages in a real headless Chromium against a real daemon: plots, diagnosis shading,
markers, timeline, evidence on click, sorting, compare, live refresh. Screenshots are saved
under each test's tmp_path (and copied to $RHYTHMD_TEST_SCREENSHOTS when set)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture skips (or fails under CI) and says why
    expect = None

from tests.conftest import Daemon
from tests.web import scenario

TIMEOUT_MS = 10_000


def _page(browser: Any, errors: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("dialog", lambda d: (errors.append(f"dialog opened: {d.message}"), d.dismiss()))
    page.on("request", lambda req: None if req.url.startswith(("http://127.0.0.1", "data:"))
            else errors.append(f"external request: {req.url}"))
    return page


def _shot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    out = os.environ.get("RHYTHMD_TEST_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)


def test_run_page(browser: Any, web_daemon: Daemon, http: httpx.Client, tmp_path: Path) -> None:
    rid = scenario.diverging_run(http)
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{web_daemon.url}/runs/{rid}")
    page.wait_for_selector("body[data-ready='1']")
    # the name is text, never markup: no dialog, and the heading reads literally
    assert page.locator("#run-name").text_content() == scenario.XSS_NAME
    assert page.title().startswith(scenario.XSS_NAME)
    # plots on a shared step axis
    for chart in ("#chart-loss", "#chart-lr"):  # the SVG (under the interactive charts)
        assert page.locator(f"#uplot-{chart[1:]} canvas").is_visible()
        assert page.locator(f"{chart} .series path").first.get_attribute("d")
    # scaled to the resumed branch (0.5-3): linear; the abandoned climb is clipped and marked
    assert page.locator("#chart-loss").get_attribute("data-yscale") == "linear"
    assert page.locator("#chart-loss .offscale-marker").count() >= 1
    # diagnosis shading, markers, NaN on the edge, schedule, timeline
    region = page.locator("#chart-loss .diag-region[data-kind='divergence'] rect")
    assert region.count() == 1
    nan = page.locator("#chart-loss .nonfinite-marker[data-kind='NaN']")
    assert nan.count() == 1 and "NaN ×20" in (nan.text_content() or "")
    assert page.locator("#chart-loss .recommendation-marker[data-action='rollback']").count() >= 1
    assert page.locator("#chart-loss .applied-marker").count() == 1
    assert page.locator("#chart-loss .rollback-marker[data-branch='1']").count() == 1
    assert page.locator("#chart-loss .abandoned-series").count() == 1
    assert page.locator("#chart-lr .schedule-segment").count() >= 1
    items = page.locator("#timeline .timeline-item")
    assert items.count() >= 6
    for kind in ("diagnosis_opened", "recommendation_issued", "recommendation_applied",
                 "rollback"):
        assert page.locator(f"#timeline .timeline-item[data-kind='{kind}']").count() >= 1, kind
    # evidence on click: first the shaded region, then a diagnosis row
    evidence = page.locator("[data-evidence-for='divergence-1']")
    assert evidence.is_hidden()
    # a click in the interactive chart inside the region selects it
    regions = page.locator("#chart-loss .diag-region")
    spans = [(int(regions.nth(i).get_attribute("data-start") or 0),
              int(regions.nth(i).get_attribute("data-end") or 0),
              regions.nth(i).get_attribute("data-kind")) for i in range(regions.count())]
    d0, d1 = next((a, b) for a, b, k in spans if k == "divergence")
    start = next(s for s in range(d0, d1 + 1)  # a step of the divergence region only
                 if sum(a <= s <= b for a, b, _ in spans) == 1) - 2
    over = page.locator("#uplot-chart-loss .u-over")
    over.scroll_into_view_if_needed()
    x = page.evaluate("(s) => window.rhythmdCharts['chart-loss'].valToPos(s + 2, 'x')", start)
    over.click(position={"x": x, "y": 20})
    assert evidence.is_visible()
    assert page.locator("#evidence-empty").is_hidden()
    assert "baseline_loss" in (evidence.text_content() or "")
    assert page.locator(".diag-region.selected[data-diag-id='divergence-1']").count() >= 1
    page.locator("#diagnoses tr[data-diag-id='spike-1']").click()
    assert page.locator("[data-evidence-for='spike-1']").is_visible()
    assert evidence.is_hidden()
    page.locator("#diagnoses tr[data-diag-id='divergence-1']").click()
    assert not page.locator("body[data-refresh]").count()  # a finished run does not refresh
    _shot(page, tmp_path / "run_page.png")
    assert errors == []
    page.close()


def test_runs_list_sort_and_compare(browser: Any, web_daemon: Daemon, http: httpx.Client,
                                    tmp_path: Path) -> None:
    a = scenario.healthy_run(http, name="alpha <b>bold</b>", run_id="cmp-alpha")
    b = scenario.healthy_run(http, name="beta", run_id="cmp-beta", steps_n=300)
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{web_daemon.url}/")
    page.wait_for_selector("body[data-ready='1']")
    rows = page.locator("#runs-body tr.run-row")
    assert rows.count() >= 2
    link = page.locator(f"tr[data-run-id='{a}'] a.run-link")
    assert link.text_content() == "alpha <b>bold</b>"
    assert page.locator(f"tr[data-run-id='{a}'] .badge").text_content() == "finished"
    # sort by name, both ways
    header = page.locator("#runs-table th", has_text="Name")
    header.click()
    names = [n.lower() for n in page.locator("#runs-body a.run-link").all_text_contents()]
    assert names == sorted(names)
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    names = [n.lower() for n in page.locator("#runs-body a.run-link").all_text_contents()]
    assert names == sorted(names, reverse=True)
    # compare two runs
    button = page.locator("#compare-button")
    assert button.is_disabled()
    page.locator(f"input.run-select[value='{a}']").check()
    page.locator(f"input.run-select[value='{b}']").check()
    assert button.is_enabled() and "(2)" in (button.text_content() or "")
    _shot(page, tmp_path / "runs_list.png")
    button.click()
    page.wait_for_url("**/compare?runs=*")
    page.wait_for_selector("body[data-ready='1']")
    assert set(page.url.split("runs=", 1)[1].split(",")) == {a, b}
    for chart in ("#compare-train", "#compare-val", "#compare-lr"):
        assert page.locator(f"{chart} .series").count() == 2, chart
    assert page.locator("#compare-runs li").count() == 2
    assert "alpha <b>bold</b>" in (page.locator("#compare-runs").text_content() or "")
    _shot(page, tmp_path / "compare.png")
    assert errors == []
    page.close()


def test_runs_list_refreshes_while_live(browser: Any, web_daemon: Daemon, http: httpx.Client,
                                        ) -> None:
    rid = http.post("/v1/runs", json={"name": "live-run", "run_id": "live-1"}).json()["run_id"]

    def send(start: int) -> None:
        steps = list(range(start, start + 10))
        r = http.post(f"/v1/runs/{rid}/metrics", json={"series": [
            {"name": "train_loss", "steps": steps,
             "values": (2.0 / (1 + np.arange(10) + start)).tolist()}]})
        assert r.status_code == 200

    send(0)
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{web_daemon.url}/?refresh=500")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#live-indicator").is_visible()
    page.locator(f"input.run-select[value='{rid}']").check()
    cell = page.locator(f"tr[data-run-id='{rid}'] td.last-step")
    assert cell.text_content() == "9"
    send(10)
    expect(cell).to_have_text("19", timeout=TIMEOUT_MS)
    assert page.locator("body[data-refreshed]").count() == 1  # refreshed in place, no reload
    # the selection survives the refresh
    assert page.locator(f"input.run-select[value='{rid}']").is_checked()
    http.post(f"/v1/runs/{rid}/finish", json={"status": "finished", "step": 19})
    expect(page.locator(f"tr[data-run-id='{rid}']")).to_have_attribute(
        "data-state", "finished", timeout=TIMEOUT_MS)
    assert errors == []
    page.close()
