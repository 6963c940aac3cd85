"""Domain errors. The API layer maps each to an HTTP status; nothing here knows about HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RhythmdError(Exception):
    """Base class of every error rhythmd raises on purpose."""


class ConfigurationError(RhythmdError):
    """The daemon cannot start with these settings; the message says what to change."""


class SchemaTooNewError(ConfigurationError):
    """The database was written by a newer rhythmd."""


class NotFoundError(RhythmdError):
    """A run, metric or recommendation that does not exist."""


class ConflictError(RhythmdError):
    """The request contradicts stored state (e.g. acknowledging a recommendation twice)."""


class InvalidInputError(RhythmdError):
    """Malformed input. ``loc`` names the offending field, as FastAPI's 422 errors do."""

    def __init__(self, loc: Sequence[str | int], msg: str, input_value: Any = None) -> None:
        super().__init__(msg)
        self.loc = tuple(loc)
        self.msg = msg
        self.input_value = input_value

    def detail(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"type": "value_error", "loc": list(self.loc), "msg": self.msg}
        if self.input_value is not None:
            item["input"] = self.input_value
        return [item]


class TooLargeError(RhythmdError):
    """A request above a documented size limit (413)."""


class StoreUnavailableError(RhythmdError):
    """The database cannot be reached right now; retry later (503)."""
