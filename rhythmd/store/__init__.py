"""Storage: one SQLAlchemy URL, from a SQLite file to a PostgreSQL shared by many daemons."""

from rhythmd.store.store import Store

__all__ = ["Store"]
