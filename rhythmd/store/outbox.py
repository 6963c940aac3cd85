"""The webhook outbox: rows written in the transaction that caused them, sent by a dispatcher.

Claiming rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) and a claim deadline means several
daemon processes can run dispatchers and each webhook is sent once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, exists, insert, or_, select, update

from rhythmd.store.schema import outbox


def enqueue(conn: Connection, run_id: str | None, kind: str, payload: dict[str, Any]) -> None:
    now = time.time()
    conn.execute(insert(outbox).values(run_id=run_id, kind=kind, payload=json.dumps(payload),
                                       status="pending", attempts=0, next_attempt_at=now,
                                       created_at=now))


def claim(conn: Connection, limit: int, lease_s: float) -> list[tuple[int, int, str]]:
    """Claim up to ``limit`` due rows for ``lease_s`` seconds: (id, attempts, payload).

    Messages of one run go out in order: a row waits while an earlier one of its run is still
    pending (being retried)."""
    now = time.time()
    earlier = outbox.alias("earlier")
    blocked = exists().where(earlier.c.run_id == outbox.c.run_id,
                             earlier.c.status == "pending",
                             earlier.c.outbox_id < outbox.c.outbox_id)
    rows = conn.execute(
        select(outbox.c.outbox_id, outbox.c.attempts, outbox.c.payload)
        .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
               or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now), ~blocked)
        .order_by(outbox.c.outbox_id).limit(limit)
        .with_for_update(skip_locked=True, of=outbox)).all()
    if rows:
        conn.execute(update(outbox).where(outbox.c.outbox_id.in_([r[0] for r in rows]))
                     .values(claimed_until=now + lease_s))
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def mark_sent(conn: Connection, outbox_id: int) -> None:
    conn.execute(update(outbox).where(outbox.c.outbox_id == outbox_id)
                 .values(status="sent", attempts=outbox.c.attempts + 1, claimed_until=None))


def mark_failed(conn: Connection, outbox_id: int, attempts: int, error: str, retry_at: float | None
                ) -> None:
    """Record a failed try: retry at ``retry_at``, or give up when it is None."""
    conn.execute(update(outbox).where(outbox.c.outbox_id == outbox_id).values(
        status="pending" if retry_at is not None else "failed", attempts=attempts,
        next_attempt_at=retry_at if retry_at is not None else time.time(),
        claimed_until=None, last_error=error[:500]))
