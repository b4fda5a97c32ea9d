"""Idempotency rules above storage (DESIGN.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from coordd.domain.consistency import at_least
from coordd.domain.models import BeginOutcome, Fence, IdempotencyRecord, Identity


@dataclass(frozen=True, slots=True, kw_only=True)
class Begin:
    """BeginIdempotency: run the work under *key* unless it ran (or runs) already."""

    namespace: str
    key: str
    fingerprint: bytes
    lease: timedelta
    retention: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """CompleteIdempotency: attempt *attempt* succeeded with *result*."""

    namespace: str
    key: str
    attempt: int
    result: bytes
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """FailIdempotency: attempt *attempt* failed; *retryable* frees the key for a retry."""

    namespace: str
    key: str
    attempt: int
    retryable: bool
    error: str
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """What storage records for an attempt: 'completed', 'failed' (terminal) or 'released'."""

    namespace: str
    key: str
    attempt: int
    outcome: str
    result: bytes | None
    error: str
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordRead:
    """GetIdempotency: a key's record, reflecting at least *min_revision*."""

    namespace: str
    key: str
    min_revision: int


class IdempotencyStore(Protocol):
    async def begin(self, who: Identity, b: Begin) -> BeginOutcome: ...

    async def finish(self, who: Identity, f: Finish) -> tuple[int, IdempotencyRecord]: ...

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]: ...


class IdempotencyService:
    """Idempotency rules: what an attempt's end records, and reads at a minimum revision.

    BeginIdempotency (ACQUIRED, COMPLETED or IN_PROGRESS, decided atomically by the
    database) has no rule here: it goes straight to :attr:`store`.

    Attributes:
        store: The idempotency store, for calls without a rule here.
    """

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def complete(self, who: Identity, c: Completion) -> tuple[int, IdempotencyRecord]:
        return await self._finish(who, c, "completed", result=c.result)

    async def fail(self, who: Identity, f: Failure) -> tuple[int, IdempotencyRecord]:
        """A retryable failure releases the key for the next Begin; any other is final."""
        return await self._finish(who, f, "released" if f.retryable else "failed", error=f.error)

    async def _finish(
        self,
        who: Identity,
        end: Completion | Failure,
        outcome: str,
        result: bytes | None = None,
        error: str = "",
    ) -> tuple[int, IdempotencyRecord]:
        ended = Finish(
            namespace=end.namespace,
            key=end.key,
            attempt=end.attempt,
            outcome=outcome,
            result=result,
            error=error,
            fence=end.fence,
        )
        return await self.store.finish(who, ended)

    async def get(self, read: RecordRead, wait_s: float) -> tuple[int, IdempotencyRecord | None]:
        """The record (None if absent) at ``read.min_revision`` or later, waiting up to
        *wait_s* for it (else REVISION_NOT_REACHED)."""
        return await at_least(
            read.namespace,
            read.min_revision,
            lambda: self.store.get(read.namespace, read.key),
            wait_s,
        )
