"""Tables (SQLAlchemy Core) and the schema-version check.

Points are stored in columnar chunks: one row per (run, metric, batch) holding the steps,
values and wall times packed as little-endian int64/float64 arrays. Packed floats keep NaN,
+Inf and -Inf exactly on every backend (SQLite would turn a NaN column value into NULL), and
one row per batch stores well above the speed of one row per point.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    text,
)

from rhythmd.errors import SchemaTooNewError

SCHEMA_VERSION = 1
"""The schema this code reads and writes. Bump it with a migration in ``MIGRATIONS``."""

metadata = MetaData()

schema_version = Table(
    "rhythmd_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("project", String(128), nullable=True),
    Column("config", Text, nullable=True),  # JSON
    Column("tags", Text, nullable=True),  # JSON
    Column("status", String(16), nullable=False, default="running"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_step", BigInteger, nullable=True),
    Column("next_seq", BigInteger, nullable=False, default=0),
    Column("n_points", BigInteger, nullable=False, default=0),
    Column("n_batches", BigInteger, nullable=False, default=0),
    Column("max_branch", Integer, nullable=False, default=0),
    # Derived from the open diagnoses: healthy, diverging, stagnating, oscillating or slow.
    Column("health", String(16), nullable=False, default="healthy"),
    # Moving average of the seconds between batches, for the `lost` verdict.
    Column("interval_s", Float, nullable=True),
    Index("ix_runs_project_created", "project", "created_at"),
    Index("ix_runs_created", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("batch_id", String(128), primary_key=True),
    Column("seq_start", BigInteger, nullable=False),
    Column("n_points", Integer, nullable=False),
    Column("branch", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
)

branches = Table(
    "branches",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("branch", Integer, primary_key=True),
    Column("start_step", BigInteger, nullable=True),
    Column("parent_branch", Integer, nullable=True),
    Column("created_seq", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("series_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("n_points", BigInteger, nullable=False, default=0),
    Column("n_nonfinite", BigInteger, nullable=False, default=0),
    Column("first_step", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    UniqueConstraint("run_id", "name", name="uq_series_run_name"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("chunk_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("series_id", Integer, ForeignKey("series.series_id", ondelete="CASCADE"),
           nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("seq_start", BigInteger, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),  # seq_start of the batch it came in
    Column("branch", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("min_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    Column("n_nonfinite", Integer, nullable=False),
    Column("vmin", Float, nullable=True),  # finite minimum, NULL when none
    Column("vmax", Float, nullable=True),  # finite maximum, NULL when none
    Column("steps", LargeBinary, nullable=False),  # <i8
    Column("values", LargeBinary, nullable=False),  # <f8, non-finite kept exactly
    Column("wall_times", LargeBinary, nullable=True),  # <f8 unix seconds
    Index("ix_chunks_series_branch_step", "series_id", "branch", "min_step"),
    Index("ix_chunks_run_seq", "run_id", "seq_start"),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("rec_id", String(64), primary_key=True),
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("action", String(32), nullable=False),
    Column("params", Text, nullable=False),  # JSON
    Column("reason", Text, nullable=False),
    Column("diagnosis_id", String(64), nullable=True),
    Column("author", String(128), nullable=False),
    Column("issued_at_step", BigInteger, nullable=True),
    Column("expires_at_step", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("applied_step", BigInteger, nullable=True),
    Column("lr_before", Text, nullable=True),  # JSON list, one per param group
    Column("lr_after", Text, nullable=True),  # JSON list
    Column("note", Text, nullable=True),
    Index("ix_recommendations_run_status", "run_id", "status"),
)

events = Table(
    "events",
    metadata,
    Column("event_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("step", BigInteger, nullable=True),
    Column("wall_time", Float, nullable=False),
    Column("ref_id", String(64), nullable=True),
    Column("payload", Text, nullable=False),  # JSON
    Column("processed", Boolean, nullable=False, default=False),
    Index("ix_events_run", "run_id", "event_id"),
)

analysis_state = Table(
    "analysis_state",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    # Points with an arrival sequence number below this were fed to the saved state; a daemon
    # (any replica, or a restarted one) continues from it by replaying only the later points.
    Column("analyzed_seq", BigInteger, nullable=False),
    Column("state", Text, nullable=False),  # JSON of RunAnalyzer.state_dict()
    Column("updated_at", Float, nullable=False),
)

diagnoses = Table(
    "diagnoses",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("diagnosis_id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # open | closed
    Column("detected_at_step", BigInteger, nullable=True),
    Column("data", Text, nullable=False),  # JSON of Diagnosis.to_dict()
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_diagnoses_run_kind", "run_id", "kind"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("run_id", String(64), nullable=True),
    Column("kind", String(48), nullable=False),
    Column("payload", Text, nullable=False),  # JSON body to POST
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Index("ix_outbox_due", "status", "next_attempt_at"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_id", String(16), primary_key=True),  # public part, shown in listings
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 of the token
    Column("project", String(128), nullable=False),  # a project, or "*" for all
    Column("scope", String(16), nullable=False),  # ingest | read | steer | admin
    Column("description", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

_INIT_LOCK_KEY = 0x7268_7974_686D_6400 >> 1  # "rhythmd", fits a signed bigint


def init_schema(engine: Engine) -> int:
    """Create missing tables and record the version; refuse a database newer than this code.

    On PostgreSQL, concurrent daemon processes starting together serialise on an advisory lock.
    Returns the schema version in use.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _INIT_LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        found = conn.execute(select(schema_version.c.version)).scalars().all()
        current = max(found) if found else None
        if current is not None and current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the database schema is version {current}, but this rhythmd only knows "
                f"versions up to {SCHEMA_VERSION}: upgrade rhythmd (pip install -U rhythmd) "
                "or point RHYTHMD_DATABASE_URL at another database"
            )
        metadata.create_all(conn, checkfirst=True)
        if engine.dialect.name == "postgresql":
            _compress_chunks_with_lz4(conn)
        if current is None:
            conn.execute(insert(schema_version).values(version=SCHEMA_VERSION,
                                                       applied_at=time.time()))
        elif current < SCHEMA_VERSION:
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                conn.execute(insert(schema_version).values(version=version,
                                                           applied_at=time.time()))
    return SCHEMA_VERSION


_LZ4_COLUMNS = ("steps", "values", "wall_times")


def _compress_chunks_with_lz4(conn: Connection) -> None:
    """PostgreSQL 14+ built with lz4: the chunks' packed arrays are compressed with lz4
    rather than the default pglz, which costs the server about 1 ms of CPU per 1,000-point
    chunk (four to five times lz4's) for about a quarter less space. Applies to the values
    written from then on (the older ones stay readable as they are); nothing to do once set,
    or on a server without lz4."""
    has_lz4 = conn.execute(text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
        "WHERE name = 'default_toast_compression'")).scalar()
    if not has_lz4:
        return
    pending = conn.execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
        "AND attname = ANY(:cols) AND attcompression <> 'l'"),
        {"cols": list(_LZ4_COLUMNS)}).scalars().all()
    if pending:
        conn.execute(text("ALTER TABLE chunks " + ", ".join(
            f'ALTER COLUMN "{c}" SET COMPRESSION lz4' for c in pending)))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
"""version -> callable(connection) that upgrades from version - 1 (none yet)."""
