"""``rhythmd analyze``: CSV, JSONL and TensorBoard inputs, tables, JSON and ``--plot``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from rhythmd.cli.analyze import analyze_file
from rhythmd.interop.conventions import resolve_metric_names
from rhythmd.interop.files import read_columns
from tests.cli.conftest import DIABETES, DIGITS, hide_package


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_jsonl(rows: list[dict[str, str]], path: Path, rename: dict[str, str] | None = None
                ) -> Path:
    """The corpus CSV as JSONL: empty cells absent, nan/inf as JSON literals or strings."""
    rename = rename or {}
    with open(path, "w") as fh:
        for i, row in enumerate(rows):
            obj: dict[str, Any] = {"step": int(row["step"])}
            for k, v in row.items():
                if k == "step" or v == "":
                    continue
                x = float(v)
                # alternate the two spellings of non-finite values
                obj[rename.get(k, k)] = x if math.isfinite(x) or i % 2 else str(v)
            fh.write(json.dumps(obj) + "\n")
    return path


def test_csv_table(cli: Any) -> None:
    r = cli("analyze", DIABETES, DIGITS)
    assert r.code == 0, r
    assert "divergence" in r.out and "critical" in r.out
    assert "rollback" in r.out  # the recommended schedule change
    # the digits run is flat late in its cosine schedule: diagnosed, left alone, and why
    assert "stagnation" in r.out and "reduce_lr" not in r.out
    assert "schedule is decaying" in r.out
    assert "non-finite points" in r.out


def test_json_output(cli: Any) -> None:
    r = cli("analyze", DIABETES, "--json")
    assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert {d["kind"] for d in rep["diagnoses"]} >= {"divergence"}
    assert rep["recommendations"][0]["action"] == "rollback"
    assert rep["metrics"] == {"train": "train_loss", "val": "val_loss", "lr": "lr"}
    assert rep["nonfinite_points"]["train_loss"] > 0


def test_jsonl_gives_the_same_analysis_as_csv(tmp_path: Path) -> None:
    jl = write_jsonl(csv_rows(DIABETES), tmp_path / "run.jsonl")
    a, b = analyze_file(DIABETES), analyze_file(jl)
    for key in ("diagnoses", "schedule", "recommendations", "total_steps"):
        assert json.dumps(a[key], sort_keys=True, default=str) == \
            json.dumps(b[key], sort_keys=True, default=str)
    cols = read_columns(jl)
    s, v = cols["train_loss"]
    assert s.dtype.kind == "i" and (~(v == v)).sum() > 0  # NaN kept as data


def test_jsonl_detected_by_content_and_aliases(tmp_path: Path, cli: Any) -> None:
    path = write_jsonl(csv_rows(DIGITS), tmp_path / "log.txt.log",
                       {"train_loss": "train/loss", "val_loss": "eval/loss",
                        "lr": "learning_rate"})
    cols = read_columns(path)
    names = resolve_metric_names(cols)
    assert names["train_metric"] == "train/loss"
    assert names["val_metric"] == "eval/loss"
    assert names["lr_metric"] == "learning_rate"
    r = cli("analyze", path, "--json")
    assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert rep["metrics"] == {"train": "train/loss", "val": "eval/loss", "lr": "learning_rate"}
    assert [d["kind"] for d in rep["diagnoses"]] == ["stagnation"]


def test_metric_flags(tmp_path: Path, cli: Any) -> None:
    path = write_jsonl(csv_rows(DIGITS), tmp_path / "x.jsonl",
                       {"train_loss": "objective", "val_loss": "heldout"})
    r = cli("analyze", path, "--train-metric", "objective", "--val-metric", "heldout", "--json")
    assert r.code == 0, r
    assert json.loads(r.out)[0]["metrics"]["val"] == "heldout"
    r = cli("analyze", path, "--train-metric", "nope")
    assert r.code == 2 and "objective" in r.err


def test_spool_file_points_to_replay(tmp_path: Path, cli: Any) -> None:
    p = tmp_path / "spool.jsonl"
    p.write_text(json.dumps({"batch_id": "a", "series": []}) + "\n")
    r = cli("analyze", p)
    assert r.code == 1 and "rhythmd replay" in r.err


def test_errors(tmp_path: Path, cli: Any) -> None:
    r = cli("analyze", tmp_path / "missing.csv")
    assert r.code == 1 and "no such file" in r.err
    empty = tmp_path / "empty.csv"
    empty.write_text("step,train_loss\n")
    r = cli("analyze", empty)
    assert r.code == 1 and "no data" in r.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 2}\nnot json\n')
    r = cli("analyze", bad)
    assert r.code == 1 and "bad.jsonl:2" in r.err


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot(cli: Any, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "sub" / f"run{suffix}"
    r = cli("analyze", DIABETES, DIGITS, "--plot", out)
    assert r.code == 0, r
    data = out.read_bytes()
    assert len(data) > 20_000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        text = data.decode()
        assert "<svg" in text[:2000]
        # non-finite points are marked and labelled in the legend
        assert "train_loss NaN" in text and "train_loss +inf" in text
        assert "divergence (critical)" in text and "rollback(" in text


def test_plot_bad_suffix_fails_before_work(cli: Any, tmp_path: Path) -> None:
    r = cli("analyze", DIABETES, "--plot", tmp_path / "out.jpg")
    assert r.code == 2 and ".svg" in r.err


def test_plot_without_matplotlib(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                 ) -> None:
    hide_package(monkeypatch, "matplotlib")
    r = cli("analyze", DIABETES, "--plot", tmp_path / "x.png")
    assert r.code == 2 and "pip install 'rhythmd[plot]'" in r.err and "-e '.[plot]'" in r.err


def test_tensorboard_without_package(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    hide_package(monkeypatch, "tensorboard")
    f = tmp_path / "events.out.tfevents.123.host"
    f.write_bytes(b"\0" * 16)
    r = cli("analyze", f)
    assert r.code == 2 and "pip install 'rhythmd[tensorboard]'" in r.err


def test_tensorboard_event_files(cli: Any, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb"
    w = SummaryWriter(str(logdir))
    for row in csv_rows(DIABETES):
        step = int(row["step"])
        for key, tag in (("train_loss", "train/loss"), ("lr", "lr"), ("val_loss", "val/loss")):
            if row[key] != "":
                w.add_scalar(tag, float(row[key]), step)
    w.close()
    cols = read_columns(logdir)
    assert set(cols) == {"train/loss", "lr", "val/loss"}
    s, v = cols["train/loss"]
    assert list(s[:3]) == [1, 2, 3] and math.isnan(v[-1])
    r = cli("analyze", logdir, "--json")
    assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert rep["metrics"] == {"train": "train/loss", "val": "val/loss", "lr": "lr"}
    assert "divergence" in {d["kind"] for d in rep["diagnoses"]}
    # the single event file works too
    (event_file,) = list(logdir.glob("events.out.tfevents.*"))
    r = cli("analyze", event_file, "--json")
    assert r.code == 0 and json.loads(r.out)[0]["diagnoses"] == rep["diagnoses"]
