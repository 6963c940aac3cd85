"""Branches: their lineage (which steps of which branch make up a branch's view)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from rhythmd.store.schema import branches, chunks


def abandoned_until(conn: Connection, run_id: str, parent: int, before_seq: int) -> int | None:
    """The highest step branch ``parent`` had reached before sequence number ``before_seq``."""
    return conn.execute(select(func.max(chunks.c.max_step)).where(
        chunks.c.run_id == run_id, chunks.c.branch == parent,
        chunks.c.seq_start < before_seq)).scalar()


def lineage(conn: Connection, run_id: str, branch: int) -> list[tuple[int, int | None, int | None]]:
    """The (branch, lo, hi) step windows that make up the view of ``branch``.

    A branch shows its own points from its start step on, and its ancestors' points below the
    start of the child that replaced them: after a rollback to step 400 on branch 1, the view of
    branch 1 is branch 0's steps < 400 followed by branch 1's steps >= 400.
    """
    rows = {r.branch: r for r in conn.execute(select(branches).where(branches.c.run_id == run_id))}
    out: list[tuple[int, int | None, int | None]] = []
    hi: int | None = None
    current: int | None = branch
    visited: set[int] = set()
    while current is not None and current not in visited:
        visited.add(current)
        row = rows.get(current)
        lo = row.start_step if row is not None and current != 0 else None
        out.append((current, lo, hi))
        if row is None:
            break
        if lo is not None:
            hi = lo if hi is None else min(hi, lo)
        current = row.parent_branch
    return out
