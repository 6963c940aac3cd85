"""Findings written to TensorBoard event files, read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from rhythmd.interop.tensorboard_sink import open_counts
from tests.cli.conftest import hide_package
from tests.interop.conftest import DIABETES

pytest.importorskip("tensorboard")


def accumulate(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def texts(acc: Any, tag: str) -> dict[int, str]:
    return {ev.step: ev.tensor_proto.string_val[0].decode() for ev in acc.Tensors(tag)}


def tb_logdir(tmp_path: Path) -> Path:
    """The diverging corpus run as a TensorBoard logdir (torch's SummaryWriter)."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb"
    w = SummaryWriter(str(logdir))
    with open(DIABETES, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, tag in (("train_loss", "Loss/train"), ("lr", "lr"),
                             ("val_loss", "Loss/val")):
                if row[key]:
                    w.add_scalar(tag, float(row[key]), int(row["step"]))
    w.close()
    return logdir


def test_analyze_writes_beside_a_tensorboard_source(cli: Any, tmp_path: Path) -> None:
    """A bare --to-tensorboard writes into logdir/rhythmd: text where each diagnosis was flagged
    and each recommendation issued, the open-diagnoses curve; again, it replaces its file."""
    pytest.importorskip("torch")
    logdir = tb_logdir(tmp_path)
    for _ in range(2):
        r = cli("analyze", logdir, "--to-tensorboard", "--json")
        assert r.code == 0, r
    (rep,) = json.loads(r.out)
    assert rep["metrics"] == {"train": "Loss/train", "val": "Loss/val", "lr": "lr"}
    out = logdir / "rhythmd"
    (written,) = out.glob("events.out.tfevents.*")
    assert f"wrote {written}" in r.err
    acc = accumulate(out)
    diag = texts(acc, "rhythmd/diagnoses")
    assert sorted(diag) == sorted({d["detected_at_step"] for d in rep["diagnoses"]})
    first = rep["diagnoses"][0]
    assert f"**{first['kind']}** ({first['severity']})" in diag[first["detected_at_step"]]
    recs = texts(acc, "rhythmd/recommendations")
    assert {r["step"] for r in rep["recommendations"]} == set(recs)
    assert all("recommended" in t for t in recs.values())
    assert "status: **" in next(iter(texts(acc, "rhythmd/summary").values()))
    opened = [(e.step, e.value) for e in acc.Scalars("rhythmd/open_diagnoses")]
    assert opened == [(s, float(n)) for s, n in open_counts(rep["diagnoses"])]
    # the logdir still analyses the same (rhythmd's own tags play no part)
    again = json.loads(cli("analyze", logdir, "--json").out)[0]
    assert again["diagnoses"] == rep["diagnoses"]


def test_usage_errors(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("analyze", DIABETES, "--to-tensorboard")
    assert r.code == 2 and "needs a directory" in r.err
    r = cli("analyze", DIABETES, DIABETES, "--to-tensorboard", tmp_path)
    assert r.code == 2 and "one SOURCE" in r.err
    hide_package(monkeypatch, "tensorboard")
    r = cli("analyze", DIABETES, "--to-tensorboard", tmp_path / "tb")
    assert r.code == 2 and "pip install 'rhythmd[tensorboard]'" in r.err
    assert not (tmp_path / "tb").exists()


def test_open_counts() -> None:
    diags = [{"onset_step": 10, "closed_at_step": 30}, {"onset_step": 20, "closed_at_step": None},
             {"onset_step": 30, "closed_at_step": 40}]
    assert open_counts(diags) == [(10, 1), (20, 2), (30, 2), (40, 1)]
