"""W&B runs recorded offline (``WANDB_MODE=offline``): the history of a ``run-ID.wandb`` file.

The file is wandb's ``Record`` protobufs framed as a LevelDB-style log: a 7-byte file header
(``:W&B``, a magic number, a version), then 32 KiB blocks of chunks, each behind a 7-byte header
(CRC-32 of the type byte and the data, the length, the type: whole, first, middle or last part).
Records are decoded with the protobuf classes the wandb package ships. A run that crashed
mid-write is read up to its last whole record.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from rhythmd.errors import ConfigurationError
from rhythmd.interop.conventions import planned_steps
from rhythmd.interop.files import add_row
from rhythmd.interop.types import RunData, SourceError, sorted_columns

WANDB_HINT = "pip install 'rhythmd[wandb]'"
_MAGIC = b":W&B"
_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def find_wandb_file(path: Path) -> Path | None:
    """The ``.wandb`` file that ``path`` names: the file itself, the one in a run directory
    (``wandb/offline-run-…``), or the only run of a ``wandb/`` directory; None when ``path`` is
    no W&B run."""
    if path.is_file():
        return path if path.suffix == ".wandb" else None
    if not path.is_dir():
        return None
    files = sorted(path.glob("run-*.wandb"))
    if not files:
        files = sorted(p for p in path.glob("*run-*/run-*.wandb") if not p.parent.is_symlink())
    if len(files) > 1:
        names = ", ".join(str(p.parent if p.parent != path else p) for p in files)
        raise SourceError(f"{path} holds {len(files)} W&B runs; name one of them: {names}")
    return files[0] if files else None


def records(path: Path) -> list[bytes]:
    """The raw records of a ``.wandb`` file, in order."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise SourceError(f"{path} is not a W&B run file (no {_MAGIC.decode()} header)")
    out: list[bytes] = []
    parts: list[bytes] = []
    pos = _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the block's zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # preallocated zeros after the last record
            break
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if len(chunk) < length:  # cut off mid-write
            break
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise SourceError(f"{path} is corrupt at byte {pos} (checksum mismatch)")
        pos += _HEADER + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            parts = [chunk]
        elif kind in (_MIDDLE, _LAST) and parts:
            parts.append(chunk)
            if kind == _LAST:
                out.append(b"".join(parts))
                parts = []
    return out


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def read_wandb_run(path: Path) -> RunData:
    """History rows (step: the trainer's global step when logged, else ``_step``), the run's
    display name, and the planned length from its config."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError:
        raise ConfigurationError(f"reading W&B runs needs the wandb package: {WANDB_HINT}"
                                 ) from None
    run_file = find_wandb_file(path)
    if run_file is None:
        raise SourceError(f"{path}: no W&B run file (run-ID.wandb)")
    cols: dict[str, tuple[list[int], list[float]]] = {}
    config: dict[str, Any] = {}
    run_id = run_file.stem.removeprefix("run-")
    name, project = run_id, None
    for raw in records(run_file):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception as exc:  # protobuf's DecodeError
            raise SourceError(f"{run_file}: a record does not decode ({exc})") from None
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            name = rec.run.display_name or rec.run.run_id or name
            run_id, project = rec.run.run_id or run_id, rec.run.project or None
            config.update({u.key: _value(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            config.update({u.key: _value(u.value_json) for u in rec.config.update})
        elif kind == "history":
            add_row(cols, {_key(i): _value(i.value_json) for i in rec.history.item})
    origin = {"wandb_run_id": run_id, **({"wandb_project": project} if project else {})}
    return RunData(sorted_columns(cols), str(path), name, planned_steps(config), origin)
