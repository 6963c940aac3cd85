"""The analyzer cache: the one place that loads, replays and saves a run's analyzer state.

Analyzers are cached per process; the database holds the truth (the diagnoses, and a saved
state with the arrival sequence number it covers), so a cached analyzer that is behind (another
process took some batches, or this one restarted) catches up by replaying only the points after
it. Every method runs inside the caller's transaction (a worker thread, never the event loop).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.metrics import with_aliases
from rhythmd.store import analysis as analysis_q
from rhythmd.store.analysis import StoredBatch

log = logging.getLogger("rhythmd.service")


@dataclass(slots=True)
class LiveAnalyzer:
    """A cached analyzer and how far it has read the run."""

    analyzer: RunAnalyzer
    analyzed_seq: int  # points with a smaller arrival sequence number have been fed
    saved_at: float  # time.monotonic() of the last save
    unsaved_batches: int = 0
    was_behind: bool = False  # the last batch found batches stored by another process


@dataclass(frozen=True, slots=True)
class ColdStart:
    """The reads a process without an analyzer of the run sends with a batch's first reads:
    the saved state and the replay of every batch after it."""

    saved: analysis_q.SavedState
    replay: analysis_q.Replay


def analysis_names(cfg: AnalysisConfig) -> dict[str, str]:
    """The standard stream -> the name the run's analysis reads it under."""
    return {"train_loss": cfg.train_metric, "val_loss": cfg.val_metric, "lr": cfg.lr_metric}


def feed_stored(analyzer: RunAnalyzer, stored: Iterable[StoredBatch]) -> int:
    """Feed stored batches (a replay) to ``analyzer``; returns how many."""
    names = analysis_names(analyzer.cfg)
    n = 0
    for batch in stored:
        analyzer.feed(with_aliases(batch.series, names), batch.branch, batch.branch_start_step)
        n += 1
    return n


def new_analyzer(run: Any) -> RunAnalyzer:
    """A fresh analyzer configured from the run row's ``config``."""
    config = json.loads(run["config"]) if run["config"] else None
    return RunAnalyzer(AnalysisConfig.from_run_config(config))


def restore(analyzer: RunAnalyzer, saved: tuple[int, dict[str, Any]] | None,
            upto_seq: int) -> int:
    """Load a saved state that covers at most ``upto_seq``; returns the sequence number the
    analyzer now stands at (0 when the state is missing, ahead, or of another version)."""
    if saved is None or saved[0] > upto_seq:
        return 0
    try:
        analyzer.load_state_dict(saved[1])
    except (ValueError, KeyError, TypeError) as exc:
        log.info("saved analyzer state not used (%s); replaying the run", exc)
        return 0
    return saved[0]


