"""Smoke test of examples/train_digits.py: a diverging LR is rolled back by a real daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_digits.py"

pytest.importorskip("sklearn")
pytest.importorskip("torch")
pytest.importorskip("rhythmd_client")


def _final(out: str) -> float:
    m = re.search(r"final val loss \(mean of last 3 evals\) (\S+),", out)
    assert m, out
    return float(m.group(1))


def test_diverging_lr_is_rolled_back_and_converges() -> None:
    # SGD momentum 0.9 at LR 1.0 turns the loss non-finite within ~15 steps; the daemon
    # diagnoses it and the hook rolls back with a smaller LR
    run = subprocess.run([sys.executable, str(SCRIPT), "--lr", "1.0", "--steps", "400",
                          "--start-daemon", "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "rhythmd: rollback" in out, out
    assert _final(out) < 1.0, out  # the constant predictor's loss is 2.30


def test_without_rhythmd_the_same_run_ends_non_finite() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--lr", "1.0", "--steps", "100",
                          "--no-rhythmd", "--quiet", "--step-ms", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "giving up" in run.stdout
