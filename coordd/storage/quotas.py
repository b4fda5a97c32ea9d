"""Quotas as the policy file sets them, written where the write triggers check them."""

from __future__ import annotations

from coordd.domain.access import Quota
from coordd.storage.db import Database


class QuotaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def replace(self, quotas: tuple[Quota, ...]) -> None:
        """Make *quotas* the only ones in force (one transaction: no moment without them)."""
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM coordd.quotas")
            for q in quotas:
                await conn.execute(
                    "INSERT INTO coordd.quotas (namespace, kind, max_entries, max_bytes)"
                    " VALUES (%s, %s, %s, %s)",
                    (q.namespace, q.kind, q.max_entries, q.max_bytes),
                )

    async def usage(self, namespace: str) -> dict[str, tuple[int, int]]:
        """(entries, bytes) by kind for *namespace*."""
        rows = await self._db.fetchall(
            "SELECT kind, entries, bytes FROM coordd.usage WHERE namespace = %s", (namespace,)
        )
        return {r.kind: (int(r.entries), int(r.bytes)) for r in rows}
