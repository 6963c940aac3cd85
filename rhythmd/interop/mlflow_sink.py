"""Findings onto an MLflow run: ``rhythmd.*`` tags (status, diagnoses, recommendations) and the
whole of them as the artifact ``rhythmd/findings.json``. Writing again overwrites both."""

from __future__ import annotations

from rhythmd.api.encoding import encode_nonfinite
from rhythmd.interop.findings import Findings
from rhythmd.interop.mlflow_runs import MlflowRun

ARTIFACT = "rhythmd/findings.json"


def write_mlflow(findings: Findings, ref: str, tracking_uri: str | None = None) -> str:
    """Tag the MLflow run ``ref`` and attach the JSON; says which run was written."""
    run = MlflowRun(ref, tracking_uri)
    from mlflow.entities import RunTag

    run.get_run()  # a missing run fails here, with its message
    tags = [RunTag(k, v) for k, v in findings.tags().items()]
    run.call(lambda: run.client.log_batch(run.run_id, tags=tags))
    doc = encode_nonfinite(findings.to_json())
    run.call(lambda: run.client.log_dict(run.run_id, doc, ARTIFACT))
    return run.where
