"""W&B runs: offline run files written by the real wandb package, and history exports."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rhythmd.cli.analyze import analyze_file
from rhythmd.interop import read_run
from rhythmd.interop.files import read_columns
from tests.interop.conftest import DIABETES, HF_NAMES, assert_same_columns, renamed
from tests.interop.test_mlflow import same_findings

pytest.importorskip("wandb")


def run_file(wandb_dir: Path) -> Path:
    (f,) = wandb_dir.glob("offline-run-*/run-*.wandb")
    return f


def test_offline_run_reads_as_the_csv(wandb_diabetes: Path) -> None:
    """History at the trainer's global step (not W&B's _step, which counts log calls), NaN and
    infinities kept, the run name, the planned length from the config, the run id."""
    f = run_file(wandb_diabetes)
    for ref in (wandb_diabetes, f.parent, f):  # wandb/, the run directory, the file
        data = read_run(ref)
        assert_same_columns(data.columns, renamed(DIABETES, HF_NAMES))
        assert data.name == "hf-corpus" and data.total_steps == 80
        assert data.origin == {"wandb_run_id": f.stem.removeprefix("run-"),
                               "wandb_project": "rhythmd-tests"}


def test_analysis_of_the_offline_run(cli: Any, wandb_diabetes: Path) -> None:
    r = cli("analyze", wandb_diabetes, "--json")
    assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert rep["metrics"] == {"train": "train/loss", "val": "eval/loss",
                              "lr": "train/learning_rate"}
    same_findings(rep, analyze_file(DIABETES, total_steps=80))
    assert "divergence" in {d["kind"] for d in rep["diagnoses"]}


def test_a_run_cut_off_mid_write_reads_to_its_last_record(wandb_diabetes: Path,
                                                          tmp_path: Path) -> None:
    whole = run_file(wandb_diabetes).read_bytes()
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(whole[:len(whole) // 2 + 3])
    s, _ = read_run(cut).columns["train/loss"]
    full, _ = read_run(wandb_diabetes).columns["train/loss"]
    assert 0 < s.size < full.size and s.tolist() == full[:s.size].tolist()


def test_errors(cli: Any, wandb_diabetes: Path, tmp_path: Path) -> None:
    two = tmp_path / "wandb"
    for i in range(2):
        shutil.copytree(run_file(wandb_diabetes).parent, two / f"offline-run-2025_{i}-x{i}")
    r = cli("analyze", two)
    assert r.code == 1 and "holds 2 W&B runs" in r.err and "offline-run-2025_0-x0" in r.err
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(b"not a run")
    r = cli("analyze", bad)
    assert r.code == 1 and "not a W&B run file" in r.err
    flipped = bytearray(run_file(wandb_diabetes).read_bytes())
    flipped[200] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    r = cli("analyze", bad)
    assert r.code == 1 and "corrupt" in r.err and "Traceback" not in r.err


def history_rows() -> list[dict[str, Any]]:
    """The corpus as rows of W&B's public API (run.scan_history()) for a Hugging Face run:
    _step counts log calls, the trainer's step is train/global_step."""
    rows = []
    with open(DIABETES, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            out: dict[str, Any] = {"_step": i, "_runtime": 0.5 * i, "_timestamp": 1.7e9 + i,
                                   "train/global_step": int(row["step"])}
            out.update({HF_NAMES[k]: float(v) for k, v in row.items() if k != "step" and v})
            rows.append(out)
    return rows


def test_history_exports(tmp_path: Path) -> None:
    """scan_history() rows as JSONL, and history() as pandas writes it to CSV (the index
    first, _step and the metrics in any order), read at the trainer's step."""
    rows = history_rows()
    want = renamed(DIABETES, HF_NAMES)
    jl = tmp_path / "history.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_same_columns(read_columns(jl), want)
    cols = ["_runtime", "eval/loss", "_step", "train/loss", "eval/accuracy",
            "train/global_step", "_timestamp", "train/learning_rate"]
    path = tmp_path / "history.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", *cols])
        for i, r in enumerate(rows):
            w.writerow([i, *("" if r.get(c) is None else repr(r[c]) for c in cols)])
    assert_same_columns(read_columns(path), want)
