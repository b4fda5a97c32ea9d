"""Claim rules above storage: bounded first-come-first-served waiting for a held claim."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from coordd.domain.clock import Clock, SystemClock
from coordd.domain.consistency import answer_within
from coordd.domain.models import ClaimOutcome, ClaimPage, ClaimsOutcome, Fence, Identity

# A waiter re-checks at least this often, so a release made through another daemon replica
# (which cannot wake our local queue) is noticed within this bound.
_RECHECK_S = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Acquire:
    """AcquireClaim: one resource, waiting up to *wait* (first come first served) if held."""

    namespace: str
    resource: str
    ttl: timedelta
    wait: timedelta
    progress: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireMany:
    """AcquireAnyClaim (the first free of *resources*) or AcquireClaims (all or none)."""

    namespace: str
    resources: list[str]
    ttl: timedelta
    progress: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Renewal:
    """RenewClaim by the holder of *token*; *progress* None keeps the last note."""

    namespace: str
    resource: str
    token: int
    ttl: timedelta
    progress: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimKey:
    namespace: str
    resource: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimListing:
    """ListClaims: live claims after resource *after*, of *holder* if given."""

    namespace: str
    holder: str
    after: str
    limit: int


class ClaimStore(Protocol):
    async def acquire(self, who: Identity, a: Acquire) -> ClaimOutcome: ...

    async def acquire_any(self, who: Identity, a: AcquireMany) -> ClaimOutcome: ...

    async def acquire_all(self, who: Identity, a: AcquireMany) -> ClaimsOutcome: ...

    async def renew(self, who: Identity, r: Renewal) -> ClaimOutcome: ...

    async def release(self, who: Identity, claim: Fence) -> ClaimOutcome: ...

    async def get(self, key: ClaimKey) -> ClaimOutcome: ...

    async def list(self, q: ClaimListing) -> ClaimPage: ...


class _WaitQueues:
    """Per-resource FIFO of waiting acquirers in this daemon; only the head retries."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], deque[asyncio.Event]] = {}

    def join(self, key: tuple[str, str]) -> asyncio.Event:
        event = asyncio.Event()
        self._queues.setdefault(key, deque()).append(event)
        return event

    def is_head(self, key: tuple[str, str], event: asyncio.Event) -> bool:
        queue = self._queues.get(key)
        return bool(queue) and queue[0] is event  # type: ignore[index]

    def leave(self, key: tuple[str, str], event: asyncio.Event) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.remove(event)
        if queue:
            queue[0].set()  # the next in line gets its turn now
        else:
            del self._queues[key]

    def waiting(self, key: tuple[str, str]) -> int:
        return len(self._queues.get(key, ()))

    def wake(self, key: tuple[str, str]) -> None:
        queue = self._queues.get(key)
        if queue:
            queue[0].set()


class ClaimService:
    """Claim rules: waiting for a held claim, and a release waking the next waiter.

    Calls the domain adds nothing to (AcquireAnyClaim, AcquireClaims, RenewClaim, GetClaim,
    ListClaims) go straight to :attr:`store`.

    Attributes:
        store: The claim store, for calls without a rule here.
    """

    def __init__(self, store: ClaimStore, clock: Clock | None = None) -> None:
        self.store = store
        self._clock = clock or SystemClock()
        self._waiters = _WaitQueues()

    async def acquire(
        self, who: Identity, a: Acquire, time_remaining: float | None = None
    ) -> ClaimOutcome:
        """Acquire now, or wait up to ``a.wait`` (first come first served) while someone
        holds it, answering before the caller's deadline (*time_remaining*, seconds)."""
        outcome = await self.store.acquire(who, a)
        wait = answer_within(a.wait, time_remaining)
        if outcome.acquired or wait <= timedelta(0):
            return outcome
        key = (a.namespace, a.resource)
        deadline = self._clock.monotonic() + wait.total_seconds()
        turn = self._waiters.join(key)
        try:
            while True:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return outcome
                pause = min(remaining, _RECHECK_S, _until_expiry(outcome))
                turn.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(turn.wait(), timeout=max(pause, 0.001))
                if not self._waiters.is_head(key, turn):
                    continue
                outcome = await self.store.acquire(who, a)
                if outcome.acquired:
                    return outcome
        finally:
            self._waiters.leave(key, turn)

    def waiting(self, namespace: str, resource: str) -> int:
        """How many acquirers wait on *resource* in this daemon."""
        return self._waiters.waiting((namespace, resource))

    async def release(self, who: Identity, claim: Fence) -> ClaimOutcome:
        """Release *claim* (held by *who* under its token); the next waiter here gets its turn."""
        outcome = await self.store.release(who, claim)
        self._waiters.wake((claim.namespace, claim.resource))
        return outcome


def _until_expiry(outcome: ClaimOutcome) -> float:
    """Seconds until the holder's lease lapses, by this host's clock (a hint, not a rule)."""
    if outcome.claim is None:
        return 0.0
    left = (outcome.claim.expire_time - datetime.now(UTC)).total_seconds()
    return max(left, 0.0)
