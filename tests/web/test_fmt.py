"""Numbers on the pages: significant digits through one helper, never float noise."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rhythmd.web import fmt
from tests.web.test_pages import parse

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOISY = 0.09999999999999998


@pytest.mark.parametrize(("value", "text"), [
    (NOISY, "0.1"), (0.30000000000000004, "0.3"), (1.5e26, "1.5e26"), (1.5e-5, "1.5e-5"),
    (400.0, "400"), (123456.0, "1.235e5"), (-3.14159, "-3.142"), (0.0, "0"),
    (float("nan"), "NaN"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1e-300, "1e-300"),
])
def test_num(value: float, text: str) -> None:
    assert fmt.num(value) == text


def test_value_formats_numbers_at_any_depth() -> None:
    assert fmt.value({"lr_factor": 0.30000000000000004, "lrs": [NOISY, "NaN"], "kind": "a"}) \
        == '{"lr_factor": 0.3, "lrs": [0.1, NaN], "kind": "a"}'
    assert fmt.value("text") == "text" and fmt.value(7) == "7" and fmt.value(None) == "null"
    assert fmt.value("Infinity") == "+Inf"
    assert len(fmt.value(list(range(1000)))) == fmt.MAX_TEXT


def _without_data(html: str) -> str:
    """The page less its charts' JSON data blocks (full-precision data, not labels)."""
    return re.sub(r'<script type="application/json".*?</script>', "", html, flags=re.S)


def test_pages_show_no_float_noise(web_client: Any) -> None:
    rid = web_client.post("/v1/runs", json={"name": "noise", "config": {"lr": NOISY}}).json()[
        "run_id"]
    steps = list(range(60))
    r = web_client.post(f"/v1/runs/{rid}/metrics", json={"series": [
        {"name": "train_loss", "steps": steps, "values": [1 / (s + 3) for s in steps]},
        {"name": "lr", "steps": steps, "values": [NOISY] * 60},
        {"name": "val_loss", "steps": [59], "values": [0.30000000000000004]}]})
    assert r.status_code == 200
    rec = web_client.post(f"/v1/runs/{rid}/recommendations", json={
        "action": "reduce_lr", "params": {"factor": 0.30000000000000004}, "author": "t",
        "reason": "test"}).json()
    web_client.post(f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", json={
        "status": "applied", "step": 59, "lr_before": [NOISY], "lr_after": [0.030000000000000002]})
    for url in (f"/runs/{rid}", "/", f"/compare?runs={rid}"):
        text = "".join(parse(_without_data(web_client.get(url).text)).text)
        assert "99999" not in text and "00000" not in text, url
    text = "".join(parse(_without_data(web_client.get(f"/runs/{rid}").text)).text)
    assert "[0.1] → [0.03]" in text and '{"factor": 0.3}' in text


def test_text_shortens_only_noisy_literals() -> None:
    assert fmt.text("lr [0.09999999999999998] -> [0.030000000000000002] at v1.0, x 0.12345") \
        == "lr [0.1] -> [0.03] at v1.0, x 0.12345"
