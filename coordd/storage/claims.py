"""Claim storage: each operation is one call of a SQL function (one round trip)."""

from __future__ import annotations

from datetime import timedelta

from coordd.domain.models import Claim, ClaimOutcome, ClaimPage, ClaimsOutcome
from coordd.errors import ClaimNotHeldError
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row

_CLAIM_COLUMNS = (
    "resource, holder_agent_id, holder_role, fencing_token, acquire_time, expire_time, progress"
)
# Columns of coordd.claim_result, in order.
_COLUMNS = f"status, ns_revision, {_CLAIM_COLUMNS}"


def _claim(namespace: str, row: Row) -> Claim | None:
    if row[2] is None:
        return None
    return Claim(
        namespace=namespace,
        resource=row[2],
        holder_agent_id=row[3],
        holder_role=row[4],
        fencing_token=row[5],
        acquire_time=row[6],
        expire_time=row[7],
        progress=row[8],
    )


class ClaimStore:
    """SQL for claims. Time is the database's (``coordd.now()``)."""

    def __init__(self, db: Database, writes: WriteBatcher | None = None) -> None:
        self._db = db
        self._writes = writes or WriteBatcher(db)

    async def acquire(
        self,
        namespace: str,
        resource: str,
        agent_id: str,
        role: str,
        ttl: timedelta,
        progress: str,
    ) -> ClaimOutcome:
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.acquire_claim(%s, %s, %s, %s, %s, %s)",
            (namespace, resource, agent_id, role, ttl, progress),
            memory=False,
        )
        return ClaimOutcome(acquired=row[0] == "ok", revision=row[1], claim=_claim(namespace, row))

    async def acquire_any(
        self,
        namespace: str,
        resources: list[str],
        agent_id: str,
        role: str,
        ttl: timedelta,
        progress: str,
    ) -> ClaimOutcome:
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.acquire_any_claim(%s, %s, %s, %s, %s, %s)",
            (namespace, resources, agent_id, role, ttl, progress),
            memory=False,
        )
        return ClaimOutcome(acquired=row[0] == "ok", revision=row[1], claim=_claim(namespace, row))

    async def acquire_all(
        self,
        namespace: str,
        resources: list[str],
        agent_id: str,
        role: str,
        ttl: timedelta,
        progress: str,
    ) -> ClaimsOutcome:
        """Claim every resource or none, in one transaction (``coordd.acquire_claims``)."""
        rows = await self._writes.fetchall(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.acquire_claims(%s, %s, %s, %s, %s, %s)",
            (namespace, resources, agent_id, role, ttl, progress),
            memory=False,
        )
        claims = [c for row in rows if (c := _claim(namespace, row)) is not None]
        acquired = bool(rows) and rows[0][0] == "ok"
        revision = rows[0][1] if rows else await self.revision(namespace)
        return ClaimsOutcome(acquired=acquired, revision=revision, claims=claims)

    async def renew(
        self,
        namespace: str,
        resource: str,
        agent_id: str,
        token: int,
        ttl: timedelta,
        progress: str | None,
    ) -> ClaimOutcome:
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.renew_claim(%s, %s, %s, %s, %s, %s)",
            (namespace, resource, agent_id, token, ttl, progress),
            memory=False,
        )
        return self._held_or_raise(namespace, resource, row)

    async def release(
        self, namespace: str, resource: str, agent_id: str, token: int
    ) -> ClaimOutcome:
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.release_claim(%s, %s, %s, %s)",
            (namespace, resource, agent_id, token),
            memory=False,
        )
        return self._held_or_raise(namespace, resource, row)

    @staticmethod
    def _held_or_raise(namespace: str, resource: str, row: Row) -> ClaimOutcome:
        claim = _claim(namespace, row)
        if row[0] != "ok":
            raise ClaimNotHeldError(
                namespace,
                resource,
                holder_agent_id=claim.holder_agent_id if claim else "",
                fencing_token=claim.fencing_token if claim else 0,
                expire_time=claim.expire_time if claim else None,
            )
        return ClaimOutcome(acquired=True, revision=row[1], claim=claim)

    async def get(self, namespace: str, resource: str) -> ClaimOutcome:
        row = await self._db.fetchone(
            "SELECT 'ok', coordd.ns_revision(%s), c.resource, c.holder_agent_id, c.holder_role,"
            " c.fencing_token, c.acquire_time, c.expire_time, c.progress"
            " FROM (SELECT 1) one LEFT JOIN coordd.claims c"
            " ON c.namespace = %s AND c.resource = %s AND c.expire_time > coordd.now()",
            (namespace, namespace, resource),
        )
        claim = _claim(namespace, row)
        return ClaimOutcome(acquired=claim is not None, revision=row[1], claim=claim)

    async def list(self, namespace: str, holder: str, after: str, limit: int) -> ClaimPage:
        rows = await self._db.fetchall(
            f"SELECT 'ok', coordd.ns_revision(%s), {_CLAIM_COLUMNS}"
            " FROM coordd.claims"
            " WHERE namespace = %s AND expire_time > coordd.now() AND resource > %s"
            " AND (%s = '' OR holder_agent_id = %s) ORDER BY resource LIMIT %s",
            (namespace, namespace, after, holder, holder, limit + 1),
        )
        revision = rows[0][1] if rows else await self.revision(namespace)
        page = rows[:limit]
        claims = [c for r in page if (c := _claim(namespace, r)) is not None]
        next_after = page[-1][2] if len(rows) > limit else None
        return ClaimPage(revision=revision, claims=claims, next_after=next_after)

    async def revision(self, namespace: str) -> int:
        row = await self._db.fetchone("SELECT coordd.ns_revision(%s)", (namespace,))
        return int(row[0])

    async def sweep(self, limit: int = 1000) -> int:
        """Remove expired claims and log their expiry; return how many."""
        row = await self._db.fetchone("SELECT coordd.sweep_claims(%s)", (limit,))
        return int(row[0])
