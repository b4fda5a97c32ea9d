"""Idempotency-key storage: one SQL function call per operation."""

from __future__ import annotations

from datetime import timedelta

from coordd.domain.models import BeginOutcome, Fence, IdempotencyRecord, IdempotencyState
from coordd.errors import (
    IdempotencyAttemptSupersededError,
    IdempotencyKeyReusedError,
    NotFoundError,
)
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row, fence_params, fence_stale

# Columns of coordd.idem_result, in order.
_COLUMNS = (
    "status, ns_revision, state, attempt, fingerprint, result, error, runner_agent_id,"
    " create_time, lease_expire_time, expire_time, retry_after, current_token"
)

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
        state=_STATES[row[2]],
        attempt=row[3],
        fingerprint=bytes(row[4]),
        result=bytes(row[5] or b""),
        error=row[6],
        runner_agent_id=row[7],
        create_time=row[8],
        lease_expire_time=row[9],
        expire_time=row[10],
    )


class IdempotencyStore:
    def __init__(self, db: Database, writes: WriteBatcher | None = None) -> None:
        self._db = db
        self._writes = writes or WriteBatcher(db)

    async def begin(
        self,
        namespace: str,
        key: str,
        fingerprint: bytes,
        agent_id: str,
        lease: timedelta,
        retention: timedelta,
    ) -> BeginOutcome:
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.begin_idempotency(%s, %s, %s, %s, %s, %s)",
            (namespace, key, fingerprint, agent_id, lease, retention),
            memory=False,
        )
        status = row[0]
        if status == "reused":
            raise IdempotencyKeyReusedError(namespace, key)
        state = {
            "acquired": IdempotencyState.ACQUIRED,
            "completed": IdempotencyState.COMPLETED,
            "in_progress": IdempotencyState.IN_PROGRESS,
            "failed": IdempotencyState.FAILED,
        }[status]
        return BeginOutcome(
            revision=row[1], state=state, record=_record(namespace, key, row), retry_after=row[11]
        )

    async def finish(
        self,
        namespace: str,
        key: str,
        attempt: int,
        outcome: str,
        result: bytes | None,
        error: str,
        agent_id: str,
        fence: Fence | None,
    ) -> tuple[int, IdempotencyRecord]:
        """Store an attempt's outcome: 'completed', 'failed' (terminal) or 'released'."""
        row = await self._writes.fetchone(
            namespace,
            f"SELECT {_COLUMNS} FROM coordd.finish_idempotency("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                namespace,
                key,
                attempt,
                outcome,
                result,
                error,
                agent_id,
                *fence_params(fence),
            ),
            memory=False,
        )
        status = row[0]
        if status == "fence_stale" and fence is not None:
            raise fence_stale(fence, row[12])
        if status == "not_found":
            raise NotFoundError(f"idempotency key {key!r} in {namespace} not found (or purged)")
        if status == "superseded":
            raise IdempotencyAttemptSupersededError(namespace, key, row[3])
        return row[1], _record(namespace, key, row)

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]:
        row = await self._db.fetchone(
            "SELECT 'ok', coordd.ns_revision(%s), i.state, i.attempt, i.fingerprint, i.result,"
            " i.error, i.runner_agent_id, i.create_time, i.lease_expire_time, i.expire_time"
            " FROM (SELECT 1) one LEFT JOIN coordd.idempotency i"
            " ON i.namespace = %s AND i.key = %s AND i.expire_time > coordd.now()",
            (namespace, namespace, key),
        )
        if row[2] is None:
            return row[1], None
        return row[1], _record(namespace, key, row)

    async def purge(self, limit: int = 1000) -> int:
        """Delete records past retention; return how many."""
        row = await self._db.fetchone("SELECT coordd.purge_idempotency(%s)", (limit,))
        return int(row[0])
