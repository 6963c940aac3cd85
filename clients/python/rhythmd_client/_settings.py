"""Where the hook's URL, token and mode come from: an argument, else the environment.

As in W&B (``wandb.init`` arguments override ``WANDB_*`` variables), an argument given to
the hook (not ``None``) wins; otherwise ``RHYTHMD_URL``, ``RHYTHMD_TOKEN`` and
``RHYTHMD_MODE`` are read; otherwise the defaults below apply. An empty variable counts as
unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODE = "apply"
MODES = ("disabled", "advise", "apply")
"""``disabled``: a no-op hook (no network, no optimizer access); ``advise``: stream and log
the advice, change nothing; ``apply``: stream and apply the allowed advice."""


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def resolve(url: str | None, token: str | None, mode: str | None,
            environ: Mapping[str, str] | None = None) -> tuple[str, str | None, str]:
    """``(url, token, mode)``: each argument, else its ``RHYTHMD_*`` variable, else the
    default. Raises ``ValueError`` for a mode outside :data:`MODES`, naming its source."""
    env = os.environ if environ is None else environ
    url = url if url is not None else (_env(env, "RHYTHMD_URL") or DEFAULT_URL)
    token = token if token is not None else _env(env, "RHYTHMD_TOKEN")
    source = "mode"
    if mode is None:
        mode = _env(env, "RHYTHMD_MODE")
        source = "RHYTHMD_MODE"
        if mode is None:
            mode = DEFAULT_MODE
        mode = mode.lower()
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {', '.join(MODES)}, got {mode!r}")
    return url, token, mode
