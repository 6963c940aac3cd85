"""One entry point for every run source: :func:`read_run` picks the reader from the reference."""

from __future__ import annotations

from pathlib import Path

from rhythmd.interop.files import read_columns
from rhythmd.interop.mlflow_runs import is_mlflow_ref, read_mlflow_run
from rhythmd.interop.types import RunData, SourceError
from rhythmd.interop.wandb_runs import find_wandb_file, read_wandb_run


def read_run(ref: str | Path, tracking_uri: str | None = None) -> RunData:
    """The run that ``ref`` names: an MLflow run URI (``runs:/RUN_ID``, ``mlflow://RUN_ID``;
    store or server ``tracking_uri``, else ``MLFLOW_TRACKING_URI``), a W&B offline run (its
    ``.wandb`` file or directory), or a CSV, JSONL or TensorBoard file or directory."""
    text = str(ref)
    if is_mlflow_ref(text):
        return read_mlflow_run(text, tracking_uri)
    path = Path(ref)
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if find_wandb_file(path) is not None:
        return read_wandb_run(path)
    return RunData(read_columns(path), str(path), path.stem or path.name)
