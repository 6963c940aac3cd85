"""End to end against a real daemon: replay an MLflow run and a W&B offline run into rhythmd,
then export the daemon's findings (with a change a client applied) to MLflow and TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon
from tests.interop.conftest import DIABETES, LIGHTNING_NAMES, log_mlflow_run
from tests.interop.test_tensorboard_sink import accumulate, texts


def replay(cli: Any, *argv: Any) -> dict[str, Any]:
    r = cli("replay", *argv, "--json")
    assert r.code == 0, r
    return json.loads(r.out)


def test_mlflow_run_replayed_and_exported(cli: Any, sqlite_daemon: Daemon, mlflow_sqlite: str,
                                          tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    url = sqlite_daemon.url
    rid = log_mlflow_run(mlflow_sqlite, DIABETES, LIGHTNING_NAMES, {"max_steps": "80"},
                         run_name="mlflow-div")
    out = replay(cli, f"runs:/{rid}", "--tracking-uri", mlflow_sqlite, "--url", url)
    run = httpx.get(f"{url}/v1/runs/{out['run_id']}").json()
    assert run["name"] == "mlflow-div" and run["status"] == "finished"
    assert run["config"]["mlflow_run_id"] == rid
    assert run["config"]["mlflow_tracking_uri"] == mlflow_sqlite
    assert run["config"]["total_steps"] == 80
    assert run["config"]["train_metric"] == "train_loss_step"
    assert run["config"]["lr_metric"] == "lr-SGD"
    assert "divergence" in {d["kind"] for d in out["diagnoses"]}
    again = replay(cli, f"runs:/{rid}", "--tracking-uri", mlflow_sqlite, "--url", url)
    assert again["run_id"] == out["run_id"] and again["accepted"] == 0

    # a client applies the rollback: the export shows it, with the LR it set
    rec = next(r for r in out["recommendations"] if r["action"] == "rollback")
    ack = httpx.post(f"{url}/v1/runs/{out['run_id']}/recommendations/{rec['id']}/ack",
                     json={"status": "applied", "step": 60, "lr_before": [0.3],
                           "lr_after": [0.03]})
    assert ack.status_code == 200, ack.text

    tb = tmp_path / "tb"
    r = cli("export", out["run_id"], "--url", url, "--to-mlflow", "--to-tensorboard", tb)
    assert r.code == 0, r
    assert f"tagged MLflow run {rid}" in r.err  # the run it came from, found in its config
    tags = MlflowClient(tracking_uri=mlflow_sqlite).get_run(rid).data.tags
    assert tags["rhythmd.run_id"] == out["run_id"] and tags["rhythmd.url"] == url
    params = ", ".join(f"{k}={v}" for k, v in rec["params"].items())
    assert f"rollback({params})@{rec['issued_at_step']} applied" in \
        tags["rhythmd.recommendations"]
    assert tags["rhythmd.source"] == f"rhythmd replay runs:/{rid}"
    acc = accumulate(tb)
    assert [(e.step, e.value) for e in acc.Scalars("rhythmd/lr_applied")] == \
        [(60, pytest.approx(0.03))]
    recs = texts(acc, "rhythmd/recommendations")
    assert "applied at step 60" in recs[rec["issued_at_step"]]


def test_wandb_run_replayed(cli: Any, sqlite_daemon: Daemon, wandb_diabetes: Path) -> None:
    url = sqlite_daemon.url
    out = replay(cli, wandb_diabetes, "--url", url, "--project", "wb", "--no-progress")
    run = httpx.get(f"{url}/v1/runs/{out['run_id']}").json()
    assert run["name"] == "hf-corpus" and run["project"] == "wb"
    assert run["config"]["wandb_project"] == "rhythmd-tests"
    assert run["config"]["total_steps"] == 80 and run["last_step"] == 65
    assert run["config"]["val_metric"] == "eval/loss"
    assert "divergence" in {d["kind"] for d in out["diagnoses"]}
    again = replay(cli, wandb_diabetes, "--url", url, "--project", "wb", "--no-progress")
    assert again["run_id"] == out["run_id"] and again["duplicates"] == again["batches"]
    # no MLflow run to write back to: said, not guessed
    r = cli("export", out["run_id"], "--url", url, "--to-mlflow")
    assert r.code == 2 and "runs:/RUN_ID" in r.err


def test_export_usage(cli: Any, sqlite_daemon: Daemon) -> None:
    r = cli("export", "x", "--url", sqlite_daemon.url)
    assert r.code == 2 and "--to-tensorboard" in r.err
    r = cli("export", "no-such-run", "--url", sqlite_daemon.url, "--to-tensorboard", "d")
    assert r.code == 1 and "not found" in r.err
