"""RunAnalyzer: composes the detectors and the schedule tracker behind one ``feed()``."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import operator
from typing import Any

import numpy as np

from . import metrics, persistence, stats
from .context import LazyContext, lr_at, lr_phase
from .detectors import DivergenceDetector, OscillationDetector, Signal, StagnationDetector
from .persistence import STATE_VERSION
from .schedule import ScheduleTracker
from .types import AnalysisConfig, Diagnosis, DiagnosisEvent, ScheduleSegment

__all__ = ["STATE_VERSION", "RunAnalyzer"]
MONITORED_KINDS = ("stagnation", "slow_progress", "oscillation")
MAX_OBJECTIVES = 8  # objective streams watched for non-finite values (bounded state)
MAX_CLOSED = 32  # closed diagnoses kept in memory/state (oldest dropped first)
_EMPTY = (np.zeros(0, np.int64), np.zeros(0))  # (steps, values) of a role the batch lacks
_ATOMIC = (bool, int, float, str, type(None))  # evidence values a deep copy returns as they are
_MODE_WORDS = {"min": "loss to minimise", "max": "score to maximise"}


class RunAnalyzer:
    """Incremental, pure analysis of one run. Cost per batch is bounded by window sizes.

    ``feed`` takes one ingested batch ``{metric: (steps, values)}``; metrics not named in the
    config are ignored. Within a branch, points whose step is not after the last accepted
    step of that metric are dropped as repeats; a larger ``branch`` starts a rollback at
    ``branch_start_step`` (default: the smallest step in the batch).
    """

    def __init__(self, cfg: AnalysisConfig | None = None, bulk: bool = True) -> None:
        self.cfg = cfg or AnalysisConfig()
        self.bulk = bulk  # False: every point through the per-point path (the specification
        # the bulk path must equal; used by the equivalence tests)
        c = self.cfg
        self.branch = 0
        self.branch_start: int | None = None  # first step of the current branch (after a
        # rollback; None on branch 0)
        self.last_step: dict[str, int] = {}
        self.sched = ScheduleTracker()
        self.names: dict[str, str] = {}  # role ("lr" | "train") -> the stream's name
        self.objectives: dict[str, int] = {}  # objective streams -> non-finite points seen
        self.div = DivergenceDetector(c, c.train_metric)
        self.monitor = "train"  # which series stagnation watches: "val" | "train"
        self.monitor_rank = 99  # lower is preferred (see _candidate)
        self.monitor_why = "no evaluation metric yet: the train loss, in blocks of steps"
        self.stag = StagnationDetector(c, c.train_metric, "min")
        self.osc: OscillationDetector | None = None
        self.pseudo_every = max(1, c.total_steps // 50) if c.total_steps else c.pseudo_eval_steps
        self.pseudo_buf: list[float] = []
        self.blk_sum = 0.0
        self.blk_n = 0
        self._diags: list[Diagnosis] = []
        self._encoded: dict[str, str] = {}  # id -> JSON of a closed diagnosis (never changes)
        self.counts: dict[str, int] = {}
        self.open: dict[str, int] = {}  # kind -> index into _diags
        self._events: list[DiagnosisEvent] = []
        self._upd: dict[str, int] = {}
        self._lr_s = np.zeros(0, np.int64)
        self._lr_v = np.zeros(0)
        self._lr_i = 0

    # ------------------------------------------------------------------ public API
    @property
    def diagnoses(self) -> list[Diagnosis]:
        """All diagnoses, open and closed, oldest first."""
        return list(self._diags)

    def has_open_diagnoses(self) -> bool:
        """Whether a diagnosis is open (the next batch may update it)."""
        return bool(self.open)

    def open_severities(self) -> dict[str, str]:
        """``{id: severity}`` of the open diagnoses (closed ones never change again)."""
        return {self._diags[i].id: self._diags[i].severity for i in self.open.values()}

    def schedule(self) -> list[ScheduleSegment]:
        return self.sched.segments()

    def feed(
        self, batch: dict[str, Any], branch: int = 0, branch_start_step: int | None = None
    ) -> list[DiagnosisEvent]:
        """Consume one batch; return the diagnosis events it caused, in step order."""
        self._events, self._upd = [], {}
        roles, switch = self._roles(batch)
        cols: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, role in roles.items():
            st, va = _arrays(batch[name])
            if st.size:
                cols.append((role, st, va))
        if branch < self.branch:
            return []
        if switch is not None:
            vs = [int(st.min()) for role, st, _ in cols if role == "val"]
            self._switch_monitor(*switch, step=min(vs) if vs else self.last_step.get("val", 0))
        if branch > self.branch:
            start = branch_start_step
            if start is None:
                start = min((int(st.min()) for _, st, _ in cols), default=None)
            self.branch = int(branch)
            if start is not None:
                self.branch_start = int(start)
                self._rollback(int(start))
        kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for role, st, va in cols:
            if st.size > 1 and not _increasing(st):
                order = np.argsort(st, kind="stable")
                st, va = st[order], va[order]
                first = np.ones(st.size, bool)
                first[1:] = st[1:] != st[:-1]  # repeats inside one batch: keep the first
                st, va = st[first], va[first]
            last = self.last_step.get(role)
            if last is not None and int(st[0]) <= last:
                newer = st > last
                st, va = st[newer], va[newer]
            if st.size:
                self.last_step[role] = int(st[-1])
                kept[role] = (st, va)
        if not kept:
            return self._events
        evals: list[tuple[int, float]] = []  # (step, value) of the evaluations, in step order
        if "val" in kept:
            st, va = kept["val"]
            evals = list(zip(st.tolist(), va.tolist(), strict=True))
        self._lr_s, self._lr_v = kept.get("lr", _EMPTY)
        self._lr_i = 0
        tr_s, tr_v = kept.get("train", _EMPTY)
        with np.errstate(all="ignore"):  # huge values may overflow inside numpy reductions
            self._train_and_evals(tr_s, tr_v, evals)
            self._sched_to(None)
        for role, (st, va) in kept.items():
            if role.startswith("obj:"):
                self._objective(role[4:], st, va)
        return self._events

    def _objective(self, name: str, st: np.ndarray, va: np.ndarray) -> None:
        """An objective that may legitimately rise (GAN, RL): only a non-finite value is a
        divergence (critical, like a non-finite train loss)."""
        bad = np.flatnonzero(~np.isfinite(va))
        if not bad.size:
            return
        self.objectives[name] = self.objectives.get(name, 0) + int(bad.size)
        i = int(bad[0])
        step, v = int(st[i]), float(va[i])
        ev = {"test": "nonfinite", "cause": "nonfinite", "value": v, "recovered": False,
              "nonfinite_count": self.objectives[name], "objective": True,
              "near_warmup": bool(self.sched.in_warmup())}
        self._apply({"action": "open", "kind": "divergence", "metric": name, "step": step,
                     "onset_step": step, "severity": "critical", "confidence": 1.0,
                     "evidence": ev,
                     "message": f"{name} (an objective) is non-finite ({v}) at step {step}"})

    def blowup_bound(self) -> float | None:
        """The train loss above which a single step is a blow-up beyond doubt (see
        ``DivergenceDetector.blowup_bound``); sent to clients for their local reflex."""
        return self.div.blowup_bound()

    def monitoring(self) -> dict[str, Any]:
        """Which metric stagnation and oscillation watch, which way is better, and why."""
        return {"metric": self.stag.metric, "mode": self.stag.mode,
                "source": "train" if self.monitor == "train" else "evaluation",
                "reason": self.monitor_why}

    # ------------------------------------------------------------------ internals
    def _roles(self, batch: dict[str, Any]
               ) -> tuple[dict[str, str], tuple[str, str, int, str] | None]:
        """``{name: "lr" | "train" | "val"}`` for the batch's streams that the analysis reads,
        and the better evaluation metric to switch to, if one arrived: (name, mode, rank,
        why)."""
        c = self.cfg
        out: dict[str, str] = {}
        best: tuple[str, str, int, str] | None = None
        for name in batch:
            if not isinstance(name, str):
                continue
            role, source = metrics.role_of(name, c.roles)
            if role == "ignore":
                continue
            if name == c.lr_metric or (c.lr_metric == "lr" and metrics.is_lr_name(name)):
                if self.names.setdefault("lr", name) == name:
                    out[name] = "lr"
                continue
            if name == c.train_metric or (c.train_metric == "train_loss"
                                          and name in metrics.TRAIN_LOSS_NAMES):
                if "train" not in self.names:
                    self.names["train"] = name
                    self.div.metric = name
                    self.div.watch_level = role != "objective"
                if self.names["train"] == name:
                    out[name] = "train"
                continue
            if self.monitor == "val" and name == self.stag.metric:
                out[name] = "val"
                continue
            if role == "objective" and (name in self.objectives
                                        or len(self.objectives) < MAX_OBJECTIVES):
                self.objectives.setdefault(name, 0)
                out[name] = f"obj:{name}"  # watched for non-finite values only
                continue
            cand = self._candidate(name, role, source)
            if cand is not None and cand[2] < self.monitor_rank and (
                    best is None or cand[2] < best[2]):
                best = cand
        if best is not None:
            out = {k: v for k, v in out.items() if v != "val"}
            out[best[0]] = "val"
        return out, best

    def _candidate(self, name: str, role: str | None, source: str
                   ) -> tuple[str, str, int, str] | None:
        """(name, mode, rank, why) when ``name`` can be the monitored evaluation metric; rank
        0 is the configured ``val_metric``, 1 a declared role, 2 an evaluation loss by name,
        3 an evaluation score by name (or ``aux_val_metric``)."""
        c = self.cfg
        if role == "objective":
            return None
        if name == c.val_metric:
            mode = c.val_mode or (role if role in ("min", "max") else "min")
            return name, mode, 0, f"{name}: the run's val_metric ({_MODE_WORDS[mode]})"
        if source == "declared" and role in ("min", "max"):
            return name, role, 1, f"{name}: declared a {_MODE_WORDS[role]}"
        if name == c.aux_val_metric:
            return name, c.aux_val_mode, 3, f"{name}: the run's aux_val_metric"
        if role in ("min", "max") and metrics.is_eval_name(name):
            rank = 2 if role == "min" else 3
            return name, role, rank, (f"{name}: an evaluation {_MODE_WORDS[role]} by its name"
                                      + ("" if role == "min" else " (no evaluation loss sent)"))
        return None

    def _lr_at(self, step: int) -> float | None:
        """The LR at a past ``step`` (the tracker as it stands when called)."""
        return lr_at(self.sched, step)

    def _monitor_ctx(self, step: int) -> dict[str, Any]:
        """:meth:`_ctx` plus what the monitored-series detectors read (not built for the
        divergence detector's per-step updates)."""
        ctx = self._ctx(step)
        ctx.update({"lr_at": self._lr_at, "has_train_loss": "train" in self.names,
                    "monitors_train": self.monitor == "train",
                    "train_start_loss": self.div.start_loss()})
        return ctx

    def _ctx(self, step: int) -> dict[str, Any]:
        """The LR phase at ``step``, read from the tracker fed up to it on the first read."""

        def fill(ctx: dict[str, Any]) -> None:
            self._sched_to(step)
            ctx.update(lr_phase(self.sched))

        return LazyContext(fill)

    def _sched_to(self, step: int | None) -> None:
        """Feed the batch's lr points up to ``step`` (inclusive; None: all) to the tracker."""
        i0 = self._lr_i
        s = self._lr_s
        i1 = s.size if step is None else int(np.searchsorted(s, step, side="right"))
        if i1 > i0:
            self.sched.update_many(s[i0:i1], self._lr_v[i0:i1])
            self._lr_i = i1

    def _train_and_evals(self, st: np.ndarray, va: np.ndarray,
                         evals: list[tuple[int, float]]) -> None:
        """The batch's train points and evaluations in step order (a train point before an
        evaluation at the same step). The divergence detector fast-forwards across the
        evaluations (they never read its running state), so a validation stream does not cut
        the train points into short runs; the points it stops at go through the per-point
        path, after the evaluations before them."""
        n = int(st.size)
        i = done = e = 0  # detector consumed [0, i); blocks and evaluations applied to done
        ends = np.searchsorted(st, [s for s, _ in evals], side="right").tolist() if evals \
            else []  # each evaluation's end among the train points
        while i < n or e < len(evals):
            k = i + self.div.fast_forward(st[i:], va[i:]) if i < n and self.bulk else i
            stop = int(st[k]) if k < n else None
            while e < len(evals) and (stop is None or evals[e][0] < stop):
                step, v = evals[e]
                j = min(k, max(done, ends[e]))
                if j > done:
                    self._blocks(st, va, done, j)
                    done = j
                self._eval(step, v)
                e += 1
            if k > done:
                self._blocks(st, va, done, k)
                done = k
            if k < n:
                self._train(int(st[k]), float(va[k]))
                done = k = k + 1
            i = k

    def _blocks(self, st: np.ndarray, va: np.ndarray, i0: int, i1: int) -> None:
        """What ``_train`` does after the detector, for points ``i0:i1`` in bulk: eval-interval
        sums of the train loss and (when the train loss is monitored) pseudo-eval blocks."""
        vals = va[i0:i1].tolist()
        # sums in order, the per-point path's rounding (cumsum adds in order; sum() may not)
        s = functools.reduce(operator.add, vals, self.blk_sum) if len(vals) < 256 else math.nan
        if math.isfinite(s):  # (a non-finite value, or an overflow, makes the sum non-finite)
            self.blk_sum, self.blk_n = s, self.blk_n + len(vals)
        else:
            a = va[i0:i1]
            fin = a[np.isfinite(a)]
            if fin.size:
                self.blk_sum = float(np.cumsum(np.concatenate(([self.blk_sum], fin)))[-1])
            self.blk_n += int(fin.size)
        if self.monitor != "train" or not self.div.watch_level:
            return
        pos, m = 0, len(vals)
        while m - pos >= self.pseudo_every - len(self.pseudo_buf):
            b = pos + self.pseudo_every - len(self.pseudo_buf)
            block = self.pseudo_buf + vals[pos:b]
            self.pseudo_buf = []
            pos = b
            med = _finite_median(block)
            if med is not None:
                step = int(st[i0 + b - 1])
                ctx = self._monitor_ctx(step)
                for sig in self.stag.update(step, med, ctx):
                    self._apply(sig)
        self.pseudo_buf.extend(vals[pos:])

    def _train(self, step: int, v: float) -> None:
        pseudo = (self.monitor == "train" and self.div.watch_level
                  and len(self.pseudo_buf) + 1 >= self.pseudo_every)
        ctx = self._monitor_ctx(step) if pseudo else self._ctx(step)  # before the update
        for sig in self.div.update(step, v, ctx):
            self._apply(sig)
        if math.isfinite(v):
            self.blk_sum += v
            self.blk_n += 1
        if self.monitor == "train" and self.div.watch_level:
            self.pseudo_buf.append(v)
            if len(self.pseudo_buf) >= self.pseudo_every:
                med = _finite_median(self.pseudo_buf)
                self.pseudo_buf = []
                if med is not None:
                    for sig in self.stag.update(step, med, ctx):
                        self._apply(sig)

    def _eval(self, step: int, v: float) -> None:
        ctx = self._monitor_ctx(step)
        ctx["train_mean"] = self.blk_sum / self.blk_n if self.blk_n else math.nan
        self.blk_sum, self.blk_n = 0.0, 0
        if self.osc is not None:
            for sig in self.osc.update(step, v, ctx):
                self._apply(sig)
        for sig in self.stag.update(step, v, ctx):
            self._apply(sig)

    def _switch_monitor(self, metric: str, mode: str, rank: int, why: str, step: int) -> None:
        for kind in MONITORED_KINDS:
            if kind in self.open:
                self._close(kind, step, "monitored metric changed")
        self.monitor, self.monitor_rank, self.monitor_why = "val", rank, why
        self.stag = StagnationDetector(self.cfg, metric, mode)
        self.osc = OscillationDetector(self.cfg, metric, mode)
        self.last_step.pop("val", None)
        self.blk_sum, self.blk_n = 0.0, 0

    def _rollback(self, start: int) -> None:
        for kind in list(self.open):
            d = self._diags[self.open[kind]]
            if d.detected_at_step >= start:
                self._close(kind, start, f"rolled back to step {start}")
        for role in list(self.last_step):
            self.last_step[role] = min(self.last_step[role], start - 1)
        self.sched.truncate(start)
        self.div.reset_recent(start)
        self.stag.series.truncate(start)
        self.stag.active = False
        if self.osc is not None:
            self.osc.truncate(start)
        self.pseudo_buf = []
        for kind in ("divergence", "spike", "stagnation", "oscillation", "slow_progress"):
            if kind in self.open:  # an older diagnosis survives: let detectors re-judge it
                self._close(kind, start, f"re-evaluated after rollback to step {start}")

    def _close(self, kind: str, step: int, why: str) -> None:
        d = self._diags[self.open.pop(kind)]
        d.status, d.closed_at_step, d.updated_at_step = "closed", int(step), int(step)
        d.evidence["closed_reason"] = why
        self._events.append(DiagnosisEvent("closed", _snapshot(d), int(step)))
        self._prune()

    def _apply(self, sig: Signal) -> None:
        kind, step, act = sig["kind"], sig["step"], sig["action"]
        if act == "open" and kind not in self.open:
            n = self.counts.get(kind, 0) + 1
            self.counts[kind] = n
            d = Diagnosis(
                id=f"{kind}-{n}",
                kind=kind,
                metric=sig["metric"],
                detected_at_step=step,
                onset_step=min(sig["onset_step"], step),
                severity=sig["severity"],
                confidence=sig["confidence"],
                evidence=dict(sig["evidence"]),
                message=sig["message"],
                updated_at_step=step,
            )
            if kind in MONITORED_KINDS:
                d.evidence["monitored_metric"] = self.stag.metric
                d.evidence["monitor_reason"] = self.monitor_why
                d.evidence["monitor_source"] = self.monitoring()["source"]
            self._diags.append(d)
            self.open[kind] = len(self._diags) - 1
            self._events.append(DiagnosisEvent("opened", _snapshot(d), step))
        elif kind in self.open and act in ("update", "open"):
            d = self._diags[self.open[kind]]
            d.severity, d.updated_at_step = sig["severity"], step
            d.confidence = max(d.confidence, sig["confidence"])
            d.evidence.update(sig["evidence"])
            d.message = sig["message"]
            ev = DiagnosisEvent("updated", _snapshot(d), step)
            if d.id in self._upd:
                self._events[self._upd[d.id]] = ev
            else:
                self._upd[d.id] = len(self._events)
                self._events.append(ev)
        elif act == "close" and kind in self.open:
            d = self._diags[self.open[kind]]
            d.evidence.update(
                {
                    k: v
                    for k, v in sig["evidence"].items()
                    if k not in d.evidence or k == "recovered_at_step"
                }
            )
            self._close(kind, step, sig["message"])

    def _prune(self) -> None:
        closed = [i for i, d in enumerate(self._diags) if d.status == "closed"]
        if len(closed) <= MAX_CLOSED:
            return
        drop = set(closed[: len(closed) - MAX_CLOSED])
        keep = [d for i, d in enumerate(self._diags) if i not in drop]
        for i in drop:
            self._encoded.pop(self._diags[i].id, None)
        self._diags = keep
        self.open = {d.kind: i for i, d in enumerate(keep) if d.status == "open"}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats may be non-finite), bounded in size."""
        return persistence.analyzer_state(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (or a version 2 one); ``ValueError`` for a state of
        another version (the caller replays the run instead)."""
        persistence.restore_analyzer(self, d)


