"""The runs list says what happened to each run: the worst diagnosis, what was changed
(rescued, reverted, stopped) and how many changes were applied, in a fixed number of queries."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from tests.web import scenario
from tests.web.test_pages import parse

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _applied(client: Any, rid: str, action: str, params: dict[str, Any], step: int) -> None:
    rec = client.post(f"/v1/runs/{rid}/recommendations", json={
        "action": action, "params": params, "author": "test", "reason": "test"}).json()
    r = client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack",
                    json={"status": "applied", "step": step})
    assert r.status_code == 200, r.text


def _row(html: str, rid: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], set[str]]:
    t = parse(html)
    row = t.find("run-row", data_run_id=rid)[0]
    start = html.index(f'data-run-id="{rid}"')
    part = parse(html[start:html.index("</tr>", start)])
    badges = {a["data-badge"] for a in part.find("badge") if a.get("data-badge")}
    return row, part.find("trouble")[0], part.find("changes")[0], badges


def test_finished_run_shows_its_trouble_rescue_and_changes(web_client: Any) -> None:
    rid = scenario.diverging_run(web_client)
    hid = scenario.healthy_run(web_client)
    html = web_client.get("/").text
    row, trouble, changes, badges = _row(html, rid)
    assert row["data-state"] == "finished"  # the lifecycle word stays ...
    diags = web_client.get(f"/v1/runs/{rid}/diagnoses").json()["diagnoses"]
    rank = {"info": 0, "warning": 1, "high": 2, "critical": 3}
    worst = max(rank[d["severity"]] for d in diags)
    assert trouble["data-kind"] == "divergence"  # ... and the trouble is next to it
    assert rank[trouble["data-severity"] or ""] == worst
    assert badges == {"rescued"}
    assert changes["data-value"] == "1"
    row, trouble, changes, badges = _row(html, hid)
    assert row["data-state"] == "finished" and trouble["data-value"] == "-1"
    assert badges == set() and changes["data-value"] == "0"
    text = "".join(parse(html).text)
    assert "divergence" in text and "rescued" in text


def test_reverted_and_stopped_badges(web_client: Any) -> None:
    rid = scenario.healthy_run(web_client, run_id="rev-1", finish=False)
    _applied(web_client, rid, "reduce_lr", {"factor": 0.5}, 100)
    _applied(web_client, rid, "revert", {"to_step": 100, "change_id": "abc"}, 150)
    _applied(web_client, rid, "stop", {}, 200)
    sid = scenario.healthy_run(web_client, run_id="stopped-1", finish=False)
    web_client.post(f"/v1/runs/{sid}/finish", json={"status": "stopped", "step": 399})
    html = web_client.get("/").text
    _, _, changes, badges = _row(html, rid)
    assert badges == {"reverted", "stopped"}
    assert changes["data-value"] == "2"  # reduce_lr and revert; a stop is not a change
    _, _, changes, badges = _row(html, sid)
    assert badges == {"stopped"} and changes["data-value"] == "0"


def test_runs_list_costs_the_same_queries_for_more_runs(web_client: Any) -> None:
    engine = web_client.app.state.service.store.engine
    count = [0]

    def seen(*_: Any) -> None:
        count[0] += 1

    def queries() -> int:
        count[0] = 0
        event.listen(engine, "before_cursor_execute", seen)
        try:
            assert web_client.get("/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        return count[0]

    scenario.diverging_run(web_client)
    scenario.healthy_run(web_client)
    few = queries()
    for i in range(4):
        scenario.healthy_run(web_client, run_id=f"more-{i}", steps_n=60)
    assert queries() == few
