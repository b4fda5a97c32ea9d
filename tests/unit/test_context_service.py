"""ContextService without I/O: delivery to one agent, whose inbox a read opens, acks, and
a subscription's backlog then live entries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from coordd.domain.context import Acks, ContextService, InboxRead
from coordd.domain.models import ContextEntry, ContextPost, ContextQuery, Fence, Identity
from coordd.errors import RevisionNotReachedError

WHO = Identity(agent_id="r1", role="reviewer")
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def entry(entry_id: int) -> ContextEntry:
    return ContextEntry(
        namespace="ns",
        to_role="reviewer",
        to_agent_id="",
        context_type="note",
        content_json="{}",
        task_id="",
        correlation_id="",
        delivery="each",
        sender_vector={},
        id=entry_id,
        from_agent_id="w1",
        from_role="writer",
        create_time=T0,
        expire_time=T0,
        acks=[],
    )


def query(after_id: int = 0, limit: int = 2) -> ContextQuery:
    return ContextQuery(
        namespace="ns",
        unread_only=True,
        context_type="",
        task_id="",
        after_id=after_id,
        limit=limit,
        lease=timedelta(seconds=30),
    )


class FakeStore:
    def __init__(self, entries: list[ContextEntry], revision: int = 5) -> None:
        self.entries = entries
        self.revision = revision
        self.posts: list[ContextPost] = []
        self.reads: list[tuple[str, str, int]] = []
        self.acks: list[list[int]] = []

    async def post(self, who: Identity, post: ContextPost) -> ContextEntry:
        self.posts.append(post)
        return entry(1)

    async def read(
        self, agent_id: str, role: str, q: ContextQuery
    ) -> tuple[int, list[ContextEntry]]:
        self.reads.append((agent_id, role, q.after_id))
        later = [e for e in self.entries if e.id > q.after_id]
        return self.revision, later[: q.limit]

    async def ack(
        self, who: Identity, namespace: str, ids: list[int], fence: Fence | None
    ) -> tuple[int, list[int]]:
        self.acks.append(ids)
        return self.revision, ids


class Notifier:
    """Wakes subscribers when told to; `waits` counts how often they waited."""

    recheck_s = 60.0

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waits = 0

    @contextlib.asynccontextmanager
    async def follow(self, pattern: str, is_prefix: bool) -> AsyncIterator[asyncio.Event]:
        yield self.event

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        self.waits += 1
        await changed.wait()


def post(to_role: str, to_agent_id: str, delivery: str) -> ContextPost:
    return ContextPost(
        namespace="ns",
        to_role=to_role,
        to_agent_id=to_agent_id,
        context_type="note",
        content_json="{}",
        task_id="",
        correlation_id="",
        delivery=delivery,
        sender_vector={},
        ttl=timedelta(minutes=1),
        fence=None,
    )


async def test_an_entry_for_one_agent_is_delivered_to_it_whatever_the_delivery() -> None:
    store = FakeStore([])
    service = ContextService(store, Notifier())
    await service.post(WHO, post("", "r2", "any"))
    await service.post(WHO, post("reviewer", "", "any"))
    assert [p.delivery for p in store.posts] == ["each", "any"]


async def test_a_read_opens_the_inbox_asked_for_or_the_callers_own() -> None:
    store = FakeStore([entry(1)])
    service = ContextService(store, Notifier())
    await service.read(WHO, InboxRead(query=query(), as_role="", min_revision=0), 0)
    await service.read(WHO, InboxRead(query=query(), as_role="lead", min_revision=0), 0)
    assert [(a, r) for a, r, _ in store.reads] == [("r1", "reviewer"), ("r1", "lead")]
    with pytest.raises(RevisionNotReachedError):
        await service.read(WHO, InboxRead(query=query(), as_role="", min_revision=6), 0)


async def test_acks_go_once_each_in_id_order() -> None:
    store = FakeStore([])
    service = ContextService(store, Notifier())
    assert await service.ack(WHO, Acks(namespace="ns", ids=[9, 3, 9, 4], fence=None)) == (
        5,
        [3, 4, 9],
    )


async def test_a_subscription_drains_the_backlog_then_waits_for_new_entries() -> None:
    store = FakeStore([entry(i) for i in (1, 2, 3)])
    notifier = Notifier()
    stream = ContextService(store, notifier).subscribe(WHO, query(limit=2))
    got = [await anext(stream) for _ in range(3)]
    assert [e.id for _, e in got] == [1, 2, 3]
    assert [after for _, _, after in store.reads] == [0, 2], "a full page reads on at once"
    store.entries.append(entry(4))
    notifier.event.set()
    _, fourth = await asyncio.wait_for(anext(stream), 30)
    assert fourth.id == 4 and notifier.waits == 1
    await stream.aclose()
