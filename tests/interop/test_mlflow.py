"""MLflow runs as a source and a sink, with the real mlflow client (SQLite and file stores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rhythmd.cli.analyze import analyze_file
from rhythmd.interop import read_run
from rhythmd.interop.mlflow_runs import history_columns, public_uri
from tests.cli.conftest import hide_package
from tests.interop.conftest import (
    DIABETES,
    DIGITS,
    LIGHTNING_NAMES,
    assert_same_columns,
    log_mlflow_run,
    renamed,
)

pytest.importorskip("mlflow")


def same_findings(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The same diagnoses and recommendations at the same steps (metric names may differ)."""
    def key(rep: dict[str, Any]) -> Any:
        return (rep["total_steps"], rep["schedule"],
                [(d["kind"], d["severity"], d["onset_step"], d["detected_at_step"],
                  d["closed_at_step"]) for d in rep["diagnoses"]],
                [(r["step"], r["action"], r["params"]) for r in rep["recommendations"]])
    assert key(a) == key(b)


def test_sqlite_store_reads_as_the_csv(mlflow_sqlite: str) -> None:
    """Every metric's history, NaN and infinities included (the SQL store keeps an infinity as
    the largest float), the Lightning names mapped to their roles, the planned length from the
    params; the analysis is the one of the CSV with that length."""
    rid = log_mlflow_run(mlflow_sqlite, DIABETES, LIGHTNING_NAMES,
                         {"max_steps": "80", "lr": "0.3"}, run_name="lightning-div")
    data = read_run(f"runs:/{rid}", mlflow_sqlite)
    assert_same_columns(data.columns, renamed(DIABETES, LIGHTNING_NAMES))
    assert data.name == "lightning-div" and data.total_steps == 80
    assert data.origin == {"mlflow_run_id": rid, "mlflow_tracking_uri": mlflow_sqlite}
    rep = analyze_file(f"runs:/{rid}", tracking_uri=mlflow_sqlite)
    assert rep["metrics"] == {"train": "train_loss_step", "val": "val_loss", "lr": "lr-SGD"}
    same_findings(rep, analyze_file(DIABETES, total_steps=80))
    assert "divergence" in {d["kind"] for d in rep["diagnoses"]}


def test_file_store_from_the_environment(cli: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A ./mlruns store named by MLFLOW_TRACKING_URI, the run as mlflow://RUN_ID."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in
    rid = log_mlflow_run(uri, DIGITS, {})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = cli("analyze", f"mlflow://{rid}", "--json")
    assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert rep["file"] == f"runs:/{rid}" and rep["total_steps"] == 800
    same_findings(rep, analyze_file(DIGITS))


def test_points_logged_without_steps_keep_their_order() -> None:
    s, v = history_columns([(0, 30, 3.0), (0, 10, 1.0), (0, 20, 2.0)])
    assert s.tolist() == [0, 1, 2] and v.tolist() == [1.0, 2.0, 3.0]
    s, v = history_columns([(5, 2, 1.0), (5, 9, 0.5), (1, 1, 2.0), (7, 3, -1.8e308 * 10)])
    assert s.tolist() == [1, 5, 7] and v.tolist() == [2.0, 0.5, float("-inf")]


def test_credentials_are_not_kept() -> None:
    assert public_uri("https://me:secret@mlflow.example:5000/x") == \
        "https://mlflow.example:5000/x"
    assert public_uri("sqlite:///m.db") == "sqlite:///m.db"


def test_unknown_run_and_bad_uri(cli: Any, mlflow_sqlite: str) -> None:
    r = cli("analyze", "runs:/0123456789abcdef", "--tracking-uri", mlflow_sqlite)
    assert r.code == 1 and "not found" in r.err and "MLFLOW_TRACKING_URI" in r.err
    r = cli("analyze", "runs:/", "--tracking-uri", mlflow_sqlite)
    assert r.code == 1 and "runs:/RUN_ID" in r.err
    assert "Traceback" not in r.err


def test_without_mlflow_says_what_to_install(cli: Any, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    hide_package(monkeypatch, "mlflow")
    r = cli("analyze", "runs:/abc")
    assert r.code == 2 and "pip install 'rhythmd[mlflow]'" in r.err


def test_analyze_writes_back_to_the_run_it_read(cli: Any, mlflow_sqlite: str,
                                                tmp_path: Path) -> None:
    """A bare --to-mlflow tags the run read and attaches the findings; again, it overwrites."""
    from mlflow.tracking import MlflowClient

    rid = log_mlflow_run(mlflow_sqlite, DIABETES, LIGHTNING_NAMES, run_name="to-tag")
    for _ in range(2):
        r = cli("analyze", f"runs:/{rid}", "--tracking-uri", mlflow_sqlite, "--to-mlflow",
                "--json")
        assert r.code == 0, r
        assert f"tagged MLflow run {rid}" in r.err
    (rep,) = json.loads(r.out)
    client = MlflowClient(tracking_uri=mlflow_sqlite)
    tags = client.get_run(rid).data.tags
    first = rep["diagnoses"][0]
    assert tags["rhythmd.status"].startswith(("divergence", "recovered"))
    assert f"{first['kind']}@{first['detected_at_step']}" in tags["rhythmd.diagnoses"]
    assert tags["rhythmd.recommendations"].startswith("rollback(")
    assert "recommended" in tags["rhythmd.recommendations"]
    assert tags["rhythmd.source"] == f"runs:/{rid}"
    assert [a.path for a in client.list_artifacts(rid, "rhythmd")] == ["rhythmd/findings.json"]
    local = client.download_artifacts(rid, "rhythmd/findings.json", str(tmp_path))
    doc = json.loads(Path(local).read_text())
    assert doc["diagnoses"] == rep["diagnoses"]
    assert [r["action"] for r in doc["recommendations"]] == \
        [r["action"] for r in rep["recommendations"]]


def test_to_mlflow_needs_a_run_for_files(cli: Any) -> None:
    r = cli("analyze", DIGITS, "--to-mlflow")
    assert r.code == 2 and "runs:/RUN_ID" in r.err
