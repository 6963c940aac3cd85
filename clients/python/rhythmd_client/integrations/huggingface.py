"""🤗 Transformers callback: ``Trainer(..., callbacks=[RhythmdTrainerCallback(url)])``.

The loss of every optimizer step is read from the model's own outputs (a forward hook on the
model, training mode only, detached, no device sync), so the rhythm is per step whatever
``logging_steps`` is and the user's other loggers see nothing more. Micro-batches of one step
(gradient accumulation) are combined: summed when the model normalised its loss by the
step's token count (``num_items_in_batch``), else averaged. A model whose outputs carry no
``loss`` (a custom ``compute_loss``) falls back to the Trainer's logged ``loss`` (every
``logging_steps``). Recommendations are applied at ``on_step_end`` to the Trainer's optimizer
and scheduler; snapshots of model, optimizer and scheduler are kept in memory.

Resuming: the callback is a ``transformers`` ``ExportableState``, so each checkpoint's
``trainer_state.json`` holds its constructor arguments (those that are JSON values) and the
hook's state. ``trainer.train(resume_from_checkpoint=...)`` with
``TrainingArguments(restore_callback_states_from_checkpoint=True)`` continues the same
rhythmd run (see :meth:`~rhythmd_client.RhythmHook.load_state_dict`); without that
argument, 🤗 Trainer does not restore callbacks and a new run starts.
"""

from __future__ import annotations

import json
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import TRAINER_ACTIONS, StepMap, log_once, metric_roles

_EVAL_SKIP = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def _json_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments that survive JSON (sets as sorted lists); the others are left out."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, (set, frozenset)):
            value = sorted(value)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


class RhythmdTrainerCallback(TrainerCallback, ExportableState):
    """Streams the per-step ``loss`` and the ``eval_*`` metrics (as ``val_*``) to rhythmd and
    applies its recommendations, rollbacks and reverts included.

    Args:
        url, run_name, project: as for :class:`~rhythmd_client.RhythmHook`.
        metrics: roles of the evaluation metrics, e.g. ``{"val_accuracy": "max"}`` (sent as
            the run config's ``"metrics"``; names as streamed, ``eval_x`` -> ``val_x``).
        hook_kwargs: passed to the hook (``mode``, ``allow``, ``snapshot_max_bytes``,
            ``snapshot_every``, ``reflex``, ``token``, …); ``allow`` defaults to every action.
    """

    def __init__(self, url: str | None = None, run_name: str | None = None,
                 project: str | None = None, metrics: dict[str, str] | None = None,
                 **hook_kwargs: Any) -> None:
        self._args = _json_args({"url": url, "run_name": run_name, "project": project,
                                 "metrics": metrics, **hook_kwargs})
        self.url = url
        self.run_name = run_name
        self.project = project
        self.metrics = dict(metrics or {})
        self.hook_kwargs = {"allow": TRAINER_ACTIONS, **hook_kwargs}
        self.hook: RhythmHook | None = None
        self.run_id: str | None = None
        self._steps = StepMap()
        self._losses: list[Any] = []
        self._normalised = False
        self._seen_model_loss = False
        self._handle: Any = None
        self._failed: set[str] = set()
        self.resume_state: dict[str, Any] | None = None  # set by the Trainer on a resume
        self._final: dict[str, Any] | None = None  # the state at the end of the last train()

    def state(self) -> dict[str, Any]:
        """What 🤗 Trainer saves in each checkpoint (``ExportableState``)."""
        saved = self.resume_state or self._final
        if self.hook is not None:
            saved = {"hook": self.hook.state_dict(), "step_offset": self._steps.offset}
        return {"args": dict(self._args), "attributes": {"resume_state": saved}}

    # ---------------------------------------------------------------- lifecycle
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        config = dict(self.hook_kwargs.pop("config", None) or {})
        if getattr(state, "max_steps", 0):
            config.setdefault("total_steps", int(state.max_steps))
        roles = metric_roles((), self.metrics)
        if roles:
            config.setdefault("metrics", roles)
        hook_args = dict(self.hook_kwargs)
        snap_model = hook_args.pop("model", model)  # model=None: no snapshots
        resume, self.resume_state = self.resume_state or {}, None
        saved = resume.get("hook") or {}
        if isinstance(saved.get("run_id"), str):
            hook_args.setdefault("run_id", saved["run_id"])  # continue the checkpoint's run
        self.hook = RhythmHook(self.url, run_name=self.run_name or args.run_name or "hf-run",
                               project=self.project, optimizer=optimizer, model=snap_model,
                               scheduler=lr_scheduler, config=config, **hook_args)
        if saved:  # the Trainer restored the optimizer and scheduler before this event
            try:
                self.hook.load_state_dict(saved)
                self._steps.offset = int(resume.get("step_offset") or 0)
            except Exception as exc:
                log_once(self._failed, "Trainer callback resume", exc)
        self.run_id = self.hook.run_id
        if model is not None and hasattr(model, "register_forward_hook"):
            self._handle = model.register_forward_hook(self._on_forward, with_kwargs=True)

    def _on_forward(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        """Keep each training micro-batch's loss (detached; nothing is read)."""
        try:
            if not module.training:
                return
            loss = output.get("loss") if hasattr(output, "get") else None
            if loss is None or not hasattr(loss, "detach"):
                return
            self._losses.append(loss.detach())
            self._normalised = kwargs.get("num_items_in_batch") is not None
            self._seen_model_loss = True
        except Exception:  # never raise into the model's forward
            self._losses.clear()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        hook = self.hook
        if hook is None:
            return
        try:
            losses, self._losses = self._losses, []
            if losses:
                loss = losses[0]
                if len(losses) > 1:  # device ops, no sync
                    loss = sum(losses[1:], losses[0])
                    if not self._normalised:
                        loss = loss / len(losses)
                self._steps.step(hook, int(state.global_step), loss=loss)
            if hook.should_stop:
                control.should_training_stop = True
        except Exception as exc:
            log_once(self._failed, "Trainer callback on_step_end", exc)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        hook = self.hook
        if hook is None or not logs:
            return
        try:
            trainer_step = int(state.global_step)
            if "loss" in logs and not self._seen_model_loss:
                self._steps.step(hook, trainer_step, loss=logs["loss"],
                                 grad_norm=logs.get("grad_norm"))
            evals = {("val_" + k[5:]): v for k, v in logs.items() if k.startswith("eval_")
                     and isinstance(v, (int, float)) and k not in _EVAL_SKIP}
            if evals:
                hook.log(self._steps(trainer_step), **evals)
            if hook.should_stop:
                control.should_training_stop = True
        except Exception as exc:
            log_once(self._failed, "Trainer callback on_log", exc)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.hook is not None:  # keep its last state for a save_state() after training
            try:
                self._final = self.state()["attributes"]["resume_state"]
            except Exception as exc:
                log_once(self._failed, "Trainer callback state", exc)
            self.hook.close()
            self.hook = None
