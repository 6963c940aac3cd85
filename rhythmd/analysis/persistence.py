"""The analyzer's state as plain JSON types, and back (what the daemon saves per run)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .detectors import DivergenceDetector, OscillationDetector, StagnationDetector
from .schedule import ScheduleTracker
from .types import AnalysisConfig, Diagnosis

if TYPE_CHECKING:
    from .analyzer import RunAnalyzer

STATE_VERSION = 3
"""3: the diagnoses as one JSON text (closed ones encoded once), the divergence window without
its derived scale; version 2 states still load."""
_LOADABLE_VERSIONS = (2, 3)


def analyzer_state(an: RunAnalyzer) -> dict[str, Any]:
    """``an.state_dict()``: JSON-serialisable (floats may be non-finite), bounded in size."""
    return {
        "version": STATE_VERSION,
        "cfg": an.cfg.to_dict(),
        "branch": an.branch,
        "branch_start": an.branch_start,
        "last_step": dict(an.last_step),
        "names": dict(an.names),
        "objectives": dict(an.objectives),
        "sched": an.sched.state_dict(),
        "div": an.div.state_dict(),
        "monitor": an.monitor,
        "monitor_rank": an.monitor_rank,
        "monitor_why": an.monitor_why,
        "stag": {"metric": an.stag.metric, "mode": an.stag.mode,
                 "state": an.stag.state_dict()},
        "osc": None if an.osc is None else {
            "metric": an.osc.metric, "mode": an.osc.mode,
            "state": an.osc.state_dict()},
        "pseudo_every": an.pseudo_every,
        "pseudo_buf": list(an.pseudo_buf),
        "blk_sum": an.blk_sum,
        "blk_n": an.blk_n,
        "diags": diags_json(an._diags, an._encoded),
        "counts": dict(an.counts),
        "open": dict(an.open),
    }


def diags_json(diags: list[Diagnosis], encoded: dict[str, str]) -> str:
    """The diagnoses as one JSON array (NaN literals as ``json`` writes them). A closed
    diagnosis never changes, so it is encoded once (``encoded``: id -> its JSON): saving the
    state of a run with many closed diagnoses does not re-encode their evidence every time."""
    parts = []
    for d in diags:
        if d.status != "closed":
            parts.append(json.dumps(d.to_dict()))
            continue
        enc = encoded.get(d.id)
        if enc is None:
            enc = encoded[d.id] = json.dumps(d.to_dict())
        parts.append(enc)
    return "[" + ", ".join(parts) + "]"


def restore_analyzer(an: RunAnalyzer, d: dict[str, Any]) -> None:
    """``an.load_state_dict(d)``: ``ValueError`` for a state of another version."""
    if d.get("version") not in _LOADABLE_VERSIONS:
        raise ValueError(f"analyzer state version {d.get('version')!r}, "
                         f"expected {STATE_VERSION}")
    an.cfg = AnalysisConfig.from_dict(d["cfg"])
    c = an.cfg
    an.branch = int(d["branch"])
    bs = d.get("branch_start")
    an.branch_start = int(bs) if bs is not None else None
    an.last_step = {k: int(v) for k, v in d["last_step"].items()}
    an.names = dict(d.get("names") or {})
    an.objectives = {k: int(v) for k, v in (d.get("objectives") or {}).items()}
    an.sched = ScheduleTracker()
    an.sched.load_state_dict(d["sched"])
    an.div = DivergenceDetector(c, c.train_metric)
    an.div.load_state_dict(d["div"])
    an.monitor = d["monitor"]
    an.monitor_rank = int(d["monitor_rank"])
    an.monitor_why = str(d["monitor_why"])
    st = d["stag"]
    an.stag = StagnationDetector(c, st["metric"], st["mode"])
    an.stag.load_state_dict(st["state"])
    an.osc = None
    if d["osc"] is not None:
        an.osc = OscillationDetector(c, d["osc"]["metric"], d["osc"]["mode"])
        an.osc.load_state_dict(d["osc"]["state"])
    an.pseudo_every = int(d["pseudo_every"])
    an.pseudo_buf = list(d["pseudo_buf"])
    an.blk_sum, an.blk_n = float(d["blk_sum"]), int(d["blk_n"])
    diags = d["diags"]
    an._diags = [Diagnosis.from_dict(x)
                 for x in (json.loads(diags) if isinstance(diags, str) else diags)]
    an._encoded = {}
    an.counts = dict(d["counts"])
    an.open = {k: int(v) for k, v in d["open"].items()}
