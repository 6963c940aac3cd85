"""Runs streamed into a daemon for the page tests: a divergence with NaNs, a rollback
recommendation issued and acknowledged, a resumed branch; and a healthy run to compare."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

XSS_NAME = "<script>alert(1)</script>"
DIVERGE_AT = 200
NAN_FROM, NAN_TO = 260, 279  # inclusive: train_loss is NaN on these steps of branch 0
ROLLBACK_TO = 180
LAST_STEP = 399


class HttpClient(Protocol):
    def post(self, url: str, **kw: Any) -> Any: ...
    def get(self, url: str, **kw: Any) -> Any: ...


def _post(http: HttpClient, url: str, body: dict[str, Any], status: int | None = None) -> Any:
    r = http.post(url, json=body)
    assert r.status_code in ((status,) if status else (200, 201)), (url, r.status_code, r.text)
    return r.json()


def _batches(http: HttpClient, rid: str, steps: np.ndarray, loss: list[Any], lr: np.ndarray,
             val_every: int, prefix: str, branch: int = 0,
             branch_start: int | None = None) -> None:
    for i in range(0, steps.size, 20):
        sl = slice(i, i + 20)
        s = steps[sl].tolist()
        series: list[dict[str, Any]] = [
            {"name": "train_loss", "steps": s, "values": loss[sl]},
            {"name": "lr", "steps": s, "values": lr[sl].tolist()},
        ]
        last = s[-1]
        if (last + 1) % val_every == 0:
            v = loss[sl][-1]
            series.append({"name": "val_loss", "steps": [last],
                           "values": [v * 1.08 if isinstance(v, float) else "NaN"]})
        body: dict[str, Any] = {"batch_id": f"{prefix}-{branch}-{i}", "series": series}
        if branch:
            body["branch"] = branch
            if i == 0 and branch_start is not None:
                body["branch_start_step"] = branch_start
        _post(http, f"/v1/runs/{rid}/metrics", body)


def diverging_run(http: HttpClient, *, name: str = XSS_NAME, run_id: str = "diverging-1",
                  finish: bool = True) -> str:
    """A run that diverges from step 200, is NaN on steps 260-279, gets a rollback (issued by
    hand and acknowledged) and resumes on branch 1 at step 180 with a lower LR."""
    run = _post(http, "/v1/runs", {
        "name": name, "project": "web<b>test&amp;", "run_id": run_id,
        "config": {"total_steps": 400, "lr": 0.1, "note": "<img src=x onerror=alert(2)>"},
        "tags": {"owner": "<i>mallory</i>"}})
    rid = run["run_id"]
    rng = np.random.default_rng(0)
    steps = np.arange(0, NAN_TO + 1)
    base = 2.5 * np.exp(-steps / 80.0) + 0.5 + rng.normal(0, 0.02, steps.size)
    loss = base.copy()
    loss[DIVERGE_AT:] = base[DIVERGE_AT - 1] * np.exp((steps[DIVERGE_AT:] - DIVERGE_AT + 1) / 15)
    values: list[Any] = [float(v) for v in loss]
    for k in range(NAN_FROM, NAN_TO + 1):
        values[k] = "NaN"
    lr = 0.1 * np.minimum(1.0, (steps + 1) / 50.0)
    _batches(http, rid, steps, values, lr, 40, "a")
    rec = _post(http, f"/v1/runs/{rid}/recommendations", {
        "action": "rollback", "params": {"to_step": ROLLBACK_TO, "lr_factor": 0.3},
        "author": "alice <script>", "reason": "NaN loss: roll back and cool down"})
    _post(http, f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", {
        "status": "applied", "step": NAN_TO, "lr_before": [0.1], "lr_after": [0.03],
        "note": "restored checkpoint"})
    steps2 = np.arange(ROLLBACK_TO, LAST_STEP + 1)
    loss2 = 2.5 * np.exp(-steps2 / 80.0) + 0.45 + rng.normal(0, 0.02, steps2.size)
    _batches(http, rid, steps2, [float(v) for v in loss2], np.full(steps2.size, 0.03), 40, "b",
             branch=1, branch_start=ROLLBACK_TO)
    if finish:
        _post(http, f"/v1/runs/{rid}/finish", {"status": "finished", "step": LAST_STEP})
    return rid


def healthy_run(http: HttpClient, *, name: str = "healthy-baseline", run_id: str = "healthy-1",
                steps_n: int = 400, finish: bool = True) -> str:
    run = _post(http, "/v1/runs", {"name": name, "project": "webtest", "run_id": run_id,
                                    "config": {"total_steps": steps_n}})
    rid = run["run_id"]
    rng = np.random.default_rng(1)
    steps = np.arange(0, steps_n)
    loss = 2.4 * np.exp(-steps / (0.3 * steps_n)) + 0.4 + rng.normal(0, 0.015, steps.size)
    lr = 0.05 * (1 + np.cos(np.pi * steps / steps_n)) / 2 + 1e-4
    _batches(http, rid, steps, [float(v) for v in loss], lr, 50, "h")
    if finish:
        _post(http, f"/v1/runs/{rid}/finish", {"status": "finished", "step": steps_n - 1})
    return rid


BLOWUP_FROM, BLOWUP_PEAK = 150, 1e26  # branch 0's loss climbs from step 150 to 1e26 at 199
RESCUE_TO = 100  # the rollback resumes branch 1 at this step
CUT_AT = 250  # a reduce_lr applied on the surviving branch
WARM_LR = 0.05


def rescued_run(http: HttpClient, *, run_id: str = "rescued-1") -> str:
    """No LR in the config; warmup to 0.05; branch 0 blows up to 1e26 by step 199, a rollback
    resumes branch 1 at step 100 with LR 0.015, a reduce_lr is applied at step 250."""
    rid = _post(http, "/v1/runs", {"name": "rescued", "run_id": run_id,
                                   "config": {"total_steps": 320}})["run_id"]
    steps = np.arange(0, 200)
    loss = 1.0 * np.exp(-steps / 40.0) + 0.02
    climb = np.geomspace(loss[BLOWUP_FROM], BLOWUP_PEAK, 200 - BLOWUP_FROM)
    loss[BLOWUP_FROM:] = climb
    lr = WARM_LR * np.minimum(1.0, (steps + 1) / 20.0)
    _batches(http, rid, steps, [float(v) for v in loss], lr, 50, "r")
    rec = _post(http, f"/v1/runs/{rid}/recommendations", {
        "action": "rollback", "params": {"to_step": RESCUE_TO, "lr_factor": 0.3},
        "author": "test", "reason": "blow-up"})
    _post(http, f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", {
        "status": "applied", "step": 199, "lr_before": [WARM_LR], "lr_after": [0.015]})
    steps2 = np.arange(RESCUE_TO, CUT_AT + 1)
    loss2 = 0.5 * np.exp(-steps2 / 60.0) + 0.01
    _batches(http, rid, steps2, [float(v) for v in loss2], np.full(steps2.size, 0.015), 50,
             "s", branch=1, branch_start=RESCUE_TO)
    rec = _post(http, f"/v1/runs/{rid}/recommendations", {
        "action": "reduce_lr", "params": {"factor": 0.5}, "author": "test", "reason": "plateau"})
    _post(http, f"/v1/runs/{rid}/recommendations/{rec['id']}/ack", {
        "status": "applied", "step": CUT_AT, "lr_before": [0.015], "lr_after": [0.0075]})
    steps3 = np.arange(CUT_AT + 1, 320)
    loss3 = 0.5 * np.exp(-steps3 / 60.0) + 0.01
    _batches(http, rid, steps3, [float(v) for v in loss3], np.full(steps3.size, 0.0075), 50,
             "t", branch=1)
    _post(http, f"/v1/runs/{rid}/finish", {"status": "finished", "step": 319})
    return rid
