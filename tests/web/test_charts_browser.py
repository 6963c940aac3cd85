"""The interactive charts (uPlot) in a real headless Chromium: drag to zoom (every chart
follows), hover values in the legend, smoothing; and the server's SVG when scripts are off."""

from __future__ import annotations

from typing import Any

import httpx

from rhythmd.web import fmt
from tests.conftest import Daemon
from tests.web import scenario
from tests.web.test_pages_browser import TIMEOUT_MS, _page


def _x_range(page: Any, chart: str) -> tuple[float, float]:
    host = page.locator(f"#uplot-{chart}")
    return float(host.get_attribute("data-x-min")), float(host.get_attribute("data-x-max"))


def _legend(page: Any, chart: str, index: int) -> str:
    cell = page.locator(f"#uplot-{chart} .u-legend .u-series").nth(index).locator(".u-value")
    return (cell.text_content() or "").strip()


def test_zoom_hover_and_smoothing(browser: Any, web_daemon: Daemon, http: httpx.Client) -> None:
    rid = scenario.rescued_run(http, run_id="uplot-1")
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{web_daemon.url}/runs/{rid}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("body").get_attribute("data-charts") == "2"
    assert page.locator("#uplot-chart-loss canvas").is_visible()
    assert page.locator("#chart-loss").is_hidden()  # the SVG is the no-script view
    over = page.locator("#uplot-chart-loss .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    x0, x1 = _x_range(page, "chart-loss")
    assert (x0, x1) == (0, 319)

    # hover: the legend shows the stored value at the step under the cursor
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5)
    step = int(_legend(page, "chart-loss", 0))
    assert abs(step - 0.7 * 319) <= 2
    stored = http.get(f"/v1/runs/{rid}/metrics/train_loss").json()
    value = stored["values"][stored["steps"].index(step)]
    assert _legend(page, "chart-loss", 1) == fmt.num(value)
    assert _legend(page, "chart-lr", 0) == str(step)  # the cursor is synced across charts

    # zoom: drag over 30-60 % of the plot; both charts show those steps
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.up()
    z0, z1 = _x_range(page, "chart-loss")
    assert abs(z0 - 0.3 * 319) < 5 and abs(z1 - 0.6 * 319) < 5
    assert _x_range(page, "chart-lr") == (z0, z1)
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    assert _x_range(page, "chart-loss") == (0, 319)

    # smoothing redraws the loss (not the learning rate) with the moving average
    def drawn(chart: str) -> str:
        return page.evaluate("(id) => document.querySelector(id + ' canvas').toDataURL()",
                             f"#uplot-{chart}")

    def series(chart: str) -> list[Any]:
        return page.evaluate("(id) => window.rhythmdCharts[id].data[1]", chart)

    before, raw, lr_before = drawn("chart-loss"), series("chart-loss"), series("chart-lr")
    page.select_option("#smoothing", "0.9")
    page.wait_for_selector("body[data-smoothing='0.9']", timeout=TIMEOUT_MS)
    smoothed = series("chart-loss")
    assert drawn("chart-loss") != before and smoothed != raw
    assert smoothed[0] == raw[0]  # debiased: the first point is its own average
    assert smoothed[-1] > raw[-1]  # a falling loss: the average lags above it
    assert series("chart-lr") == lr_before
    assert errors == []
    page.close()


def test_svg_without_scripts(browser: Any, web_daemon: Daemon, http: httpx.Client) -> None:
    rid = scenario.rescued_run(http, run_id="nojs-1")
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.goto(f"{web_daemon.url}/runs/{rid}")
    for chart in ("#chart-loss", "#chart-lr"):
        assert page.locator(chart).is_visible()
        assert page.locator(f"{chart} .series path").first.get_attribute("d")
    assert page.locator(".uplot-wrap").count() == 0
    assert page.locator("#chart-loss .offscale-marker").count() == 1
    context.close()


def test_live_refresh_redraws_and_keeps_the_zoom(browser: Any, web_daemon: Daemon,
                                                 http: httpx.Client) -> None:
    rid = http.post("/v1/runs", json={"name": "live-charts", "run_id": "live-charts-1"}).json()[
        "run_id"]

    def send(start: int) -> None:
        steps = list(range(start, start + 50))
        r = http.post(f"/v1/runs/{rid}/metrics", json={"series": [
            {"name": "train_loss", "steps": steps, "values": [2.0 / (1 + s) for s in steps]},
            {"name": "lr", "steps": steps, "values": [0.01] * 50}]})
        assert r.status_code == 200

    send(0)
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{web_daemon.url}/runs/{rid}?refresh=500")
    page.wait_for_selector("body[data-ready='1']")
    over = page.locator("#uplot-chart-loss .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    zoomed = _x_range(page, "chart-loss")
    page.select_option("#smoothing", "0.5")
    send(50)
    page.wait_for_function("() => window.rhythmdCharts['chart-loss'].data[0].length === 100",
                           timeout=TIMEOUT_MS)
    assert _x_range(page, "chart-loss") == zoomed
    assert page.locator("#uplot-chart-loss").count() == 1  # redrawn, not stacked
    assert page.locator("#smoothing").input_value() == "0.5"
    assert errors == []
    page.close()
