"""Daemon settings, read from ``RHYTHMD_*`` environment variables (and CLI flags)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./rhythmd.db"


class Settings(BaseSettings):
    """Every setting of the daemon. Each field is also ``RHYTHMD_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RHYTHMD_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description=(
            "SQLAlchemy URL of the store. Default: a SQLite file (WAL mode) in the working "
            "directory, single-process mode. postgresql+psycopg://user@host/db for several "
            "daemon processes sharing one database."
        ),
    )
    host: str = Field("127.0.0.1", description="Address to bind (rhythmd serve).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind (rhythmd serve).")
    workers: int = Field(
        1, ge=1, description="Daemon processes (rhythmd serve). More than 1 needs PostgreSQL."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: str = Field("text", pattern="^(text|json)$",
                            description="Log lines as `text` (key=value) or `json`.")
    access_log: bool = Field(
        False, description="`rhythmd serve` logs every HTTP request (uvicorn's access log). Off "
        "by default: hundreds of jobs flushing several times a second make it most of the log "
        "and a measurable share of the CPU; rejected requests are logged either way."
    )
    max_body_bytes: int = Field(
        16 * 2**20, ge=1024, description="Largest accepted request body, in bytes (413 above)."
    )
    max_points_per_batch: int = Field(
        200_000, ge=1, description="Most points (summed over series) in one metrics batch (413)."
    )
    max_series_per_batch: int = Field(
        1_000, ge=1, description="Most series in one metrics batch (413 above)."
    )
    max_page_size: int = Field(500, ge=1, description="Largest `limit` of a run listing page.")
    analysis: bool = Field(
        True, description="Analyse every ingested batch (diagnoses). Off only for comparisons."
    )
    lost_after_intervals: float = Field(
        20.0, gt=0, description="A running run that sends nothing for this many times its usual "
        "interval between batches is `lost`."
    )
    lost_min_seconds: float = Field(
        60.0, ge=0, description="...and for at least this many seconds."
    )
    webhook_url: str | None = Field(
        None, description="POST a Slack-compatible JSON message here when a diagnosis opens or "
        "escalates and when a recommendation is applied or rejected (retried with backoff)."
    )
    webhook_min_severity: str = Field(
        "warning", pattern="^(info|warning|high|critical)$",
        description="Least severe diagnosis that alerts."
    )
    webhook_max_attempts: int = Field(8, ge=1, description="Tries per webhook before giving up.")
    public_url: str | None = Field(
        None, description="The daemon's address as people reach it, for links in alerts."
    )
    auth: str = Field(
        "off", pattern="^(off|required)$",
        description="`required`: every /v1 request needs a bearer token (rhythmd token create)."
    )
    admin_token: str | None = Field(
        None, min_length=16,
        description="A bootstrap admin token for all projects (e.g. from an env file)."
    )
    insecure: bool = Field(
        False, description="Serve a non-loopback address without authentication (not advised)."
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's line and headers "
        "(from its first byte); slower connections get 408 and are closed.")
    db_pool_size: int = Field(8, ge=1, description="Connections per process (PostgreSQL).")
    ingest_concurrency: int = Field(
        1, ge=1, description="Ingest transactions one process runs at the same time; the "
        "batches that arrive meanwhile wait and are then stored together (group commit). "
        "SQLite runs one at a time whatever the setting.")
    ingest_group_max: int = Field(
        32, ge=1, description="Batches of distinct runs that waited meanwhile are stored "
        "together, at most this many per transaction (group commit).")
    gc_threshold: int = Field(
        50_000, ge=0, description="The cyclic garbage collector's first threshold (net new "
        "container objects between young collections; Python's default is 700); 0 keeps "
        "Python's. Most of the daemon's objects die by reference counting within a request, so "
        "a high threshold spares it most collections and their pauses.")
