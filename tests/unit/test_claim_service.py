"""ClaimService without I/O: waiting for a held claim (first come first served, woken by a
release, bounded by the injected clock and the call's deadline)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from coordd.domain.claims import (
    Acquire,
    AcquireMany,
    ClaimKey,
    ClaimListing,
    ClaimService,
    Renewal,
)
from coordd.domain.consistency import answer_within
from coordd.domain.models import Claim, ClaimOutcome, ClaimPage, ClaimsOutcome, Fence, Identity

A, B, C = (Identity(agent_id=name, role="worker") for name in "abc")
NS, RES = "ns", "doc"
LATER = datetime.now(UTC) + timedelta(hours=1)


class FakeStore:
    """One resource; whoever holds it keeps it until released. Records each call."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.token = 0
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _outcome(self, acquired: bool) -> ClaimOutcome:
        claim = None
        if self.holder is not None:
            claim = Claim(
                namespace=NS,
                resource=RES,
                holder_agent_id=self.holder,
                holder_role="worker",
                fencing_token=self.token,
                acquire_time=LATER,
                expire_time=LATER,
            )
        return ClaimOutcome(acquired=acquired, revision=self.token, claim=claim)

    async def acquire(self, who: Identity, a: Acquire) -> ClaimOutcome:
        self.calls.append(("acquire", (who, a)))
        if self.holder not in (None, who.agent_id):
            return self._outcome(False)
        self.holder, self.token = who.agent_id, self.token + 1
        return self._outcome(True)

    async def release(self, who: Identity, claim: Fence) -> ClaimOutcome:
        self.calls.append(("release", (who, claim)))
        self.holder = None
        return self._outcome(True)

    async def acquire_any(self, who: Identity, a: AcquireMany) -> ClaimOutcome:
        self.calls.append(("acquire_any", (who, a)))
        return self._outcome(False)

    async def acquire_all(self, who: Identity, a: AcquireMany) -> ClaimsOutcome:
        self.calls.append(("acquire_all", (who, a)))
        return ClaimsOutcome(acquired=False, revision=0, claims=[])

    async def renew(self, who: Identity, r: Renewal) -> ClaimOutcome:
        self.calls.append(("renew", (who, r)))
        return self._outcome(True)

    async def get(self, key: ClaimKey) -> ClaimOutcome:
        return self._outcome(False)

    async def list(self, q: ClaimListing) -> ClaimPage:
        return ClaimPage(revision=0, claims=[], next_after=None)


class SteppingClock:
    """Each reading is *step* seconds after the last: a wait's deadline passes at once."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def ask(wait: float) -> Acquire:
    return Acquire(
        namespace=NS,
        resource=RES,
        ttl=timedelta(seconds=30),
        wait=timedelta(seconds=wait),
        progress="",
    )


def service_calls(store: FakeStore) -> list[str]:
    return [name for name, _ in store.calls]


async def until_waiting(service: ClaimService, count: int) -> None:
    while service.waiting(NS, RES) < count:
        await asyncio.sleep(0)


async def test_a_release_hands_the_claim_to_waiters_in_arrival_order() -> None:
    store = FakeStore()
    service = ClaimService(store)
    assert (await service.acquire(A, ask(0))).acquired
    b = asyncio.create_task(service.acquire(B, ask(60)))
    await until_waiting(service, 1)
    c = asyncio.create_task(service.acquire(C, ask(60)))
    await until_waiting(service, 2)

    await service.release(A, Fence(namespace=NS, resource=RES, token=1))
    got_b = await asyncio.wait_for(b, 30)
    assert got_b.acquired and got_b.claim and got_b.claim.holder_agent_id == "b"
    assert not c.done(), "c came after b: it waits on"

    await service.release(B, Fence(namespace=NS, resource=RES, token=2))
    got_c = await asyncio.wait_for(c, 30)
    assert got_c.acquired and got_c.claim and got_c.claim.holder_agent_id == "c"
    assert service.waiting(NS, RES) == 0


async def test_a_wait_ends_at_its_deadline_by_the_injected_clock() -> None:
    store = FakeStore()
    await store.acquire(A, ask(0))
    service = ClaimService(store, clock=SteppingClock(step=10))
    out = await asyncio.wait_for(service.acquire(B, ask(5)), 30)
    assert not out.acquired and out.claim and out.claim.holder_agent_id == "a"
    assert service_calls(store) == ["acquire", "acquire"], "tried once, no retry"
    assert service.waiting(NS, RES) == 0


async def test_no_wait_when_the_call_deadline_is_too_near() -> None:
    assert answer_within(timedelta(seconds=5), None) == timedelta(seconds=5)
    assert answer_within(timedelta(seconds=5), 1.05) == timedelta(seconds=1)
    assert answer_within(timedelta(seconds=5), 0.01) == timedelta(0)
    store = FakeStore()
    await store.acquire(A, ask(0))
    out = await ClaimService(store).acquire(B, ask(60), time_remaining=0.01)
    assert not out.acquired and service_calls(store) == ["acquire", "acquire"]
