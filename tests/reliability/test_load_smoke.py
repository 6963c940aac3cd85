"""CI smoke test of ``bench/load.py --short``: 20 concurrent runs for 5 s against a real daemon
(SQLite, one process) and PostgreSQL (two processes, round-robin), no point lost, no failed
request, and the two-process diagnoses equal a one-process replay of the same batches.

Latency is printed, not asserted: CI machines differ (see bench/README.md for figures).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT as REPO
from tests.conftest import _postgres_unavailable, require_postgres


def _run(backends: str, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--short", "--backends", backends,
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False)
    out = proc.stdout + proc.stderr
    print("\n" + out)
    assert proc.returncode == 0, out[-6000:]
    assert "RESULT: OK" in out
    return out


def test_load_short_sqlite() -> None:
    out = _run("sqlite")
    assert "sqlite" in out


def test_load_short_postgresql_two_processes() -> None:
    if _postgres_unavailable() is not None:
        require_postgres()  # skips, or fails under CI=true
    # round-robin: every batch of a run alternates between the processes, so each catches up on
    # the other's batches before analysing its own (the case that must give the same diagnoses)
    out = _run("postgresql", "--balance", "round-robin")
    assert "2 round-robin" in out
    assert "yes (" in out  # same diagnoses, and some diagnoses to compare
