"""Access: API tokens, and the project a run belongs to (for per-project scopes)."""

from __future__ import annotations

import logging
from typing import Any

from rhythmd.auth import Principal
from rhythmd.core.runs import run_row
from rhythmd.errors import InvalidInputError, NotFoundError
from rhythmd.store import Store
from rhythmd.store import tokens as tokens_q
from rhythmd.store.token_watch import TokenVerifier

log = logging.getLogger("rhythmd.service")


class Access:
    """Token verification and management, and the runs' projects (cached: immutable)."""

    MAX_CACHED_PROJECTS = 100_000

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tokens = TokenVerifier(store)
        self._projects: dict[str, str | None] = {}

    def verify_token(self, token: str) -> Principal | None:
        """The principal of a stored, unrevoked token (a revocation holds at once on SQLite,
        within a second on every PostgreSQL process: ``rhythmd.store.token_watch``)."""
        return self._tokens.verify(token)

    def token_project(self, token_id: str) -> str | None:
        """The project of an active token (None when there is none)."""
        with self.store.read() as conn:
            return tokens_q.token_project(conn, token_id)

    def cached_project(self, run_id: str) -> tuple[bool, str | None]:
        """``(True, project)`` when the run's project is cached, else ``(False, None)``: no
        database read (for callers on the event loop)."""
        if run_id in self._projects:
            return True, self._projects[run_id]
        return False, None

    def run_project(self, run_id: str) -> str | None:
        """A run's project (read once, then cached). Raises NotFoundError."""
        if run_id in self._projects:
            return self._projects[run_id]
        with self.store.read() as conn:
            project = run_row(conn, run_id)["project"]
        if len(self._projects) > self.MAX_CACHED_PROJECTS:
            self._projects.clear()
        self._projects[run_id] = project
        return project

    def create_token(self, project: str, scope: str, description: str | None = None
                     ) -> dict[str, Any]:
        if scope not in tokens_q.SCOPES:
            raise InvalidInputError(("body", "scope"),
                                    f"scope must be one of {', '.join(tokens_q.SCOPES)}", scope)
        with self.store.write() as conn:
            token_id, token = tokens_q.create_token(conn, project, scope, description)
        log.info("token created", extra={"token_id": token_id, "project": project,
                                         "scope": scope})
        return {"token_id": token_id, "token": token, "project": project, "scope": scope,
                "description": description}

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return tokens_q.list_tokens(conn)

    def revoke_token(self, token_id: str) -> None:
        with self.store.write() as conn:
            if not tokens_q.revoke_token(conn, token_id):
                raise NotFoundError(f"no active token {token_id!r}")
        self._tokens.invalidate()

    def close(self) -> None:
        """Stop the token revocation watch."""
        self._tokens.close()
