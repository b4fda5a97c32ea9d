"""Idempotency-key storage: one SQL function call per operation."""

from __future__ import annotations

from coordd.domain.idempotency import Begin, Finish
from coordd.domain.models import BeginOutcome, IdempotencyRecord, IdempotencyState, Identity
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row, fence_params
from coordd.storage.outcomes import Call, check

# Columns of coordd.idem_result, in order.
_COLUMNS = (
    "status, ns_revision, state, attempt, fingerprint, result, error, runner_agent_id,"
    " create_time, lease_expire_time, expire_time, retry_after, current_token"
)

_NOT_FOUND = "idempotency key {name!r} in {namespace} not found (or purged)"
_STATES = {
    "in_progress": IdempotencyState.IN_PROGRESS,
    "completed": IdempotencyState.COMPLETED,
    "failed": IdempotencyState.FAILED,
    # A retryable failure reads as in progress until the next Begin takes it over.
    "released": IdempotencyState.IN_PROGRESS,
}


def _record(namespace: str, key: str, row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        namespace=namespace,
        key=key,
        state=_STATES[row.state],
        attempt=row.attempt,
        fingerprint=bytes(row.fingerprint),
        result=bytes(row.result or b""),
        error=row.error,
        runner_agent_id=row.runner_agent_id,
        create_time=row.create_time,
        lease_expire_time=row.lease_expire_time,
        expire_time=row.expire_time,
    )


class IdempotencyStore:
    def __init__(self, db: Database, writes: WriteBatcher | None = None) -> None:
        self._db = db
        self._writes = writes or WriteBatcher(db)

    async def begin(self, who: Identity, b: Begin) -> BeginOutcome:
        namespace, key = b.namespace, b.key
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.begin_idempotency(%s, %s, %s, %s, %s, %s)",
            (namespace, key, b.fingerprint, who.agent_id, b.lease, b.retention),
            memory=False,
        )
        check(row, Call(namespace, key))
        return BeginOutcome(
            revision=row.ns_revision,
            state=IdempotencyState(row.status),
            record=_record(namespace, key, row),
            retry_after=row.retry_after,
        )

    async def finish(self, who: Identity, f: Finish) -> tuple[int, IdempotencyRecord]:
        """Store an attempt's outcome: 'completed', 'failed' (terminal) or 'released'."""
        namespace, key = f.namespace, f.key
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.finish_idempotency("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                namespace,
                key,
                f.attempt,
                f.outcome,
                f.result,
                f.error,
                who.agent_id,
                *fence_params(f.fence),
            ),
            memory=False,
        )
        check(row, Call(namespace, key, f.fence, not_found=_NOT_FOUND))
        return row.ns_revision, _record(namespace, key, row)

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]:
        row = await self._db.fetchone(
            "SELECT coordd.ns_revision(%s) AS ns_revision, i.state, i.attempt, i.fingerprint,"
            " i.result,"
            " i.error, i.runner_agent_id, i.create_time, i.lease_expire_time, i.expire_time"
            " FROM (SELECT 1) one LEFT JOIN coordd.idempotency i"
            " ON i.namespace = %s AND i.key = %s AND i.expire_time > coordd.now()",
            (namespace, namespace, key),
        )
        if row.state is None:
            return row.ns_revision, None
        return row.ns_revision, _record(namespace, key, row)

    async def purge(self, limit: int = 1000) -> int:
        """Delete records past retention; return how many."""
        return await self._db.purge_expired("coordd.idempotency", limit)
