"""PostgreSQL: the chunks' packed arrays are compressed with lz4 where the server has it (pglz
costs the server several times the CPU per chunk written); set once, kept across restarts."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from rhythmd.store import Store


def _compression(store: Store) -> dict[str, str]:
    with store.read() as conn:
        return dict(conn.execute(text(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = "
            "'chunks'::regclass AND attname IN ('steps', 'values', 'wall_times')")).all())


def test_chunks_compressed_with_lz4_once(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.open()
    with store.read() as conn:
        has_lz4 = conn.execute(text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
            "WHERE name = 'default_toast_compression'")).scalar()
    if not has_lz4:
        store.close()
        pytest.skip("PostgreSQL without lz4")
    assert _compression(store) == {"steps": "l", "values": "l", "wall_times": "l"}
    store.close()
    again = Store(postgres_url)
    altered: list[str] = []
    event.listen(again.engine, "before_cursor_execute",
                 lambda conn, cur, sql, *a: altered.append(sql) if "ALTER" in sql else None)
    again.open()  # a restart: nothing left to alter
    assert altered == []
    again.close()
