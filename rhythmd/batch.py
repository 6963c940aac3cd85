"""Metric batches: the columnar ingest format, validated into numpy arrays.

This module is pure: it turns the decoded JSON of ``POST /v1/runs/{run_id}/metrics`` into a
:class:`MetricBatch` or raises :class:`~rhythmd.errors.InvalidInputError` naming the field.
A batch is accepted or rejected whole: one bad series rejects the batch and nothing of it is
stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rhythmd.errors import InvalidInputError, TooLargeError

METRIC_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/@:%+=()\[\],#]+( [A-Za-z0-9_.\-/@:%+=()\[\],#]+)*$")
"""Metric names: 1-256 characters of letters, digits, ``_ . - / @ : % + = ( ) [ ] , #`` and
single inner spaces, as TensorBoard and W&B names are written (``train/loss``, ``val/acc@1``)."""
METRIC_NAME_MAX = 256
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
MAX_STEP = 2**53
"""Steps above this are refused: 2**53 is the largest integer every JSON parser (JavaScript
included) reads exactly, so a step means the same to every client and to the schema."""
MAX_BRANCH = 2**31 - 1

NONFINITE_STRINGS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_NUMBER_TYPES = frozenset({float, int})
_SMALL = 64  # lists up to this long are range-checked in Python, longer ones in numpy


@dataclass(frozen=True, slots=True)
class SeriesData:
    """One metric's points: ``steps`` (optimizer steps, int64), ``values`` (float64, non-finite
    kept), optional ``wall_times`` (unix seconds, float64)."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray | None = None

    @property
    def n_nonfinite(self) -> int:
        return int(self.values.size - np.count_nonzero(np.isfinite(self.values)))


@dataclass(frozen=True, slots=True)
class MetricBatch:
    """A validated batch. ``branch`` > 0 after a rollback; ``branch_start_step`` is the step the
    new branch resumed from (first declaration wins)."""

    batch_id: str | None
    branch: int
    branch_start_step: int | None
    series: tuple[SeriesData, ...]

    @property
    def n_points(self) -> int:
        return sum(s.steps.size for s in self.series)


def check_metric_name(name: Any, loc: tuple[str | int, ...]) -> str:
    if not isinstance(name, str):
        raise InvalidInputError(loc, "metric name must be a string", name)
    if not 1 <= len(name) <= METRIC_NAME_MAX or not METRIC_NAME_RE.match(name):
        raise InvalidInputError(
            loc,
            f"invalid metric name {name[:80]!r}: 1-{METRIC_NAME_MAX} characters of letters, "
            "digits, _ . - / @ : % + = ( ) [ ] , # and single inner spaces",
        )
    return name


