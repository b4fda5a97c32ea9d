"""AgreementService.wait without I/O: wakes on a change, re-reads at the deadline, gives up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from coordd.domain.agreements import (
    Agreement,
    AgreementService,
    AgreementState,
    AgreementView,
    DecisionCause,
    Participant,
    seats,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PENDING = Agreement(
    namespace="ns",
    id="ag",
    proposer_agent_id="a",
    proposer_role="",
    participants=[Participant(agent_id="a"), Participant(role="r", count=2)],
    transition_json="{}",
    writes=[],
    state=AgreementState.PENDING,
    cause=DecisionCause.NONE,
    reason="",
    decided_by_agent_id="",
    votes=[],
    seats=3,
    accepted=0,
    create_time=T0,
    deadline_time=T0 + timedelta(seconds=0.2),
    decide_time=None,
    create_revision=1,
    decide_revision=0,
    expire_time=None,
    write_revisions={},
)


class FakeStore:
    """Pending until ``decide_after`` reads; each read reports the database time given."""

    def __init__(self, decide_after: int, db_time: datetime = T0) -> None:
        self.reads = 0
        self.decide_after = decide_after
        self.db_time = db_time

    async def get(self, namespace: str, agreement_id: str) -> AgreementView:
        self.reads += 1
        agreement = PENDING
        if self.reads > self.decide_after:
            agreement = replace(PENDING, state=AgreementState.ABORTED)
        return AgreementView(revision=self.reads, agreement=agreement, db_time=self.db_time)


class FakeNotifier:
    def __init__(self, recheck_s: float = 30.0) -> None:
        self.recheck_s = recheck_s
        self.event = asyncio.Event()

    @contextlib.asynccontextmanager
    async def follow(self, pattern: str, is_prefix: bool) -> AsyncIterator[asyncio.Event]:
        yield self.event

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


def test_seats_count_agents_once_and_roles_by_count() -> None:
    assert seats(PENDING.participants) == 3


async def test_wait_rereads_at_the_deadline_without_any_wake() -> None:
    store = FakeStore(decide_after=2)  # the read after the deadline records the expiry
    service = AgreementService(store, FakeNotifier())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    view = await service.wait("ns", "ag", timedelta(seconds=10))
    assert view.agreement.state is AgreementState.ABORTED
    assert 0.15 <= loop.time() - started < 2  # the deadline (0.2 s away), not the recheck


async def test_wait_wakes_on_notification() -> None:
    store = FakeStore(decide_after=2, db_time=T0 - timedelta(hours=1))  # deadline far away
    notifier = FakeNotifier()
    service = AgreementService(store, notifier)  # type: ignore[arg-type]
    task = asyncio.create_task(service.wait("ns", "ag", timedelta(seconds=10)))
    await asyncio.sleep(0.05)
    assert not task.done()
    notifier.event.set()
    view = await asyncio.wait_for(task, 1)
    assert view.agreement.decided and store.reads == 3


async def test_wait_gives_up_and_answers_pending() -> None:
    store = FakeStore(decide_after=99, db_time=T0 - timedelta(hours=1))
    service = AgreementService(store, FakeNotifier())  # type: ignore[arg-type]
    view = await service.wait("ns", "ag", timedelta(seconds=0.1))
    assert view.agreement.state is AgreementState.PENDING
    assert (await service.wait("ns", "ag", timedelta(0))).agreement.state is AgreementState.PENDING


async def test_wait_answers_at_once_when_the_callers_deadline_is_too_near() -> None:
    store = FakeStore(decide_after=99, db_time=T0 - timedelta(hours=1))
    service = AgreementService(store, FakeNotifier())  # type: ignore[arg-type]
    view = await service.wait("ns", "ag", timedelta(minutes=5), time_remaining=0.01)
    assert view.agreement.state is AgreementState.PENDING and store.reads == 1
