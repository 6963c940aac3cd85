"""API tokens, stored as SHA-256 hashes (tokens are random, so a plain hash is enough)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import Connection, insert, select, text, update

from rhythmd.store.schema import tokens

SCOPES = ("ingest", "read", "steer", "admin")
PREFIX = "rhd"
CHANNEL = "rhythmd_tokens"
"""PostgreSQL channel on which revocations are announced (``rhythmd.store.token_watch``)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: Connection, project: str, scope: str, description: str | None = None
                 ) -> tuple[str, str]:
    """Create a token; returns (token_id, token). The token itself is shown only once."""
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(24)}"
    conn.execute(insert(tokens).values(token_id=token_id, token_hash=hash_token(token),
                                       project=project, scope=scope, description=description,
                                       created_at=time.time(), revoked_at=None))
    return token_id, token


def find_token(conn: Connection, token: str) -> Any | None:
    return conn.execute(select(tokens).where(tokens.c.token_hash == hash_token(token),
                                             tokens.c.revoked_at.is_(None))).mappings().first()


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(tokens).order_by(tokens.c.created_at)).mappings()
    return [{"token_id": r["token_id"], "project": r["project"], "scope": r["scope"],
             "description": r["description"], "created_at": r["created_at"],
             "revoked": r["revoked_at"] is not None} for r in rows]


def token_project(conn: Connection, token_id: str) -> str | None:
    """The project of an active token, or None when there is no such token."""
    return conn.execute(select(tokens.c.project).where(
        tokens.c.token_id == token_id, tokens.c.revoked_at.is_(None))).scalar_one_or_none()


def revoke_token(conn: Connection, token_id: str) -> bool:
    """Revoke; on PostgreSQL every daemon process hears of it when the transaction commits."""
    done = conn.execute(update(tokens).where(tokens.c.token_id == token_id,
                                             tokens.c.revoked_at.is_(None))
                        .values(revoked_at=time.time()))
    if done.rowcount and conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, :token_id)"),
                     {"channel": CHANNEL, "token_id": token_id})
    return bool(done.rowcount)