def _snapshot(d: Diagnosis) -> Diagnosis:
    """``copy.deepcopy(d)`` for an event: only the evidence holds mutable values."""
    ev = {k: v if type(v) in _ATOMIC else copy.deepcopy(v) for k, v in d.evidence.items()}
    return dataclasses.replace(d, evidence=ev)


def _finite_median(vals: list[float]) -> float | None:
    """``stats.median`` of the finite values (None when there is none); a long block (a
    pseudo-evaluation of thousands of steps) through numpy rather than a Python filter."""
    if len(vals) < 256:
        fin = [x for x in vals if math.isfinite(x)]
        return stats.median(fin) if fin else None
    a = np.fromiter(vals, float, len(vals))
    a = a[np.isfinite(a)]
    return stats.median(a) if a.size else None


def _increasing(st: np.ndarray) -> bool:
    """Whether the steps are strictly increasing (short arrays: without numpy's overhead)."""
    if st.size > 64:
        return bool((st[1:] > st[:-1]).all())
    sl = st.tolist()
    return all(map(operator.lt, sl, sl[1:]))


def _arrays(pair: Any) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) -> int64 and float64 arrays of equal length (extra entries dropped)."""
    try:
        st, va = pair
        st = np.asarray(st, dtype=np.int64).ravel()
        va = np.asarray(va, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        return np.zeros(0, np.int64), np.zeros(0)
    if st.size != va.size:
        n = min(st.size, va.size)
        st, va = st[:n], va[:n]
    return st, va
