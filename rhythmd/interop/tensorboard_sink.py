"""Findings into a TensorBoard event file: text summaries where diagnoses and recommendations
came, and scalars that chart beside the run's own curves.

Tags: ``rhythmd/diagnoses`` and ``rhythmd/recommendations`` (text, at the step each was
flagged or issued), ``rhythmd/summary`` (text, at the last step), ``rhythmd/open_diagnoses``
(scalar: diagnoses open from their onset to their close) and ``rhythmd/lr_applied`` (scalar: the
LR a client set when it applied a recommendation). Writing again replaces rhythmd's earlier
event file in that directory (``*.rhythmd``); other event files are left alone.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rhythmd.errors import ConfigurationError
from rhythmd.interop.files import TB_HINT
from rhythmd.interop.findings import Findings

SUFFIX = ".rhythmd"


def open_counts(diagnoses: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(step, diagnoses open from that step on)`` at each onset and close."""
    delta: dict[int, int] = defaultdict(int)
    for d in diagnoses:
        delta[int(d["onset_step"])] += 1
        if d.get("closed_at_step") is not None:
            delta[int(d["closed_at_step"])] -= 1
    out, n = [], 0
    for step in sorted(delta):
        n += delta[step]
        out.append((step, n))
    return out


def _texts(findings: Findings) -> dict[str, dict[int, list[str]]]:
    by_tag: dict[str, dict[int, list[str]]] = {"rhythmd/diagnoses": defaultdict(list),
                                               "rhythmd/recommendations": defaultdict(list)}
    for d in findings.diagnoses:
        end = d.get("closed_at_step")
        by_tag["rhythmd/diagnoses"][int(d["detected_at_step"])].append(
            f"**{d.get('kind')}** ({d.get('severity')}), steps {d.get('onset_step')}-"
            f"{'open' if end is None else end}: {d.get('message', '')}")
    for r in findings.recommendations:
        if r.get("step") is None:
            continue
        params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
        applied = f" at step {r['applied_step']}" if r.get("applied_step") is not None else ""
        by_tag["rhythmd/recommendations"][int(r["step"])].append(
            f"**{r.get('action')}**({params}): {r.get('status')}{applied}. {r.get('reason', '')}")
    return by_tag


def write_tensorboard(findings: Findings, logdir: Path) -> Path:
    """Write ``findings`` as one event file in ``logdir``; the file's path."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.types_pb2 import DT_STRING
        from tensorboard.plugins.text.metadata import create_summary_metadata
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ConfigurationError(f"writing TensorBoard files needs the tensorboard package: "
                                 f"{TB_HINT}") from None
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob(f"events.out.tfevents.*{SUFFIX}"):
        old.unlink()
    now = time.time()
    text_meta = create_summary_metadata(display_name="", description="rhythmd")

    def text(tag: str, step: int, lines: list[str]) -> Event:
        tensor = TensorProto(dtype=DT_STRING, string_val=["\n\n".join(lines).encode()])
        value = Summary.Value(tag=tag, metadata=text_meta, tensor=tensor)
        return Event(wall_time=now, step=step, summary=Summary(value=[value]))

    def scalar(tag: str, step: int, x: float) -> Event:
        value = Summary.Value(tag=tag, simple_value=x)
        return Event(wall_time=now, step=step, summary=Summary(value=[value]))

    writer = EventFileWriter(str(logdir), filename_suffix=SUFFIX)
    for tag, steps in _texts(findings).items():
        for step in sorted(steps):
            writer.add_event(text(tag, step, steps[step]))
    for step, n in open_counts(findings.diagnoses):
        writer.add_event(scalar("rhythmd/open_diagnoses", step, float(n)))
    for r in findings.recommendations:
        lr = r.get("lr_after")
        lr = lr[0] if isinstance(lr, list) and lr else lr
        if r.get("applied_step") is not None and isinstance(lr, (int, float)):
            writer.add_event(scalar("rhythmd/lr_applied", int(r["applied_step"]), float(lr)))
    steps = [int(d["detected_at_step"]) for d in findings.diagnoses] + [
        int(r["step"]) for r in findings.recommendations if r.get("step") is not None]
    summary = [f"status: **{findings.status()}**", f"source: {findings.source}"]
    if findings.run_id:
        summary.append(f"rhythmd run: {findings.run_id}" + (f" at {findings.url}"
                                                            if findings.url else ""))
    writer.add_event(text("rhythmd/summary", max(steps, default=0), summary))
    writer.close()
    return next(logdir.glob(f"events.out.tfevents.*{SUFFIX}"))
