"""Interop fixtures: real MLflow and W&B runs logged from the corpus CSVs, a TensorBoard logdir,
and the CLI fixtures (``cli``, ``sqlite_daemon``) of tests/cli."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rhythmd.interop import Columns
from rhythmd.interop.files import read_columns
from tests.cli.conftest import DIABETES, DIGITS, cli, sqlite_daemon

__all__ = ["DIABETES", "DIGITS", "cli", "sqlite_daemon"]

HF_NAMES = {"train_loss": "train/loss", "val_loss": "eval/loss", "lr": "train/learning_rate",
            "val_acc": "eval/accuracy"}
"""The corpus names as Hugging Face's Trainer logs them to W&B."""
LIGHTNING_NAMES = {"train_loss": "train_loss_step", "val_loss": "val_loss", "lr": "lr-SGD",
                   "val_acc": "val_acc"}
"""The corpus names as Lightning logs them (LearningRateMonitor: lr-<optimizer>)."""


def renamed(path: Path, names: dict[str, str]) -> Columns:
    """The corpus file's columns under other names."""
    return {names.get(k, k): v for k, v in read_columns(path).items()}


def assert_same_columns(got: Columns, want: Columns) -> None:
    """Same metrics, steps and values (NaN where NaN, the same infinities)."""
    assert set(got) == set(want)
    for k, (s, v) in want.items():
        gs, gv = got[k]
        assert gs.tolist() == s.tolist(), k
        np.testing.assert_allclose(gv, v, rtol=1e-6, err_msg=k)  # NaN == NaN here


def log_mlflow_run(tracking_uri: str, path: Path, names: dict[str, str],
                   params: dict[str, str] | None = None, run_name: str = "corpus") -> str:
    """Log the corpus file as an MLflow run through MlflowClient; its run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(experiment_id="0", run_name=run_name)
    rid = run.info.run_id
    points = [Metric(k, float(x), 1_700_000_000_000 + int(st), int(st))
              for k, (s, v) in renamed(path, names).items() for st, x in zip(s, v, strict=True)]
    for i in range(0, len(points), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(rid, metrics=points[i:i + 900])
    client.log_batch(rid, params=[Param(k, v) for k, v in (params or {}).items()])
    client.set_terminated(rid)
    return rid


@pytest.fixture(scope="session")
def mlflow_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite tracking store (its schema is made once: about 10 s), whose default experiment
    keeps its artifacts in the temporary folder too (not ``./mlruns`` in the working directory)."""
    pytest.importorskip("mlflow")
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    SqlAlchemyStore(uri, (root / "artifacts").as_uri())
    return uri


_WANDB_SCRIPT = textwrap.dedent('''
    import csv, json, sys
    import wandb
    src, names, config = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    run = wandb.init(project="rhythmd-tests", name="hf-corpus", config=config)
    run.define_metric("train/global_step")
    run.define_metric("*", step_metric="train/global_step")
    with open(src, newline="") as fh:
        for row in csv.DictReader(fh):
            data = {names.get(k, k): float(v) for k, v in row.items() if k != "step" and v}
            run.log({**data, "train/global_step": int(row["step"])})
    run.finish()
''')


def log_wandb_offline(root: Path, path: Path, config: dict[str, object]) -> Path:
    """Log the corpus file with the real wandb in offline mode, as Hugging Face's Trainer
    names its metrics (step metric ``train/global_step``); the ``wandb/`` directory."""
    pytest.importorskip("wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}
    subprocess.run([sys.executable, "-c", _WANDB_SCRIPT, str(path), json.dumps(HF_NAMES),
                    json.dumps(config)], env=env, check=True, timeout=120, cwd=root)
    return root / "wandb"


@pytest.fixture(scope="session")
def wandb_diabetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A W&B offline run of the diverging corpus run, planned for 80 steps."""
    yield log_wandb_offline(tmp_path_factory.mktemp("wandb"), DIABETES, {"max_steps": 80,
                                                                         "learning_rate": 0.3})
