"""Idempotency rules above storage (DESIGN.md §4)."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from coordd.domain.models import BeginOutcome, Fence, IdempotencyRecord, Identity


class IdempotencyStore(Protocol):
    async def begin(
        self,
        namespace: str,
        key: str,
        fingerprint: bytes,
        agent_id: str,
        lease: timedelta,
        retention: timedelta,
    ) -> BeginOutcome: ...

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
    ) -> tuple[int, IdempotencyRecord]: ...

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]: ...


class IdempotencyService:
    """Begin, complete, fail and read idempotency keys for an identity."""

    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store

    async def begin(
        self,
        who: Identity,
        namespace: str,
        key: str,
        fingerprint: bytes,
        lease: timedelta,
        retention: timedelta,
    ) -> BeginOutcome:
        return await self._store.begin(namespace, key, fingerprint, who.agent_id, lease, retention)

    async def complete(
        self,
        who: Identity,
        namespace: str,
        key: str,
        attempt: int,
        result: bytes,
        fence: Fence | None,
    ) -> tuple[int, IdempotencyRecord]:
        return await self._store.finish(
            namespace, key, attempt, "completed", result, "", who.agent_id, fence
        )

    async def fail(
        self,
        who: Identity,
        namespace: str,
        key: str,
        attempt: int,
        retryable: bool,
        error: str,
        fence: Fence | None,
    ) -> tuple[int, IdempotencyRecord]:
        outcome = "released" if retryable else "failed"
        return await self._store.finish(
            namespace, key, attempt, outcome, None, error, who.agent_id, fence
        )

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]:
        return await self._store.get(namespace, key)
