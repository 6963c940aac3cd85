"""Runs: creation, ending, and the run row as the API shows it."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from rhythmd.errors import ConflictError, InvalidInputError, NotFoundError
from rhythmd.run_status import ENDINGS
from rhythmd.store import Store
from rhythmd.store import recommendations as recs_q
from rhythmd.store import runs as runs_q

log = logging.getLogger("rhythmd.service")

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def run_row(conn: Any, run_id: str) -> Any:
    """The run's row; raises :class:`NotFoundError`."""
    row = runs_q.get_run(conn, run_id).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return row


def run_dict(row: Any, lost_rule: runs_q.LostRule) -> dict[str, Any]:
    """The run as the API shows it, with its display ``state``."""
    out = runs_q.run_to_dict(row)
    out["state"] = runs_q.display_status(row, lost_rule, time.time())
    return out


class Runs:
    """Creating and ending runs."""

    def __init__(self, store: Store, lost_rule: runs_q.LostRule) -> None:
        self.store = store
        self.lost_rule = lost_rule

    def create(self, name: str, project: str | None = None,
               config: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
               run_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Create a run; with an existing ``run_id`` return it instead (created = False)."""
        if run_id is not None and not RUN_ID_RE.match(run_id):
            raise InvalidInputError(("body", "run_id"),
                                    "run_id must be 1-64 characters of A-Z a-z 0-9 _ . -", run_id)
        rid = run_id or uuid.uuid4().hex
        with self.store.write(rid) as conn:
            existing = runs_q.get_run(conn, rid).first()
            if existing is not None:
                if existing["name"] != name or existing["project"] != project:
                    raise ConflictError(
                        f"run {rid!r} exists with name {existing['name']!r} and project "
                        f"{existing['project']!r}: use another run_id or the same name and project"
                    )
                return run_dict(existing, self.lost_rule), False
            runs_q.insert_run(conn, rid, name, project, config, tags)
            log.info("run created: %s", name, extra={"run_id": rid, "project": project})
            return run_dict(run_row(conn, rid), self.lost_rule), True

    def finish(self, run_id: str, status: str, step: int | None) -> dict[str, Any]:
        """End a run with one of :data:`rhythmd.run_status.ENDINGS`."""
        if status not in ENDINGS:
            raise InvalidInputError(("body", "status"),
                                    f"status must be one of {', '.join(ENDINGS)}", status)
        with self.store.write(run_id) as conn:
            run_row(conn, run_id)
            runs_q.set_status(conn, run_id, status, step)
            recs_q.add_event(conn, run_id, "run_finished", step, {"status": status})
            return run_dict(run_row(conn, run_id), self.lost_rule)