class AnalyzerCache:
    """Per-process analyzers of the runs, least recently used dropped beyond ``size``.

    ``save_every_batches`` / ``save_every_seconds``: how often an analyzer's state is saved.
    The saved state is only a replay shortcut: the diagnosis rows and events are written with
    the batch that changed them, a restart replays the batches after the saved state (ids are
    deterministic and rows upserted by id), so nothing forces an earlier save.
    """

    def __init__(self, size: int = 4096, *, save_every_batches: int = 64,
                 save_every_seconds: float = 30.0) -> None:
        self.size = size
        self.save_every_batches = save_every_batches
        self.save_every_seconds = save_every_seconds
        self._cache: OrderedDict[str, LiveAnalyzer] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, run_id: str) -> LiveAnalyzer | None:
        """The cached analyzer of the run, or None (the cache order is left alone)."""
        with self._lock:
            return self._cache.get(run_id)

    def drop(self, run_id: str) -> None:
        """Forget the run's analyzer (after an analysis error: it may be inconsistent)."""
        with self._lock:
            self._cache.pop(run_id, None)

    def keep(self, run_id: str, live: LiveAnalyzer) -> None:
        """Cache ``live`` as the run's most recently used analyzer."""
        with self._lock:
            self._cache[run_id] = live
            self._cache.move_to_end(run_id)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)

    # reads sent with a batch's first round trip ---------------------------------------------
    @staticmethod
    def submit_cold_start(conn: Any, run_id: str) -> ColdStart:
        """Send the saved state and the replay after it (no analyzer of the run here yet)."""
        return ColdStart(analysis_q.load_state(conn, run_id),
                         analysis_q.replay_after_saved_state(conn, run_id))

    def submit_catch_up(self, conn: Any, run_id: str) -> tuple[int, analysis_q.Replay] | None:
        """Send the replay query for a cached analyzer that was behind on the run's last batch
        (batches alternating between replicas): (its first sequence number, the rows)."""
        live = self.peek(run_id)
        if live is None or not live.was_behind:
            return None
        return live.analyzed_seq, analysis_q.replay(conn, run_id, live.analyzed_seq)

    # loading and replaying ------------------------------------------------------------------
    def analyzer_for(self, conn: Any, run: Any, upto_seq: int,
                     replay: tuple[int, analysis_q.Replay] | None = None,
                     cold_start: ColdStart | None = None) -> LiveAnalyzer:
        """The run's analyzer, fed with every point below ``upto_seq`` (``replay``: a replay
        query already sent, used when it starts where the analyzer stands; ``cold_start``:
        the saved state and the replay after it, already sent, for a new analyzer)."""
        run_id = run["run_id"]
        with self._lock:
            live = self._cache.get(run_id)
            if live is not None:
                self._cache.move_to_end(run_id)
        if live is not None and live.analyzed_seq == upto_seq:
            live.was_behind = False
            return live
        if live is None or live.analyzed_seq > upto_seq:
            analyzer = new_analyzer(run)
            # a run without points yet (its first batch) has no saved state and nothing to replay
            if cold_start is not None:
                saved = cold_start.saved.get()
                replay = (saved[0] if saved is not None else 0, cold_start.replay)
            else:
                saved = analysis_q.load_state(conn, run_id).get() if upto_seq > 0 else None
            analyzed = restore(analyzer, saved, upto_seq)
            # Runs started together (a sweep) would otherwise all save their state on the same
            # batch: each run starts at its own point of the save cycle.
            phase = zlib.crc32(run_id.encode()) / 2**32
            live = LiveAnalyzer(analyzer, analyzed,
                                time.monotonic() - phase * self.save_every_seconds,
                                int(phase * self.save_every_batches))
        if live.analyzed_seq == upto_seq:
            return live
        if replay is not None and replay[0] == live.analyzed_seq:
            stored = replay[1].batches(upto_seq)
        else:
            stored = analysis_q.replay(conn, run_id, live.analyzed_seq, upto_seq).batches()
        live.unsaved_batches += feed_stored(live.analyzer, stored)
        live.analyzed_seq = upto_seq
        live.was_behind = True
        return live

    @staticmethod
    def replayed(conn: Any, run: Any) -> RunAnalyzer:
        """A fresh analyzer of the whole run (saved state plus the batches after it), for a
        read; the cache is left alone."""
        analyzer = new_analyzer(run)
        upto = int(run["next_seq"])
        start = restore(analyzer, analysis_q.load_state(conn, run["run_id"]).get(), upto)
        feed_stored(analyzer, analysis_q.replay(conn, run["run_id"], start, upto).batches())
        return analyzer

    # saving ---------------------------------------------------------------------------------
    def save_if_due(self, conn: Any, run_id: str, live: LiveAnalyzer) -> None:
        """Save the analyzer's state after enough batches or seconds."""
        now = time.monotonic()
        if (live.unsaved_batches >= self.save_every_batches
                or now - live.saved_at > self.save_every_seconds):
            analysis_q.save_state(conn, run_id, live.analyzed_seq, live.analyzer.state_dict())
            live.saved_at, live.unsaved_batches = now, 0
