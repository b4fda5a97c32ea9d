"""Admin actions in SQL: force-releasing a claim and purging a namespace.

Each runs in one transaction under the namespace's revision lock (``coordd.lock_ns``), like
every other write, and leaves change-log rows, so Watch streams, caches and the vector indexes
of every replica learn of it. Admin actions are rare: a few statements in a transaction are
clearer here than one more SQL function.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection

from coordd.domain.models import Claim
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row, from_row

# (label reported to the operator, table) in deletion order: children before parents.
_PURGED_TABLES = (
    ("claims", "coordd.claims"),
    ("idempotency", "coordd.idempotency"),
    ("memory_history", "coordd.memory_history"),
    ("tasks", "coordd.tasks"),
    ("context_acks", "coordd.context_acks"),
    ("context", "coordd.context_entries"),
    ("agreement_votes", "coordd.agreement_votes"),
    ("agreements", "coordd.agreements"),
)

_CHANGE_SQL = (
    "INSERT INTO coordd.changes"
    " (namespace, revision, seq, kind, key, op, agent_id, data, create_time)"
    " SELECT %s, %s, s.seq, %s, s.key, %s, %s, NULL, coordd.now()"
    " FROM unnest(%s::text[], %s::int[]) AS s(key, seq)"
)


class AdminStore:
    def __init__(self, db: Database, writes: WriteBatcher) -> None:
        self._db = db
        self._writes = writes

    async def force_release(
        self, namespace: str, resource: str, operator: str, reason: str
    ) -> tuple[int, Claim | None]:
        """Delete the live claim on *resource*; the revision and the claim as it was (None
        and the current revision if nothing was held)."""
        async with self._db.connection() as conn, conn.transaction():
            revision = await _lock(conn, namespace)
            cur = await conn.execute(
                "DELETE FROM coordd.claims WHERE namespace = %s AND resource = %s"
                " AND expire_time > coordd.now() RETURNING holder_agent_id, holder_role,"
                " fencing_token, acquire_time, expire_time, progress",
                (namespace, resource),
            )
            row = await cur.fetchone()
            if row is None:
                return revision, None
            claim = from_row(Claim, row, namespace=namespace, resource=resource)
            data = {
                "fencing_token": claim.fencing_token,
                "holder_agent_id": claim.holder_agent_id,
                "reason": reason,
            }
            await self._commit(conn, namespace, revision + 1, "claim", resource, operator, data)
        self._writes.written(namespace)
        return revision + 1, claim

    async def purge(self, namespace: str, operator: str, reason: str) -> tuple[int, dict[str, int]]:
        """Delete the data of *namespace*; the revision of the purge and rows removed by kind."""
        removed: dict[str, int] = {}
        async with self._db.connection() as conn, conn.transaction():
            # Context takes and acks lock their ANY state rows (and EACH receipts their
            # entries) before the namespace row (see sql/40_context.sql): here too, so neither
            # waits on the other. The state rows go with their entries (not counted apart).
            await conn.execute("DELETE FROM coordd.context_any WHERE namespace = %s", (namespace,))
            # Then the takers' counts, as a take locks its taker's row after the entries'.
            await conn.execute(
                "DELETE FROM coordd.context_takers WHERE namespace = %s", (namespace,)
            )
            await conn.execute(
                "SELECT 1 FROM coordd.context_entries WHERE namespace = %s FOR UPDATE",
                (namespace,),
            )
            revision = await _lock(conn, namespace) + 1
            claims: list[str] = []
            for label, table in _PURGED_TABLES:
                returning = " RETURNING resource" if label == "claims" else ""
                cur = await conn.execute(
                    f"DELETE FROM {table} WHERE namespace = %s{returning}", (namespace,)
                )
                removed[label] = cur.rowcount
                if returning:
                    claims = [r.resource for r in await cur.fetchall()]
            cur = await conn.execute(
                "DELETE FROM coordd.memory WHERE namespace = %s RETURNING key", (namespace,)
            )
            keys = [r.key for r in await cur.fetchall()]
            removed["memory"] = len(keys)
            data: dict[str, Any] = {"removed": removed, "reason": reason}
            await self._commit(conn, namespace, revision, "namespace", "", operator, data, "purge")
            # One row per memory key and claim, after the summary: the vector indexes of every
            # replica drop the keys, and watchers learn of the lost claims.
            for kind, names, first in (("memory", keys, 1), ("claim", claims, 1 + len(keys))):
                if names:
                    await conn.execute(
                        _CHANGE_SQL,
                        (
                            namespace,
                            revision,
                            kind,
                            "purge",
                            operator,
                            names,
                            list(range(first, first + len(names))),
                        ),
                    )
        self._writes.written(namespace)
        return revision, removed

    @staticmethod
    async def _commit(
        conn: AsyncConnection[Row],
        namespace: str,
        revision: int,
        kind: str,
        key: str,
        operator: str,
        data: dict[str, Any],
        op: str = "force_release",
    ) -> None:
        await conn.execute(
            "SELECT coordd.commit_rev(%s, %s, %s, %s, %s, %s, %s::jsonb, coordd.now())",
            (namespace, revision, kind, key, op, operator, json.dumps(data)),
        )


async def _lock(conn: AsyncConnection[Row], namespace: str) -> int:
    """Lock *namespace*'s revision row for this transaction; its current revision."""
    cur = await conn.execute("SELECT coordd.lock_ns(%s) AS revision", (namespace,))
    row = await cur.fetchone()
    return int(row.revision) if row else 0
