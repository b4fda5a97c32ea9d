"""The daemon's connection pool, against real PostgreSQL."""

from __future__ import annotations

import asyncio

from coordd.storage.db import Database


async def test_statements_one_after_another_reuse_the_connection_returned_last(
    pg_dsn: str,
) -> None:
    db = Database(pg_dsn, min_size=3, max_size=3)
    await db.open()
    try:
        # Three connections in use at once, so the pool holds three idle ones afterwards.
        held = [await db.pool.getconn() for _ in range(3)]
        for conn in held:
            await db.pool.putconn(conn)
        backends = [(await db.fetchone("SELECT pg_backend_pid() AS pid")).pid for _ in range(6)]
        # psycopg's own pool would hand the three out in turn (a, b, c, a, b, c).
        assert len(set(backends)) == 1, backends
        # Concurrent statements still get connections of their own.
        rows = await asyncio.gather(
            *(db.fetchone("SELECT pg_backend_pid() AS pid, pg_sleep(0.01)") for _ in range(3))
        )
        assert len({r.pid for r in rows}) == 3
    finally:
        await db.close()
