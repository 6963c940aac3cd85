"""PyTorch Lightning callback: ``Trainer(callbacks=[RhythmdCallback(url, run_name=...)])``.

The loss is streamed once per optimizer step, unscaled: Lightning divides the loss it hands
to callbacks by ``accumulate_grad_batches``; the callback multiplies that back and averages
the micro-batches of one step. After each validation the metrics the module logged are
forwarded (every callback metric whose name reads as a validation one, or the names given),
with their roles in the run config's ``"metrics"``. The model, the first optimizer and its
scheduler are snapshotted in memory, so rollbacks and reverts work.
"""

from __future__ import annotations

from typing import Any

from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import TRAINER_ACTIONS, StepMap, log_once, metric_roles

try:  # the unified package first, then the standalone one
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    from pytorch_lightning.callbacks import Callback

_VAL_PREFIXES = ("val", "valid", "eval")


def is_val_name(name: str) -> bool:
    """Whether a logged metric name reads as a validation metric (``val_loss``, ``val/acc``,
    ``valid_f1``, ``eval_bleu``)."""
    low = name.lower()
    return low.startswith(_VAL_PREFIXES) and not low.startswith("value")  # RL value losses


class RhythmdCallback(Callback):
    """Streams the training loss (per optimizer step, unscaled), the LR and the validation
    metrics to rhythmd, and applies its recommendations (rollbacks and reverts included) to the
    module, the first optimizer and its scheduler.

    Args:
        url: daemon base URL.
        run_name, project: run metadata (``run_name`` defaults to the module's class name).
        val_metrics: names to forward after each validation; default: every callback metric
            whose name starts with ``val``/``valid``/``eval``.
        metrics: roles, e.g. ``{"val/acc": "max"}``; sent as the run config's ``"metrics"``
            with ``"max"`` inferred for the ``val_metrics`` names that read as scores.
        hook_kwargs: passed to :class:`~rhythmd_client.RhythmHook` (``mode``, ``allow``,
            ``snapshot_max_bytes``, ``reflex``, ``token``, …); ``allow`` defaults to every
            action.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", run_name: str | None = None,
                 project: str | None = None, val_metrics: tuple[str, ...] | None = None,
                 metrics: dict[str, str] | None = None, **hook_kwargs: Any) -> None:
        super().__init__()
        self.url = url
        self.run_name = run_name
        self.project = project
        self.val_metrics = val_metrics
        self.metrics = dict(metrics or {})
        self.hook_kwargs = {"allow": TRAINER_ACTIONS, **hook_kwargs}
        self.hook: RhythmHook | None = None
        self.run_id: str | None = None
        self._last_step = -1
        self._losses: list[Any] = []
        self._steps = StepMap()
        self._failed: set[str] = set()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        scheduler = configs[0].scheduler if configs else None
        total = getattr(trainer, "estimated_stepping_batches", None)
        config = dict(self.hook_kwargs.pop("config", None) or {})
        if isinstance(total, (int, float)) and 0 < total < float("inf"):
            config.setdefault("total_steps", int(total))
        roles = metric_roles(self.val_metrics, self.metrics)
        if roles:
            config.setdefault("metrics", roles)
        hook_args = dict(self.hook_kwargs)
        model = hook_args.pop("model", pl_module)  # model=None: no snapshots
        self.hook = RhythmHook(self.url, run_name=self.run_name or type(pl_module).__name__,
                               project=self.project, optimizer=optimizer, scheduler=scheduler,
                               model=model, config=config, **hook_args)
        self.run_id = self.hook.run_id
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        hook = self.hook
        if hook is None:
            return
        try:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if hasattr(loss, "detach"):
                loss = loss.detach()
                if getattr(pl_module, "automatic_optimization", True):
                    loss = loss * int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
                self._losses.append(loss)
            step = trainer.global_step
            if step == self._last_step:  # gradient accumulation: not an optimizer step yet
                return
            self._last_step = step
            losses, self._losses = self._losses, []
            value: Any = None
            if len(losses) == 1:
                value = losses[0]
            elif losses:
                value = sum(losses[1:], losses[0]) / len(losses)  # device ops, no sync
            if self._steps.step(hook, step, loss=value):
                trainer.should_stop = True
        except Exception as exc:
            log_once(self._failed, "Lightning callback on_train_batch_end", exc)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.hook is None or getattr(trainer, "sanity_checking", False):
            return
        try:
            metrics = trainer.callback_metrics
            names = self.val_metrics if self.val_metrics is not None else [
                n for n in metrics if is_val_name(n)]
            found = {name: metrics[name] for name in names if name in metrics}
            if found:
                self.hook.log(self._steps(trainer.global_step), **found)
        except Exception as exc:
            log_once(self._failed, "Lightning callback on_validation_end", exc)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.hook is not None:
            self.hook.close()
            self.hook = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.hook is not None:
            self.hook.close(status="failed")
            self.hook = None
