"""The evaluation harness runs end to end on a tiny dev-format corpus."""

from __future__ import annotations

import json
import shutil

from rhythmd.eval.harness import main

from .analysis_helpers import CURVES


def test_harness_on_tiny_corpus(tmp_path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    man, lab = [], []
    for j in map(json.loads, (CURVES / "labels.jsonl").open()):
        rid = j["run_id"]
        shutil.copy(CURVES / f"{rid}.csv", tmp_path / "runs" / f"{rid}.csv")
        ev = 20 if rid.startswith("digits") else 10
        steps = 800 if rid.startswith("digits") else 600
        man.append(
            {
                "run_id": rid,
                "file": f"runs/{rid}.csv",
                "planned_steps": steps,
                "config": {"eval_every": ev},
            }
        )
        lab.append(j)
    (tmp_path / "manifest.jsonl").write_text("\n".join(map(json.dumps, man)) + "\n")
    (tmp_path / "labels.jsonl").write_text("\n".join(map(json.dumps, lab)) + "\n")
    assert main([str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "#### Divergence" in out and "AutoTrainer unstable" in out
    assert "| rhythmd | 1.00 (2/2) | 0.0% (0/4)" in out
