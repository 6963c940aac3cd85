"""Metric semantics: which stream is which, and which way is better.

One owner for the roles and the conventional names (TensorBoard, W&B, Lightning, Hugging Face)
that the analysis, the daemon, the CLI and the pages use.

Roles a run can declare per metric (run config ``"metrics": {"val/top1": "max", ...}``):

- ``"min"``: a loss to minimise (synonyms ``"loss"``, ``"minimize"``);
- ``"max"``: a score to maximise (accuracy, top-k, F1, BLEU; ``"score"``, ``"maximize"``);
- ``"objective"``: a quantity that may legitimately rise (a GAN generator loss, an RL policy
  loss); watched only for non-finite values;
- ``"ignore"``: never read.

Undeclared metrics get a role from their name (:func:`infer_role`), or none.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

ROLES = ("min", "max", "objective", "ignore")
_SYNONYMS = {"min": "min", "loss": "min", "minimize": "min", "minimise": "min",
             "max": "max", "score": "max", "maximize": "max", "maximise": "max",
             "objective": "objective", "ignore": "ignore", "off": "ignore", "none": "ignore"}

TRAIN_LOSS_NAMES = ("train_loss", "loss", "train/loss", "training_loss", "train_loss_step",
                    "loss_step", "train/loss_step", "trainer/loss", "loss/train", "train.loss",
                    "training/loss")
VAL_LOSS_NAMES = ("val_loss", "val/loss", "eval_loss", "eval/loss", "validation_loss",
                  "valid_loss", "val_loss_epoch", "validation/loss", "loss/val", "valid/loss",
                  "loss/validation", "test_loss", "test/loss")
VAL_SCORE_NAMES = ("val_acc", "val/acc", "val_accuracy", "val/accuracy", "valid_acc",
                   "eval/accuracy", "eval_accuracy", "accuracy/val", "test_acc")
LR_NAMES = ("lr", "learning_rate", "train/learning_rate", "lr-pg0", "lr/pg0", "lr_pg0",
            "train/lr", "optim/lr", "lr/group0", "lr-0")
"""Conventional names of the train loss, validation loss, validation score and LR streams
(TensorBoard, W&B, Lightning, HF); compared lower-cased where a caller matches names."""
_LR_PREFIX = re.compile(r"^lr[-_/]")  # Lightning's LearningRateMonitor: "lr-Adam", "lr-SGD/pg1"

METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "train_loss": ("loss", "train/loss"),
    "val_loss": ("val/loss", "eval_loss"),
    "lr": ("learning_rate", "lr-pg0"),
}
"""Standard stream -> the other names people (and the trainers' integrations) give it, in the
order tried. The daemon analyses a series under its standard name when the run keeps the default
name and the batch has no series of that name."""


def with_aliases(series: dict[str, Any], configured: dict[str, str]) -> dict[str, Any]:
    """``series`` with the first alias of each standard stream renamed to the standard name.

    ``configured`` maps each standard name to the name the run's analysis reads; a stream whose
    configured name is not the standard one, or that the batch already has, is left alone. The
    input is not modified (a copy is returned when anything is renamed).
    """
    out = series
    for standard, aliases in METRIC_ALIASES.items():
        if configured.get(standard, standard) != standard or standard in series:
            continue
        for alias in aliases:
            if alias in series:
                out = dict(out) if out is series else out
                out[standard] = out.pop(alias)
                break
    return out

_EVAL_WORDS = {"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"}
_SCORE_WORDS = {"acc", "accuracy", "top1", "top5", "f1", "bleu", "rouge", "rouge1", "rouge2",
                "rougel", "auc", "auroc", "roc", "map", "map50", "dice", "iou", "miou",
                "precision", "recall", "r2", "mcc", "score", "reward", "rew", "return", "winrate",
                "exact", "em", "pass", "matthews", "spearman", "pearson", "correct"}
_LOSS_WORDS = {"loss", "nll", "ppl", "perplexity", "mse", "mae", "rmse", "error", "err", "wer",
               "cer", "bpb", "bpc", "ce", "xent", "entropyloss", "huber", "l1", "l2"}
_OBJECTIVE = re.compile(
    r"(^|[^a-z])(g|d|gen|disc|generator|discriminator|adv|adversarial|policy_gradient|policy|pg|"
    r"actor|critic|"
    r"value|vf|kl|approx_kl|entropy|ppo)[_/.\- ]?(loss|objective)|"
    r"(^|[^a-z])loss[_/.\- ]?(g|d|gen|disc|generator|discriminator|adv|policy|actor|critic)"
    r"($|[^a-z])|(^|[^a-z])(approx_kl|kl_div|entropy)($|[^a-z])")


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def normalise_role(role: Any) -> str | None:
    """A declared role in canonical form, or None when it is not one."""
    return _SYNONYMS.get(role.strip().lower()) if isinstance(role, str) else None


def declared_roles(run_config: dict[str, Any] | None) -> dict[str, str]:
    """``{metric: role}`` from the run config's ``"metrics"`` dict (invalid entries dropped)."""
    raw = (run_config or {}).get("metrics")
    if not isinstance(raw, dict):
        return {}
    out: dict[str, str] = {}
    for name, role in raw.items():
        r = normalise_role(role)
        if isinstance(name, str) and r is not None:
            out[name] = r
    return out


@lru_cache(maxsize=1024)  # pure; the analyzer asks for every stream of every batch
def infer_role(name: str) -> str | None:
    """The role a conventional name implies: an adversarial or RL loss is an ``"objective"``,
    accuracy-like names are ``"max"``, loss-like names ``"min"``; None when the name says
    nothing (the caller decides, or ignores the metric)."""
    low = name.lower()
    if _OBJECTIVE.search(low):
        return "objective"
    toks = _tokens(low)
    words = set(toks)
    if words & _LOSS_WORDS:
        return "min"
    if words & _SCORE_WORDS or any(t.startswith(("acc", "top", "f1", "bleu", "map", "auc"))
                                   for t in toks):
        return "max"
    return None


def is_eval_name(name: str) -> bool:
    """Whether a name reads as a held-out evaluation (``val/…``, ``eval_…``, ``test_…``)."""
    toks = _tokens(name)
    return bool(toks) and (toks[0] in _EVAL_WORDS or (len(toks) > 1 and toks[-1] in _EVAL_WORDS))


@lru_cache(maxsize=1024)
def is_lr_name(name: str) -> bool:
    """Whether a name is a learning-rate stream."""
    low = name.lower()
    return low in LR_NAMES or bool(_LR_PREFIX.match(low))


def role_of(name: str, declared: dict[str, str]) -> tuple[str | None, str]:
    """``(role, source)``: the declared role, else the one inferred from the name.
    ``source`` is ``"declared"``, ``"inferred from the name"`` or ``"unknown"``."""
    if name in declared:
        return declared[name], "declared"
    r = infer_role(name)
    return r, ("inferred from the name" if r is not None else "unknown")


@lru_cache(maxsize=1024)
def is_error_rate_name(name: str) -> bool:
    """Whether a loss-like name is an error rate (the complement of a score): ``val_error``,
    ``top1_err``, ``wer``, ``cer``."""
    return bool(set(_tokens(name)) & {"error", "err", "wer", "cer", "errors"})


def is_val_loss_name(name: str) -> bool:
    """Whether a name reads as a held-out loss (``val/loss``, ``Loss/test``, ``eval_nll``)."""
    return infer_role(name) == "min" and is_eval_name(name)


def is_val_score_name(name: str) -> bool:
    """Whether a name reads as a held-out score (``val/acc``, ``eval/f1``, ``Accuracy/test``)."""
    return infer_role(name) == "max" and is_eval_name(name)
