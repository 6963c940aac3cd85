"""Streaming one probe through the analyzer and the policy as the daemon would, and judging
what they did against the probe's expected verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rhythmd.analysis import AnalysisConfig, DiagnosisEvent, RunAnalyzer
from rhythmd.analysis.metrics import is_eval_name
from rhythmd.eval.probe_types import Catch, Probe, Series
from rhythmd.policy import TRIAL_ACTIONS, PolicyConfig, decide, run_context


# ---------------------------------------------------------------------------- runner
@dataclass
class DiagnosisRecord:
    """A diagnosis the analyzer opened: id, kind, metric, step it was detected at (steps)."""

    id: str
    kind: str
    metric: str
    step: int
    severity: str
    cause: str | None = None  # ``evidence.cause`` (oscillation: lr_too_large / eval_noise)


@dataclass
class ActionRecord:
    """A recommendation the policy issued, at the step of the batch it answered."""

    action: str
    params: dict[str, Any]
    step: int
    reason: str
    diagnosis_id: str | None


@dataclass
class ProbeResult:
    """What streaming a probe through the analyzer and the policy produced."""

    probe: str
    family: str
    expectation: str
    must_catch: bool
    passed: bool
    verdict: str  # one line: why it passed or failed
    diagnoses: list[DiagnosisRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    unexpected_diagnoses: list[str] = field(default_factory=list)  # no-action probes: ids
    # of diagnoses other than spikes and eval-noise oscillations
    caught_at_step: int | None = None  # must-catch: first step with kind and action in window
    stopped_at_step: int | None = None  # a ``stop`` was applied: the stream ended there
    steps_streamed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(series: Series, batch_steps: int) -> list[tuple[int, Series]]:
    """Consecutive step windows of ``batch_steps`` (first step of the window, its points)."""
    firsts = [int(s[0]) for s, _ in series.values() if s.size]
    if not firsts:
        return []
    lo = min(firsts)
    hi = max(int(s[-1]) for s, _ in series.values() if s.size)
    edges = [*range(lo, hi + 1, max(1, batch_steps)), hi + 1]
    cut = {k: np.searchsorted(s, edges, side="left") for k, (s, _) in series.items()}
    out = []
    for b in range(len(edges) - 1):
        batch = {k: (s[cut[k][b]:cut[k][b + 1]], v[cut[k][b]:cut[k][b + 1]])
                 for k, (s, v) in series.items() if cut[k][b + 1] > cut[k][b]}
        if batch:
            out.append((edges[b], batch))
    return out


def run_probe(probe: Probe, batch_steps: int = 50) -> ProbeResult:
    """Stream ``probe`` through ``RunAnalyzer`` and ``decide`` in consecutive windows of
    ``batch_steps`` steps. A recommendation counts as applied at the first step of the next
    batch (a client in apply mode), though the fixed stream does not change; an applied
    ``stop`` ends the stream."""
    analyzer = RunAnalyzer(AnalysisConfig.from_run_config(probe.run_config))
    policy = PolicyConfig.from_run_config(probe.run_config)
    history: list[dict[str, Any]] = []
    res = ProbeResult(probe.name, probe.family, probe.expectation(), probe.must_catch, False, "")
    for first, batch in _batches(probe.series, batch_steps):
        for h in history:
            if h["status"] == "pending":
                sched = getattr(analyzer, "sched", None)  # the LR the change was applied at
                lr = sched.last[1] if sched is not None and sched.last else None
                h["status"], h["applied_step"] = "applied", first
                h["lr_before"] = [lr] if lr is not None else None
                if h["action"] == "stop":
                    res.stopped_at_step = first
        if res.stopped_at_step is not None:
            break
        res.steps_streamed = max(int(s[-1]) for s, _ in batch.values())
        events: list[DiagnosisEvent] = analyzer.feed(batch)
        judging = any(h["status"] == "applied" and h["action"] in TRIAL_ACTIONS
                      for h in history) and any(is_eval_name(k) for k in batch)
        if not events and not judging:  # the daemon consults the policy on the same batches
            continue
        for e in events:
            if e.type == "opened":
                d = e.diagnosis
                cause = d.evidence.get("cause")
                res.diagnoses.append(DiagnosisRecord(d.id, d.kind, d.metric,
                                                     int(d.detected_at_step), d.severity,
                                                     None if cause is None else str(cause)))
        step = max((int(e.step) for e in events), default=res.steps_streamed)
        decision = decide(events, run_context(analyzer, step, history), policy)
        for h in history:  # the daemon expires the pending ones the policy cancels
            if h["id"] in decision.cancel and h["status"] == "pending":
                h["status"] = "expired"
        for spec in decision.issue:
            history.append({"id": str(len(history)), "action": spec.action, "status": "pending",
                            "issued_at_step": step, "applied_step": None, "note": None,
                            "diagnosis_id": spec.diagnosis_id, "params": dict(spec.params),
                            "author": "rhythmd"})
            res.actions.append(ActionRecord(spec.action, dict(spec.params), step, spec.reason,
                                            spec.diagnosis_id))
    _judge(probe, res)
    return res


def _judge(probe: Probe, res: ProbeResult) -> None:
    """Set ``passed``, ``verdict``, ``caught_at_step`` and ``unexpected_diagnoses``."""
    acting = res.actions  # every action the policy issues changes the run (see ACTING)
    if not isinstance(probe.expect, Catch):
        res.unexpected_diagnoses = [d.id for d in res.diagnoses if not (
            d.kind == "spike" or (d.kind == "oscillation" and d.cause == "eval_noise"))]
        res.passed = not acting
        res.verdict = ("no action" if not acting else
                       f"acted: {', '.join(f'{a.action}@{a.step}' for a in acting)}")
        return
    c = probe.expect
    seen = [d.step for d in res.diagnoses
            if d.kind in c.kinds and c.from_step <= d.step <= c.by_step]
    kind_of = {d.id: d.kind for d in res.diagnoses}
    acts = [a.step for a in acting if a.action in c.actions
            and kind_of.get(a.diagnosis_id or "") in c.kinds
            and c.from_step <= a.step <= c.by_step]
    if seen and acts:
        res.caught_at_step = max(min(seen), min(acts))
        res.passed = True
        res.verdict = f"caught at step {res.caught_at_step} (deadline {c.by_step})"
    elif seen:
        res.verdict = f"detected at step {min(seen)} but no acceptable action by {c.by_step}"
    else:
        res.verdict = f"not detected in [{c.from_step}, {c.by_step}]"
    early = [a for a in acting if a.step < c.from_step]
    if early:
        res.verdict += f"; acted before the onset: {', '.join(a.action for a in early)}"