def _integral(value: Any) -> Any:
    """An integral float (``3.0``, an integer to JSON Schema) as an int; anything else as is
    (booleans stay booleans and are refused)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int, default: int | None) -> int | None:
    value = _integral(obj.get(key, default))
    if value is None:
        return default
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInputError(("body", key), f"{key} must be an integer in [{lo}, {hi}]", value)
    return value


def _steps_array(raw: Any, loc: tuple[str | int, ...]) -> np.ndarray:
    if not isinstance(raw, list):
        raise InvalidInputError(loc, "steps must be a list of integers")
    if raw and set(map(type, raw)) != {int}:
        raw = [_integral(v) for v in raw]
    if raw and set(map(type, raw)) != {int}:
        bad = next(i for i, v in enumerate(raw) if type(v) is not int)
        raise InvalidInputError((*loc, bad), "steps must be integers", raw[bad])
    if len(raw) <= _SMALL:  # the usual per-flush batch: Python's min/max beat numpy's here
        steps = (np.array(raw, dtype=np.int64) if not raw or (min(raw) >= 0
                 and max(raw) <= MAX_STEP) else None)
    else:
        try:
            steps = np.array(raw, dtype=np.int64)
        except OverflowError:
            steps = None
        if steps is not None and (steps.min() < 0 or steps.max() > MAX_STEP):
            steps = None
    if steps is None:
        arr = np.array([min(max(v, -1), MAX_STEP + 1) for v in raw], dtype=np.int64)
        bad = int(np.flatnonzero((arr < 0) | (arr > MAX_STEP))[0])
        raise InvalidInputError((*loc, bad), f"steps must be in [0, {MAX_STEP}]", raw[bad])
    return steps


def _values_array(raw: Any, loc: tuple[str | int, ...]) -> np.ndarray:
    if not isinstance(raw, list):
        raise InvalidInputError(loc, "values must be a list of numbers")
    kinds = set(map(type, raw))
    if kinds <= _NUMBER_TYPES:
        try:
            return np.array(raw, dtype=np.float64)
        except OverflowError:
            pass  # an int beyond float range: reported below
    out = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        t = type(v)
        if t is float:
            out[i] = v
        elif t is int:
            try:
                out[i] = float(v)
            except OverflowError:
                raise InvalidInputError((*loc, i), "value out of float64 range", None) from None
        elif v is None:
            out[i] = np.nan
        elif t is str and v in NONFINITE_STRINGS:
            out[i] = NONFINITE_STRINGS[v]
        else:
            raise InvalidInputError(
                (*loc, i),
                'values must be numbers, null (NaN) or one of "NaN", "Infinity", "-Infinity"',
                v if t is str else repr(v)[:80],
            )
    return out


def parse_metric_batch(
    body: Any, *, max_points: int = 200_000, max_series: int = 1_000
) -> MetricBatch:
    """Validate a decoded JSON body into a :class:`MetricBatch`.

    Raises :class:`InvalidInputError` (422) with the location of the first bad field, or
    :class:`TooLargeError` (413) above ``max_points`` points or ``max_series`` series.
    """
    if not isinstance(body, dict):
        raise InvalidInputError(("body",), "the body must be a JSON object")
    unknown = set(body) - {"batch_id", "branch", "branch_start_step", "series"}
    if unknown:
        raise InvalidInputError(("body", sorted(unknown)[0]), "unknown field")
    batch_id = body.get("batch_id")
    if batch_id is not None and (not isinstance(batch_id, str) or not BATCH_ID_RE.match(batch_id)):
        raise InvalidInputError(
            ("body", "batch_id"), "batch_id must be 1-128 characters of A-Z a-z 0-9 _ . : -",
            batch_id,
        )
    branch = _int_field(body, "branch", 0, MAX_BRANCH, 0)
    start = _int_field(body, "branch_start_step", 0, MAX_STEP, None)
    raw_series = body.get("series")
    if not isinstance(raw_series, list):
        raise InvalidInputError(("body", "series"), "series must be a list")
    if len(raw_series) > max_series:
        raise TooLargeError(f"{len(raw_series)} series in one batch; the limit is {max_series}")
    out: list[SeriesData] = []
    seen: set[str] = set()
    total = 0
    for i, item in enumerate(raw_series):
        loc: tuple[str | int, ...] = ("body", "series", i)
        if not isinstance(item, dict):
            raise InvalidInputError(loc, "each series must be an object")
        extra = set(item) - {"name", "steps", "values", "wall_times"}
        if extra:
            raise InvalidInputError((*loc, sorted(extra)[0]), "unknown field")
        name = check_metric_name(item.get("name"), (*loc, "name"))
        if name in seen:
            raise InvalidInputError((*loc, "name"), f"metric {name!r} appears twice in the batch")
        seen.add(name)
        raw_steps = item.get("steps")
        raw_values = item.get("values")
        n = len(raw_steps) if isinstance(raw_steps, list) else 0
        total += n
        if total > max_points:
            raise TooLargeError(f"more than {max_points} points in one batch; split it")
        steps = _steps_array(raw_steps, (*loc, "steps"))
        values = _values_array(raw_values, (*loc, "values"))
        if values.size != steps.size:
            raise InvalidInputError(
                (*loc, "values"),
                f"values has {values.size} items but steps has {steps.size}: they must match",
            )
        walls = None
        raw_walls = item.get("wall_times")
        if raw_walls is not None:
            walls = _values_array(raw_walls, (*loc, "wall_times"))
            if walls.size != steps.size:
                raise InvalidInputError(
                    (*loc, "wall_times"),
                    f"wall_times has {walls.size} items but steps has {steps.size}",
                )
            if not np.all(np.isfinite(walls)):
                raise InvalidInputError((*loc, "wall_times"), "wall_times must be finite")
        if steps.size:
            out.append(SeriesData(name, steps, values, walls))
    return MetricBatch(batch_id, branch or 0, start, tuple(out))
