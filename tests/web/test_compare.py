"""The compare page tells runs of the same name apart and marks each run's diagnoses."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.web import scenario
from tests.web.test_pages import parse

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_same_names_are_told_apart_and_diagnoses_marked(web_client: Any) -> None:
    a = scenario.diverging_run(web_client, name="same", run_id="same-a")
    b = scenario.healthy_run(web_client, name="same", run_id="same-b")
    html = web_client.get(f"/compare?runs={a},{b}").text
    t = parse(html)
    items = {x["data-run-id"]: x for x in t.find("compare-run")}
    assert set(items) == {a, b}
    listed = re.search(r'<ul id="compare-runs">.*?</ul>', html, re.S)
    assert listed and f"<code class=\"run-id\">{a}</code>" in listed.group(0)
    assert f"<code class=\"run-id\">{b}</code>" in listed.group(0)
    train = re.search(r'<svg[^>]*id="compare-train".*?</svg>', html, re.S)
    assert train
    titles = re.findall(r'<g class="series"[^>]*><title>([^<]*)</title>', train.group(0))
    assert sorted(titles) == [f"same · {a} (train_loss)", f"same · {b} (train_loss)"]
    # a's diagnoses, each at its onset in a's colour; b has none
    diags = web_client.get(f"/v1/runs/{a}/diagnoses").json()["diagnoses"]
    marks = parse(train.group(0)).find("diagnosis-marker")
    assert {m["data-ref-id"] for m in marks} == {d["id"] for d in diags} and diags
    assert {m["data-run-id"] for m in marks} == {a}
    onset = {d["id"]: d.get("onset_step", d["detected_at_step"]) for d in diags}
    assert all(int(m["data-step"] or -1) == onset[m["data-ref-id"] or ""] for m in marks)
    color = re.search(r'data-run-id="same-a"><svg[^>]*><line[^>]*stroke="([^"]+)"', html)
    assert color and f'stroke="{color.group(1)}"' in re.search(
        r'<g class="marker diagnosis-marker.*?</g>', train.group(0), re.S).group(0)
    # the worst diagnosis and the rescue are in the run list too
    row = re.search(r'data-run-id="same-a">.*?</li>', html, re.S)
    assert row and 'data-kind="divergence"' in row.group(0) and "rescued" in row.group(0)
    # and in the interactive chart's data
    data = re.search(r'data-for="compare-train">(.*?)</script>', html, re.S)
    assert data
    spec = json.loads(data.group(1))
    assert {m["kind"] for m in spec["markers"]} == {"diagnosis"}
    assert sorted(x["label"] for x in spec["series"]) == sorted(titles)
