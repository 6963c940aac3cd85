"""Which recorded metric plays which part, and the planned length from a run's parameters."""

from __future__ import annotations

import pytest

from rhythmd.errors import ConfigurationError
from rhythmd.interop.conventions import planned_steps, resolve_metric_names


@pytest.mark.parametrize(("names", "want"), [
    (["train_loss", "val_loss", "lr", "val_acc"],
     {"train_metric": "train_loss", "val_metric": "val_loss", "lr_metric": "lr",
      "aux_val_metric": "val_acc"}),
    # Hugging Face Trainer
    (["loss", "eval_loss", "learning_rate", "grad_norm", "epoch"],
     {"train_metric": "loss", "val_metric": "eval_loss", "lr_metric": "learning_rate"}),
    # Lightning with LearningRateMonitor
    (["train_loss_step", "train_loss_epoch", "val_loss", "lr-AdamW", "val_acc"],
     {"train_metric": "train_loss_step", "val_metric": "val_loss", "lr_metric": "lr-AdamW",
      "aux_val_metric": "val_acc"}),
    # the PyTorch TensorBoard tutorial's tags: roles read from the names
    (["Loss/train", "Loss/test", "Accuracy/test"],
     {"train_metric": "Loss/train", "val_metric": "Loss/test",
      "aux_val_metric": "Accuracy/test"}),
    # case-insensitive conventional names
    (["Train/Loss", "EVAL/LOSS"], {"train_metric": "Train/Loss", "val_metric": "EVAL/LOSS"}),
    # conventional names beside other candidates of the same role: the list decides
    (["loss/train", "aux_loss", "valid/loss", "test_loss", "train/lr", "val/acc", "val_f1"],
     {"train_metric": "loss/train", "val_metric": "valid/loss", "lr_metric": "train/lr",
      "aux_val_metric": "val/acc"}),
    (["training/loss", "optim/lr", "lr_warmup_ratio", "val_accuracy", "val/top5"],
     {"train_metric": "training/loss", "lr_metric": "optim/lr", "aux_val_metric": "val_accuracy"}),
])
def test_names_to_roles(names: list[str], want: dict[str, str]) -> None:
    assert resolve_metric_names(dict.fromkeys(names)) == want


def test_an_ambiguous_role_is_left_unset() -> None:
    """Two loss-like train names and two LR groups: no guess; the flags decide."""
    cols = dict.fromkeys(["mse", "nll", "lr-SGD/pg1", "lr-SGD/pg2"])
    assert resolve_metric_names(cols) == {}
    assert resolve_metric_names(cols, train="nll", lr="lr-SGD/pg2") == {
        "train_metric": "nll", "lr_metric": "lr-SGD/pg2"}


def test_a_flag_naming_no_metric_lists_the_metrics() -> None:
    with pytest.raises(ConfigurationError, match=r"'objective' is not in the run; its metrics: "
                                                 r"a, b"):
        resolve_metric_names(dict.fromkeys(["b", "a"]), train="objective")


@pytest.mark.parametrize(("params", "want"), [
    ({"max_steps": "1200", "lr": "0.1"}, 1200),  # MLflow params are strings
    ({"max_steps": -1, "num_train_epochs": 3}, None),  # HF: length given in epochs
    ({"max_steps": -1, "total_steps": 500}, 500),
    ({"trainer/max_steps": {"value": 800, "desc": None}}, 800),  # a W&B config entry
    ({"max_iters": 5000.0}, 5000),
    ({"max_steps": "ten"}, None),
    ({"max_steps": 12.5}, None),
    ({}, None),
])
def test_planned_steps(params: dict[str, object], want: int | None) -> None:
    assert planned_steps(params) == want
