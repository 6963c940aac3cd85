"""MLflow runs: find one from a run URI, and read its metric histories.

A run is named ``runs:/RUN_ID`` (MLflow's own run URI) or ``mlflow://RUN_ID``; the tracking
store or server comes from the caller, else ``MLFLOW_TRACKING_URI``, else MLflow's default.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from rhythmd.errors import ConfigurationError
from rhythmd.interop.conventions import planned_steps
from rhythmd.interop.types import Columns, RunData, SourceError

MLFLOW_HINT = "pip install 'rhythmd[mlflow]'"
PREFIXES = ("runs:/", "mlflow://")
T = TypeVar("T")


def is_mlflow_ref(ref: str) -> bool:
    """Whether ``ref`` names an MLflow run rather than a file."""
    return ref.startswith(PREFIXES)


def parse_run_id(ref: str) -> str:
    """The run id of ``runs:/RUN_ID`` or ``mlflow://RUN_ID`` (a trailing artifact path is
    ignored)."""
    for prefix in PREFIXES:
        if ref.startswith(prefix):
            run_id = ref[len(prefix):].strip("/").split("/", 1)[0]
            if run_id:
                return run_id
    raise SourceError(f"{ref!r} names no MLflow run: write runs:/RUN_ID or mlflow://RUN_ID")


def public_uri(uri: str) -> str:
    """``uri`` without a user name or password, to be stored and shown."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class MlflowRun:
    """A client bound to one run of one tracking store or server."""

    def __init__(self, ref: str, tracking_uri: str | None = None) -> None:
        try:
            import mlflow
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigurationError(f"reading or writing MLflow runs needs the mlflow package: "
                                     f"{MLFLOW_HINT}") from None
        self.run_id = parse_run_id(ref)
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self._error = MlflowException
        self.client = self.call(lambda: MlflowClient(tracking_uri=self.tracking_uri))

    @property
    def where(self) -> str:
        return f"run {self.run_id} at {public_uri(self.tracking_uri)}"

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, with MLflow's errors turned into messages that say what to do."""
        try:
            return fn()
        except ImportError as exc:  # a database store without the full mlflow package
            raise ConfigurationError(f"the MLflow tracking store {public_uri(self.tracking_uri)}"
                                     f" needs {exc.name or 'a package'}: {MLFLOW_HINT}") from None
        except self._error as exc:
            code = getattr(exc, "error_code", "")
            if code == "RESOURCE_DOES_NOT_EXIST":
                raise SourceError(f"MLflow {self.where} not found: check the run id, and set "
                                  "MLFLOW_TRACKING_URI or pass --tracking-uri") from None
            raise SourceError(f"MLflow {self.where}: {exc.message}") from None

    def get_run(self) -> Any:
        return self.call(lambda: self.client.get_run(self.run_id))

    def read(self) -> RunData:
        """Every metric's history, the run name, and the planned length from the params."""
        run = self.get_run()
        cols: Columns = {}
        for key in sorted(run.data.metrics):
            history = self.call(lambda k=key: self.client.get_metric_history(self.run_id, k))
            cols[key] = history_columns([(m.step, m.timestamp, m.value) for m in history])
        return RunData(cols, label=f"runs:/{self.run_id}", name=run.info.run_name or self.run_id,
                       total_steps=planned_steps(run.data.params),
                       origin={"mlflow_run_id": self.run_id,
                               "mlflow_tracking_uri": public_uri(self.tracking_uri)})


def history_columns(points: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(step, timestamp, value)`` points as sorted arrays: the latest value of each step, or
    the points in logging order when they all share one step (logged without ``step=``).
    MLflow's database stores keep an infinity as the largest float: it is read back as one."""
    points = sorted(points, key=lambda p: (p[0], p[1]))
    if len(points) > 1 and points[0][0] == points[-1][0]:
        points = [(i, t, v) for i, (_, t, v) in enumerate(sorted(points, key=lambda p: p[1]))]
    latest: dict[int, float] = {}
    for step, _, value in points:
        latest[int(step)] = float(value)
    values = np.fromiter(latest.values(), np.float64, len(latest))
    big = np.abs(values) >= np.finfo(np.float64).max
    values[big] = np.copysign(np.inf, values[big])
    return np.fromiter(latest, np.int64, len(latest)), values


def read_mlflow_run(ref: str, tracking_uri: str | None = None) -> RunData:
    """Read the MLflow run ``ref`` (``runs:/RUN_ID`` or ``mlflow://RUN_ID``)."""
    return MlflowRun(ref, tracking_uri).read()
