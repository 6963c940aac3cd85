"""🤗 Transformers callback: ``Trainer(..., callbacks=[RhythmdTrainerCallback(url)])``.

The Trainer reports its loss through ``on_log`` every ``logging_steps`` optimizer steps
(averaged over them); set ``logging_steps=1`` for per-step rhythm. Recommendations are applied
on those steps, to the Trainer's optimizer and its (LambdaLR) scheduler.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import TRAINER_ACTIONS


class RhythmdTrainerCallback(TrainerCallback):
    """Streams ``loss`` and ``eval_*`` logs to rhythmd and applies its recommendations.

    Args:
        url, run_name, project: as for :class:`~rhythmd_client.RhythmHook`.
        hook_kwargs: passed to the hook; ``allow`` defaults to every action but ``rollback``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", run_name: str | None = None,
                 project: str | None = None, **hook_kwargs: Any) -> None:
        self.url = url
        self.run_name = run_name
        self.project = project
        self.hook_kwargs = {"allow": TRAINER_ACTIONS, **hook_kwargs}
        self.hook: RhythmHook | None = None
        self.run_id: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        config = dict(self.hook_kwargs.pop("config", None) or {})
        if getattr(state, "max_steps", 0):
            config.setdefault("total_steps", int(state.max_steps))
        self.hook = RhythmHook(self.url, run_name=self.run_name or args.run_name or "hf-run",
                               project=self.project, optimizer=optimizer,
                               scheduler=lr_scheduler, config=config, **self.hook_kwargs)
        self.run_id = self.hook.run_id

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        hook = self.hook
        if hook is None or not logs:
            return
        step = int(state.global_step)
        if "loss" in logs:
            hook.step(step, loss=logs["loss"], grad_norm=logs.get("grad_norm"))
        evals = {("val_" + k[5:]): v for k, v in logs.items()
                 if k.startswith("eval_") and isinstance(v, (int, float))
                 and k not in ("eval_runtime", "eval_samples_per_second",
                               "eval_steps_per_second")}
        if evals:
            hook.log(step, **evals)
        if hook.should_stop:
            control.should_training_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.hook is not None and self.hook.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.hook is not None:
            self.hook.close()
            self.hook = None
