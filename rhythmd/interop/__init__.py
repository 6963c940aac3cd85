"""Runs from other tools in, rhythmd's findings out.

Sources (:func:`read_run`): CSV, JSONL and TensorBoard files, MLflow runs, W&B offline runs.
Sinks: TensorBoard event files and MLflow runs (:mod:`rhythmd.interop.sinks`).
"""

from __future__ import annotations

from rhythmd.interop.sources import read_run
from rhythmd.interop.types import Columns, RunData, SourceError

__all__ = ["Columns", "RunData", "SourceError", "read_run"]
