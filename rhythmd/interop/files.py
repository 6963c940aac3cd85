"""Runs recorded as files: CSV, JSONL and TensorBoard event files.

CSV: the first column is the step, unless a column is named as a step (``_step``,
``global_step``, ``train/global_step``, ...), as in a W&B history exported with
``run.history().to_csv()``. JSONL: one object per line with a step key and metric keys (a W&B
``scan_history()`` row is one). TensorBoard: scalars of event files, through tensorboard's reader.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rhythmd.analysis.offline import read_csv_columns
from rhythmd.errors import ConfigurationError
from rhythmd.interop.types import Columns, SourceError, sorted_columns

TB_HINT = "pip install 'rhythmd[tensorboard]'"
STEP_KEYS = ("step", "global_step", "train/global_step", "trainer/global_step", "iteration",
             "_step")
"""Keys naming the step, in the order preferred (W&B's ``_step`` counts log calls: a trainer's
own global step wins when a row has both)."""
META_KEYS = frozenset(("wall_time", "timestamp", "_runtime", "_timestamp", "_wandb"))
_NONFINITE = {"nan": math.nan, "inf": math.inf, "infinity": math.inf, "+inf": math.inf,
              "-inf": -math.inf, "-infinity": -math.inf}


def detect_format(path: Path) -> str:
    """"tensorboard", "jsonl" or "csv", from the name and then the first bytes."""
    if path.is_dir() or "tfevents" in path.name:
        return "tensorboard"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
    except OSError:
        return "csv"
    return "jsonl" if head.startswith(b"{") else "csv"


def read_columns(path: Path) -> Columns:
    """Read a recorded file into per-metric ``(steps int64, values float64)``, steps sorted."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    fmt = detect_format(path)
    try:
        if fmt == "tensorboard":
            return read_tensorboard(path)
        if fmt == "jsonl":
            return read_jsonl(path)
        return read_csv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None


def to_float(v: Any) -> float | None:
    """A number, or a number or nan/inf spelled as a string; None for anything else."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _NONFINITE:
            return _NONFINITE[t]
        try:
            return float(t)
        except ValueError:
            return None
    return None


def step_key(keys: Any) -> str | None:
    """The preferred step key among ``keys``."""
    present = set(keys)
    return next((k for k in STEP_KEYS if k in present), None)


def read_csv(path: Path) -> Columns:
    """A CSV whose first column is the step, or that names its step column."""
    with open(path, newline="", encoding="utf-8") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    key = step_key(header)
    if not header or key is None or header[0] == key:
        cols = read_csv_columns(path)
        return sorted_columns({k: (list(s), list(v)) for k, (s, v) in cols.items()
                               if k not in META_KEYS and k not in STEP_KEYS})
    out: dict[str, tuple[list[int], list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        next(rows, None)
        for row in rows:  # pandas' unnamed index column is no metric
            add_row(out, {h: c for h, c in zip(header, row, strict=False)
                          if h not in ("", "Unnamed: 0")})
    return sorted_columns(out)


def add_row(cols: dict[str, tuple[list[int], list[float]]], row: dict[str, Any]) -> bool:
    """Append a row's numeric values at its step (:data:`STEP_KEYS`); False, adding nothing,
    when it has no finite step."""
    key = step_key(row)
    step = to_float(row[key]) if key is not None else None
    if step is None or not math.isfinite(step):
        return False
    for name, val in row.items():
        x = None if name in STEP_KEYS or name in META_KEYS else to_float(val)
        if x is not None:
            st, va = cols.setdefault(name, ([], []))
            st.append(round(step))
            va.append(x)
    return True


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty line of a JSONL file."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise SourceError(f"{path}:{lineno}: not a JSON object ({exc})") from None
            if not isinstance(obj, dict):
                raise SourceError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, obj


def read_jsonl(path: Path) -> Columns:
    """One JSON object per line: a step key (:data:`STEP_KEYS`) and metrics."""
    cols: dict[str, tuple[list[int], list[float]]] = {}
    for lineno, obj in json_lines(path):
        if "series" in obj or "body" in obj:
            raise SourceError(f"{path} is a client spool file (metric batches): send it to a "
                              "daemon with `rhythmd replay`")
        if not add_row(cols, obj):
            raise SourceError(f"{path}:{lineno}: no numeric \"step\" key")
    return sorted_columns(cols)


def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "tfevents" in p.name)


def read_tensorboard(path: Path) -> Columns:
    """Scalars of TensorBoard event files (``add_scalar`` and TF2 scalar tensors), through
    tensorboard's own event reader. Tags of files in subdirectories get ``subdir/`` prefixes."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util.tensor_util import make_ndarray
    except ImportError:
        raise ConfigurationError(f"{path} is TensorBoard data; reading it needs the tensorboard "
                                 f"package: {TB_HINT}") from None
    files = _event_files(path)
    if not files:
        raise SourceError(f"{path}: no TensorBoard event files (events.out.tfevents.*)")
    root = path if path.is_dir() else path.parent
    cols: dict[str, tuple[list[int], list[float]]] = {}
    for f in files:
        prefix = os.path.relpath(f.parent, root)
        prefix = "" if prefix == "." else prefix.replace(os.sep, "/") + "/"
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "tensors": 0})
        try:
            acc.Reload()
        except Exception as exc:  # corrupt or truncated record files
            raise SourceError(f"cannot read TensorBoard file {f}: {exc}") from None
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            st, va = cols.setdefault(prefix + tag, ([], []))
            for ev in acc.Scalars(tag):
                st.append(int(ev.step))
                va.append(float(ev.value))
        for tag in tags.get("tensors", []):
            pts = []
            for ev in acc.Tensors(tag):
                arr = make_ndarray(ev.tensor_proto)
                if arr.size != 1 or arr.dtype.kind not in "fiu":
                    break
                pts.append((int(ev.step), float(arr.reshape(-1)[0])))
            else:
                st, va = cols.setdefault(prefix + tag, ([], []))
                for s, v in pts:
                    st.append(s)
                    va.append(v)
    return sorted_columns(cols)
