"""🤗 Accelerate tracker: ``Accelerator(log_with=[RhythmdTracker("run")])`` streams to rhythmd.

What ``accelerator.log(values, step=step)`` hands the trackers goes to a
:class:`~rhythmd_client.RhythmHook`: a training loss among the values (``loss``,
``train_loss``, ``train/loss``, ...) becomes the hook's ``loss`` stream (one step boundary per
call), the other numbers keep their names, and ``init_trackers(config=...)`` becomes the run
config. Strings are not streamed. A tracker only sees logged values, so without
``optimizer=`` it advises only (recommendations are logged and acknowledged as rejected);
given the optimizer (and scheduler, model), it applies them as the hook does, at the
``accelerator.log`` calls that carry the loss. The hook starts at the first log, so the
config given to ``init_trackers`` is in the run from its creation.
"""

from __future__ import annotations

from typing import Any

from accelerate.tracking import GeneralTracker

from rhythmd_client._settings import resolve
from rhythmd_client.hook import RhythmHook
from rhythmd_client.integrations import TRAIN_LOSS_NAMES, log_once, plain_config


class RhythmdTracker(GeneralTracker):
    """An Accelerate ``GeneralTracker`` that streams logged values to a rhythmd daemon.

    Args:
        run_name: the run's name (Accelerate's project name is not used: ``project=``).
        url, project: as for :class:`~rhythmd_client.RhythmHook` (url: ``$RHYTHMD_URL``...).
        optimizer, scheduler, model: let the hook apply advice (see the module docstring).
        hook_kwargs: passed to the hook (``mode``, ``token``, ``interval_s``, ...); ``mode``
            defaults to ``"advise"`` without an optimizer (``"disabled"`` still wins when set
            in ``RHYTHMD_MODE``).
    """

    name = "rhythmd"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_name: str = "accelerate-run", url: str | None = None,
                 project: str | None = None, **hook_kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.url = url
        self.project = project
        if hook_kwargs.get("optimizer") is None and hook_kwargs.get("mode") is None:
            off = resolve(url, None, None)[2] == "disabled"
            hook_kwargs["mode"] = "disabled" if off else "advise"
        self.hook_kwargs = hook_kwargs
        self.config: dict[str, Any] = {}
        self.hook: RhythmHook | None = None
        self.run_id: str | None = None  # the daemon's run id, kept after finish
        self._calls = 0
        self._failed: set[str] = set()

    @property
    def tracker(self) -> RhythmHook | None:
        """The hook (``None`` before the first log and after :meth:`finish`)."""
        return self.hook

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """Keep ``values`` as the run config (sent when the run is created)."""
        try:
            self.config.update(plain_config(dict(values)))
        except Exception as exc:
            log_once(self._failed, "Accelerate tracker store_init_configuration", exc)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Stream ``values`` at ``step`` (default: the number of earlier calls)."""
        try:
            if self.hook is None:
                self.hook = RhythmHook(self.url, run_name=self.run_name, project=self.project,
                                       config=self.config or None, **self.hook_kwargs)
                self.run_id = self.hook.run_id
            at = int(step) if step is not None else self._calls
            self._calls += 1
            numbers = {k: v for k, v in values.items() if not isinstance(v, str)}
            loss = next((numbers.pop(k) for k in TRAIN_LOSS_NAMES if k in numbers), None)
            if loss is not None:
                self.hook.step(at, loss=loss)
            if numbers:
                self.hook.log(numbers, step=at)
        except Exception as exc:
            log_once(self._failed, "Accelerate tracker log", exc)

    def finish(self) -> None:
        """Flush and finish the run (``accelerator.end_training()`` calls this)."""
        if self.hook is not None:
            self.hook.close()
            self.hook = None
