"""PyTorch Lightning callback: ``Trainer(callbacks=[RhythmdCallback(url, run_name=...)])``.

The loss is streamed once per optimizer step, unscaled: Lightning divides the loss it hands
to callbacks by ``accumulate_grad_batches``; the callback multiplies that back and averages
the micro-batches of one step. After each validation the metrics the module logged are
forwarded (every callback metric whose name reads as a validation one, or the names given),
with their roles in the run config's ``"metrics"``. The model, the first optimizer and its
scheduler are snapshotted in memory, so rollbacks and reverts work. The callback's
``state_dict`` goes into Lightning checkpoints: ``trainer.fit(..., ckpt_path=...)`` continues
the same rhythmd run (see :meth:`~rhythmd_client.RhythmHook.load_state_dict`).
"""

from __future__ import annotations

from typing import Any

from rhythmd_client._settings import resolve
from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import (
    TRAIN_LOSS_NAMES,
    TRAINER_ACTIONS,
    StepMap,
    log_once,
    metric_roles,
    plain_config,
)

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

    def __init__(self, url: str | None = None, run_name: str | None = None,
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
        self._resume: dict[str, Any] | None = None  # from a checkpoint, until training starts
        self._final: dict[str, Any] = {}  # the state at the end of the last fit

    def state_dict(self) -> dict[str, Any]:
        """Saved in the checkpoint: the hook's state and the trainer-to-stream step offset."""
        if self.hook is None:
            return dict(self._resume or self._final)
        return {"hook": self.hook.state_dict(), "step_offset": self._steps.offset}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's state; applied once the optimizer is restored too."""
        self._resume = dict(state_dict) if state_dict else None

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
        saved = (self._resume or {}).get("hook") or {}
        if isinstance(saved.get("run_id"), str):
            hook_args.setdefault("run_id", saved["run_id"])  # continue the checkpoint's run
        self.hook = RhythmHook(self.url, run_name=self.run_name or type(pl_module).__name__,
                               project=self.project, optimizer=optimizer, scheduler=scheduler,
                               model=model, config=config, **hook_args)
        self.run_id = self.hook.run_id
        self._last_step = trainer.global_step

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        resume, self._resume = self._resume, None
        if self.hook is None or not resume or not resume.get("hook"):
            return
        try:  # Lightning restores the optimizer and scheduler between fit start and here
            self.hook.load_state_dict(resume["hook"])
            self._steps.offset = int(resume.get("step_offset") or 0)
            self._last_step = trainer.global_step
        except Exception as exc:
            log_once(self._failed, "Lightning callback resume", exc)

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
        self._close(None)  # finished, or stopped after a "stop"

    def _close(self, status: str | None) -> None:
        """Finish the run; keep the hook's last state for a checkpoint saved afterwards."""
        if self.hook is not None:
            try:
                self._final = self.state_dict()
            except Exception as exc:
                log_once(self._failed, "Lightning callback state", exc)
            self.hook.close(status=status)
            self.hook = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close("failed")


try:  # the unified package first, then the standalone one
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # pragma: no cover - depends on what is installed
    from pytorch_lightning.loggers import Logger
    from pytorch_lightning.utilities import rank_zero_only


class RhythmdLogger(Logger):
    """``Trainer(logger=RhythmdLogger(url))``: streams what the module logs, advise only.

    A logger never sees the optimizer, so this form cannot apply anything: the hook runs in
    ``mode="advise"`` (recommendations are logged and acknowledged as rejected), or is a
    no-op when ``mode="disabled"`` or ``RHYTHMD_MODE=disabled``. Use
    :class:`RhythmdCallback` to have them applied. Metrics arrive as Lightning hands them to
    loggers, every ``log_every_n_steps`` steps (set it to 1 for the per-step rhythm). The
    training loss, if the module logs it (``train_loss``, ``loss``, ``train/loss``,
    ``train_loss_step``), becomes the hook's ``loss`` stream, and recommendations are looked
    at when it arrives; the other metrics keep their names. The hyperparameters become the
    run config, with ``metrics=`` as its ``"metrics"`` roles.
    """

    def __init__(self, url: str | None = None, run_name: str | None = None,
                 project: str | None = None, metrics: dict[str, str] | None = None,
                 **hook_kwargs: Any) -> None:
        super().__init__()
        self.url = url
        self.run_name = run_name
        self.project = project
        # rank 0 alone logs: its hook must not enter DDP collectives
        off = resolve(url, None, hook_kwargs.pop("mode", None))[2] == "disabled"
        self.hook_kwargs = {**hook_kwargs, "mode": "disabled" if off else "advise", "rank": 0,
                            "world_size": 1, "ddp_sync": False}
        self._config: dict[str, Any] = {"metrics": dict(metrics)} if metrics else {}
        self.hook: RhythmHook | None = None
        self.hook_run_id: str | None = None  # the daemon's run id, kept after finalize
        self._failed: set[str] = set()

    @property
    def name(self) -> str:
        return "rhythmd"

    @property
    def version(self) -> str:
        return self.hook_run_id or ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        try:
            items = vars(params) if hasattr(params, "__dict__") and not isinstance(
                params, dict) else dict(params)
            self._config.update(plain_config(items))
        except Exception as exc:
            log_once(self._failed, "Lightning logger log_hyperparams", exc)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        try:
            if self.hook is None:
                self.hook = RhythmHook(self.url, run_name=self.run_name or "lightning-run",
                                       project=self.project, config=self._config or None,
                                       **self.hook_kwargs)
                self.hook_run_id = self.hook.run_id
            step = int(step or 0)
            values = {k: v for k, v in metrics.items() if k != "epoch"}
            loss = next((values.pop(k) for k in TRAIN_LOSS_NAMES if k in values), None)
            if loss is not None:  # the hook's own loss stream (and a step boundary)
                self.hook.step(step, loss=loss)
            if values:
                self.hook.log(step, **values)
        except Exception as exc:
            log_once(self._failed, "Lightning logger log_metrics", exc)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self.hook is not None:
            self.hook.close("finished" if status == "success" else "failed")
            self.hook = None
