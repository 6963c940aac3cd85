"""Metric semantics: declared and inferred roles, and which metric the analysis monitors."""

from __future__ import annotations

import numpy as np
import pytest

from rhythmd.analysis import AnalysisConfig, RunAnalyzer
from rhythmd.analysis.metrics import declared_roles, infer_role, is_eval_name, is_lr_name


@pytest.mark.parametrize(("name", "role"), [
    ("val_loss", "min"), ("eval/loss", "min"), ("val/nll", "min"), ("test_error", "min"),
    ("val_acc", "max"), ("val/top1", "max"), ("val_top5_accuracy", "max"),
    ("eval/accuracy", "max"), ("val_bleu", "max"), ("val_mean_dice", "max"), ("val/f1", "max"),
    ("g_loss", "objective"), ("loss_G", "objective"), ("d_loss", "objective"),
    ("train/policy_gradient_loss", "objective"), ("train/value_loss", "objective"),
    ("train/entropy_loss", "objective"), ("approx_kl", "objective"),
    ("lr", None), ("epoch", None),
])
def test_roles_from_conventional_names(name: str, role: str | None) -> None:
    assert infer_role(name) == role


def test_eval_and_lr_names() -> None:
    assert all(map(is_eval_name, ("val_loss", "val/top1", "eval_loss", "test/acc",
                                  "validation_loss")))
    assert not any(map(is_eval_name, ("train_loss", "loss", "interval", "evaluated")))
    assert all(map(is_lr_name, ("lr", "learning_rate", "lr-Adam", "lr-SGD/pg1")))
    assert not is_lr_name("lrs_total")


def test_declared_roles_are_validated() -> None:
    assert declared_roles({"metrics": {"val/top1": "max", "g": "objective", "x": "Score",
                                       "bad": "sideways", 3: "min"}}) == {
        "val/top1": "max", "g": "objective", "x": "max"}
    assert declared_roles({"metrics": "nope"}) == {} and declared_roles(None) == {}


def _acc_run(name: str, cfg: dict | None = None) -> RunAnalyzer:
    an = RunAnalyzer(AnalysisConfig.from_run_config({"total_steps": 2000, **(cfg or {})}))
    s = np.arange(100, 2001, 100)
    an.feed({name: (s, 0.9 - 0.7 * np.exp(-s / 400.0)), "lr": (s, np.full(s.size, 0.1))})
    return an


def test_the_monitored_metric_and_why() -> None:
    an = _acc_run("val_top1")
    m = an.monitoring()
    assert m["metric"] == "val_top1" and m["mode"] == "max" and "by its name" in m["reason"]
    an = _acc_run("custom_score", {"metrics": {"custom_score": "max"}})
    assert an.monitoring()["mode"] == "max" and "declared" in an.monitoring()["reason"]
    # an evaluation loss, once it arrives, is preferred over a score
    s = np.arange(2100, 2201, 100)
    an = _acc_run("val_acc")
    an.feed({"val_loss": (s, np.full(s.size, 0.4))})
    assert an.monitoring()["metric"] == "val_loss" and an.monitoring()["mode"] == "min"
    ignored = _acc_run("val_acc", {"metrics": {"val_acc": "ignore"}})
    assert ignored.monitoring()["source"] == "train"
