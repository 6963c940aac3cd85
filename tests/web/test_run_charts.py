"""The run page's charts on a rescued run: the scale follows the surviving branch, the
abandoned one is dimmed and clipped with its true values in the markers' titles, events sit on
the branch where they happened, and the configured LR is a reference line."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.web import scenario
from tests.web.test_pages import parse

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _svg(html: str, chart_id: str) -> str:
    m = re.search(rf'<svg[^>]*id="{chart_id}".*?</svg>', html, re.S)
    assert m, chart_id
    return m.group(0)


def _yticks(svg: str) -> list[float]:
    return [float(v) for v in re.findall(r'class="tick ytick"[^>]*>([^<]+)<', svg)]


def _group(svg: str, cls: str, **attrs: str) -> str:
    """The first ``<g>`` of class ``cls`` with the given data attributes, as markup."""
    for m in re.finditer(r'<g class="([^"]*)"([^>]*)>(.*?)</g>', svg, re.S):
        if cls in m.group(1).split() and all(f'data-{k.replace("_", "-")}="{v}"' in m.group(2)
                                              for k, v in attrs.items()):
            return m.group(0)
    raise AssertionError(f"no {cls} {attrs}")


@pytest.fixture
def rescued(web_client: Any) -> tuple[str, str]:
    rid = scenario.rescued_run(web_client)
    return rid, web_client.get(f"/runs/{rid}").text


def test_scale_follows_the_surviving_branch(rescued: tuple[str, str]) -> None:
    _, html = rescued
    loss = _svg(html, "chart-loss")
    ticks = _yticks(loss)
    assert ticks and max(ticks) <= 2 and min(ticks) >= 0.005  # not 1e26, not squashed
    assert 'class="series abandoned-series"' in loss
    off = parse(loss).find("offscale-marker", data_series="train_loss", data_side="above")
    assert len(off) == 1  # one run of consecutive off-scale points
    assert float(off[0]["data-value"] or 0) == pytest.approx(scenario.BLOWUP_PEAK)
    title = re.search(r'class="offscale-marker".*?<title>([^<]*)</title>', loss, re.S)
    assert title and "1e26" in title.group(1) and "step 199" in title.group(1)
    assert int(off[0]["data-end-step"] or 0) == 199


def test_markers_sit_on_their_branch(rescued: tuple[str, str]) -> None:
    _, html = rescued
    loss = _svg(html, "chart-loss")
    t = parse(loss)
    # the rollback was issued and applied on branch 0, which it abandoned from step 100
    applied = t.find("applied-marker", data_action="rollback")
    assert applied and "on-abandoned" in (applied[0]["class"] or "")
    assert applied[0]["data-on-branch"] == "0"
    pin = _group(loss, "applied-marker", action="rollback")
    ys = [float(v) for v in re.findall(r'y[12]="([\d.]+)"', pin)]
    top, bottom = float(t.find(id="chart-loss")[0]["data-top"] or 0), float(
        t.find(id="chart-loss")[0]["data-bottom"] or 0)
    assert max(ys) - min(ys) < (bottom - top) / 4  # a pin, not a line across the plot
    # the rollback: an arrow from branch 0's last step back to the resume step
    rb = t.find("rollback-marker", data_step=str(scenario.RESCUE_TO), data_branch="1")
    assert rb and "on-surviving" in (rb[0]["class"] or "")
    arrow = t.find("rollback-arrow")
    assert arrow and arrow[0]["data-from-step"] == "199"
    assert not re.search(rf'y1="{top:g}" y2="{bottom:g}"', _group(loss, "rollback-marker"))
    # the divergence was seen on branch 0 only: its region is drawn as abandoned
    div = t.find("diag-region", data_kind="divergence")
    assert div and "on-abandoned" in (div[0]["class"] or "")
    assert int(div[0]["data-start"] or 0) >= scenario.BLOWUP_FROM - 5
    # a change applied on the surviving branch: a line across the plot
    cut = t.find("applied-marker", data_action="reduce_lr")
    assert cut and "on-surviving" in (cut[0]["class"] or "") and cut[0]["data-on-branch"] == "1"
    assert re.search(rf'y1="{top:g}" y2="{bottom:g}"',
                     _group(loss, "applied-marker", action="reduce_lr"))


def test_configured_lr_line(web_client: Any, rescued: tuple[str, str]) -> None:
    _, html = rescued
    lr = parse(_svg(html, "chart-lr"))
    ref = lr.find("configured-lr")
    # no LR in the config: the highest LR logged before the rollback (the warmup's peak)
    assert ref and float(ref[0]["data-value"] or 0) == pytest.approx(scenario.WARM_LR)
    assert "configured lr 0.05" in "".join(lr.text)
    rid = scenario.diverging_run(web_client)  # config {"lr": 0.1}
    ref = parse(_svg(web_client.get(f"/runs/{rid}").text, "chart-lr")).find("configured-lr")
    assert ref and float(ref[0]["data-value"] or 0) == pytest.approx(0.1)


def test_roles_follow_the_metric_names_of_the_analysis() -> None:
    from rhythmd.web.data import roles_for

    r = roles_for({"config": None}, ["Train/Loss", "eval_loss", "val/accuracy", "lr-Adam"])
    assert (r.train, r.val, r.aux, r.lr) == ("Train/Loss", "eval_loss", "val/accuracy", "lr-Adam")
    assert r.val_mode == "min" and r.aux_mode == "max"
    r = roles_for({"config": {"train_metric": "obj"}}, ["loss", "obj"])
    assert r.train == "obj"  # a configured name wins over the conventional ones
    assert roles_for({"config": {"train_metric": "gone"}}, ["loss", "obj"]).train == "loss"
