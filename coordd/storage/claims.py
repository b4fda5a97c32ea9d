"""Claim storage: each operation is one call of a SQL function (one round trip)."""

from __future__ import annotations

import functools
from typing import Any

from coordd.domain.claims import Acquire, AcquireMany, ClaimKey, ClaimListing, Renewal
from coordd.domain.models import Claim, ClaimOutcome, ClaimPage, ClaimsOutcome, Fence, Identity
from coordd.storage.batching import SqlFunction, WriteBatcher
from coordd.storage.db import Database, Row, from_row
from coordd.storage.outcomes import Call, check

_CLAIM_COLUMNS = (
    "resource, holder_agent_id, holder_role, fencing_token, acquire_time, expire_time, progress"
)
# Columns of coordd.claim_result, in order.
_COLUMNS = f"status, ns_revision, {_CLAIM_COLUMNS}"


def _claim(namespace: str, row: Row) -> Claim | None:
    """The claim a row describes (None when it names none)."""
    return None if row.resource is None else from_row(Claim, row, namespace=namespace)


def _outcome(namespace: str, row: Row) -> ClaimOutcome:
    return ClaimOutcome(
        acquired=row.status == "ok", revision=row.ns_revision, claim=_claim(namespace, row)
    )


@functools.cache
def _calling(function: str, arity: int) -> str:
    """The statement calling ``coordd.<function>`` with *arity* arguments (one text each,
    so each is prepared once)."""
    return f"SELECT {_COLUMNS} FROM coordd.{function}({', '.join(['%s'] * arity)})"


def _claim_function(name: str, *arg_types: str) -> SqlFunction:
    """``coordd.<name>(namespace text, *arg_types)``, answering a ``coordd.claim_result``."""
    return SqlFunction(f"coordd.{name}", ("text", *arg_types), "coordd.claim_result")


# The single-resource writes: concurrent ones in a namespace run as one statement.
_ACQUIRE = _claim_function("acquire_claim", "text", "text", "text", "interval", "text")
_RENEW = _claim_function("renew_claim", "text", "text", "bigint", "interval", "text")
_RELEASE = _claim_function("release_claim", "text", "text", "bigint")


class ClaimStore:
    """SQL for claims. Time is the database's (``coordd.now()``)."""

    def __init__(self, db: Database, writes: WriteBatcher | None = None) -> None:
        self._db = db
        self._writes = writes or WriteBatcher(db)

    async def _call(self, function: SqlFunction, namespace: str, *args: Any) -> Row:
        """One call of *function* (namespace, *args), group-committed by namespace."""
        rows = await self._writes.call(namespace, function, (namespace, *args), memory=False)
        return rows[0]

    async def acquire(self, who: Identity, a: Acquire) -> ClaimOutcome:
        args = (a.resource, who.agent_id, who.role, a.ttl, a.progress)
        row = await self._call(_ACQUIRE, a.namespace, *args)
        return _outcome(a.namespace, row)

    async def acquire_any(self, who: Identity, a: AcquireMany) -> ClaimOutcome:
        # Array arguments cannot travel as arrays of arrays: a statement of its own.
        args = (a.namespace, a.resources, who.agent_id, who.role, a.ttl, a.progress)
        row = await self._writes.fetchone(
            a.namespace, _calling("acquire_any_claim", len(args)), args, memory=False
        )
        return _outcome(a.namespace, row)

    async def acquire_all(self, who: Identity, a: AcquireMany) -> ClaimsOutcome:
        """Claim every resource or none, in one transaction (``coordd.acquire_claims``)."""
        namespace = a.namespace
        args = (namespace, a.resources, who.agent_id, who.role, a.ttl, a.progress)
        rows = await self._writes.fetchall(
            namespace, _calling("acquire_claims", len(args)), args, memory=False
        )
        claims = [c for row in rows if (c := _claim(namespace, row)) is not None]
        acquired = bool(rows) and rows[0].status == "ok"
        revision = rows[0].ns_revision if rows else await self.revision(namespace)
        return ClaimsOutcome(acquired=acquired, revision=revision, claims=claims)

    async def renew(self, who: Identity, r: Renewal) -> ClaimOutcome:
        args = (r.resource, who.agent_id, r.token, r.ttl, r.progress)
        row = await self._call(_RENEW, r.namespace, *args)
        return _outcome(r.namespace, check(row, Call(r.namespace, r.resource)))

    async def release(self, who: Identity, claim: Fence) -> ClaimOutcome:
        args = (claim.resource, who.agent_id, claim.token)
        row = await self._call(_RELEASE, claim.namespace, *args)
        return _outcome(claim.namespace, check(row, Call(claim.namespace, claim.resource)))

    async def get(self, key: ClaimKey) -> ClaimOutcome:
        namespace = key.namespace
        row = await self._db.fetchone(
            "SELECT 'ok' AS status, coordd.ns_revision(%s) AS ns_revision, c.resource,"
            " c.holder_agent_id, c.holder_role,"
            " c.fencing_token, c.acquire_time, c.expire_time, c.progress"
            " FROM (SELECT 1) one LEFT JOIN coordd.claims c"
            " ON c.namespace = %s AND c.resource = %s AND c.expire_time > coordd.now()",
            (namespace, namespace, key.resource),
        )
        claim = _claim(namespace, row)
        return ClaimOutcome(acquired=claim is not None, revision=row.ns_revision, claim=claim)

    async def list(self, q: ClaimListing) -> ClaimPage:
        namespace, holder, after, limit = q.namespace, q.holder, q.after, q.limit
        rows = await self._db.fetchall(
            f"SELECT coordd.ns_revision(%s) AS ns_revision, {_CLAIM_COLUMNS}"
            " FROM coordd.claims"
            " WHERE namespace = %s AND expire_time > coordd.now() AND resource > %s"
            " AND (%s = '' OR holder_agent_id = %s) ORDER BY resource LIMIT %s",
            (namespace, namespace, after, holder, holder, limit + 1),
        )
        revision = rows[0].ns_revision if rows else await self.revision(namespace)
        page = rows[:limit]
        claims = [from_row(Claim, r, namespace=namespace) for r in page]
        next_after = page[-1].resource if len(rows) > limit else None
        return ClaimPage(revision=revision, claims=claims, next_after=next_after)

    async def revision(self, namespace: str) -> int:
        row = await self._db.fetchone("SELECT coordd.ns_revision(%s) AS revision", (namespace,))
        return int(row.revision)

    async def sweep(self, limit: int = 1000) -> int:
        """Remove expired claims and log their expiry; return how many."""
        row = await self._db.fetchone("SELECT coordd.sweep_claims(%s) AS expired", (limit,))
        return int(row.expired)
