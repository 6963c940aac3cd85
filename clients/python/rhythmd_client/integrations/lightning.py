"""PyTorch Lightning callback: ``Trainer(callbacks=[RhythmdCallback(url, run_name=...)])``."""

from __future__ import annotations

from typing import Any

from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import TRAINER_ACTIONS

try:  # the unified package first, then the standalone one
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    from pytorch_lightning.callbacks import Callback


class RhythmdCallback(Callback):
    """Streams the training loss (per optimizer step), the LR and the validation metrics to
    rhythmd, and applies its recommendations to the first optimizer and its scheduler.

    Args:
        url: daemon base URL.
        run_name, project: run metadata (``run_name`` defaults to the module's class name).
        val_metrics: callback metrics logged after each validation, e.g. ``("val_loss",
            "val_acc")``; names are sent as is.
        hook_kwargs: passed to :class:`~rhythmd_client.RhythmHook` (``mode``, ``allow``,
            ``token``, ``min_lr``, …). ``allow`` defaults to every action but ``rollback``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", run_name: str | None = None,
                 project: str | None = None, val_metrics: tuple[str, ...] = ("val_loss",
                                                                               "val_acc"),
                 **hook_kwargs: Any) -> None:
        super().__init__()
        self.url = url
        self.run_name = run_name
        self.project = project
        self.val_metrics = val_metrics
        self.hook_kwargs = {"allow": TRAINER_ACTIONS, **hook_kwargs}
        self.hook: RhythmHook | None = None
        self.run_id: str | None = None
        self._last_step = -1

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        scheduler = configs[0].scheduler if configs else None
        total = getattr(trainer, "estimated_stepping_batches", None)
        config = dict(self.hook_kwargs.pop("config", None) or {})
        if isinstance(total, (int, float)) and 0 < total < float("inf"):
            config.setdefault("total_steps", int(total))
        self.hook = RhythmHook(self.url, run_name=self.run_name or type(pl_module).__name__,
                               project=self.project, optimizer=optimizer, scheduler=scheduler,
                               config=config, **self.hook_kwargs)
        self.run_id = self.hook.run_id

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        hook = self.hook
        step = trainer.global_step
        if hook is None or step == self._last_step:  # gradient accumulation: not a step yet
            return
        self._last_step = step
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if hasattr(loss, "detach"):
            loss = loss.detach()
        hook.step(step, loss=loss)
        if hook.should_stop:
            trainer.should_stop = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.hook is None or getattr(trainer, "sanity_checking", False):
            return
        metrics = trainer.callback_metrics
        found = {name: metrics[name] for name in self.val_metrics if name in metrics}
        if found:
            self.hook.log(trainer.global_step, **found)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.hook is not None:
            self.hook.close()
            self.hook = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.hook is not None:
            self.hook.close(status="failed")
            self.hook = None
