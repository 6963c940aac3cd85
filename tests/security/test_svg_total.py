"""The SVG charts are total over finite floats, and the run page never fails on data (5)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhythmd.web.svg import Chart, Series, choose_scale, nice_ticks
from tests.conftest import Daemon

NUMBER_ATTR = re.compile(r'\b(?:x|y|x1|x2|y1|y2|cx|cy|d|points)="[^"]*(?:nan|inf)', re.I)
EDGE_CASES = [
    [0.0, 5e-324], [5e-324], [-5e-324, 5e-324], [5e-324, 1.0], [2.2250738585072014e-308, 1.0],
    [1e308, -1e308], [1.7976931348623157e308], [-1.7976931348623157e308, 0.0],
    [1e-300, 1e308], [3.0], [0.0], [float("nan")] * 3, [float("nan"), float("inf"), 1.0],
    [1.0, 1.0 + 2**-52],
]


def render(values: list[float], y_mode: str = "auto") -> str:
    chart = Chart("c", (0, max(len(values) - 1, 1)), y_mode=y_mode)
    chart.series.append(Series("s", "s", np.arange(len(values)), np.array(values, dtype=float)))
    return chart.render()


@pytest.mark.parametrize("values", EDGE_CASES, ids=str)
@pytest.mark.parametrize("y_mode", ["auto", "log", "linear"])
def test_edge_cases_render(values: list[float], y_mode: str) -> None:
    out = render(values, y_mode)
    assert out.startswith("<svg") and not NUMBER_ATTR.search(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True),
                min_size=1, max_size=12),
       st.sampled_from(["auto", "log", "linear"]))
def test_any_finite_values_render(values: list[float], y_mode: str) -> None:
    out = render(values, y_mode)
    assert not NUMBER_ATTR.search(out)
    scale = choose_scale([np.array(values)], y_mode)
    assert np.isfinite(scale.lo) and np.isfinite(scale.hi) and scale.lo < scale.hi
    finite = [v for v in values if -1e300 <= v <= 1e300]
    if finite:
        assert scale.lo <= min(finite) and max(finite) <= scale.hi


@given(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True),
       st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True))
def test_nice_ticks_are_finite(a: float, b: float) -> None:
    ticks = nice_ticks(min(a, b), max(a, b))
    assert ticks and all(np.isfinite(ticks)) and len(ticks) <= 50


@pytest.fixture(scope="module")
def daemon_m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(f"sqlite:///{tmp_path_factory.mktemp('svg') / 'd.db'}").start()
    yield d
    d.stop()


def test_run_page_renders_any_stored_values(daemon_m: Daemon) -> None:
    with httpx.Client(base_url=daemon_m.url, timeout=30) as http:
        for values in EDGE_CASES:
            rid = http.post("/v1/runs", json={"name": "svg"}).json()["run_id"]
            body = {"series": [
                {"name": "train/loss", "steps": list(range(len(values))), "values": values},
                {"name": "lr", "steps": list(range(len(values))), "values": values}]}
            r = http.post(f"/v1/runs/{rid}/metrics", content=json.dumps(body),
                          headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            page = http.get(f"/runs/{rid}")
            assert page.status_code == 200, (values, page.text[-500:])
            assert "<svg" in page.text and not NUMBER_ATTR.search(page.text)
