"""Context rules: directional posts, inbox reads, acknowledgements, live subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Protocol

from coordd.domain.consistency import at_least
from coordd.domain.models import ContextEntry, ContextPost, ContextQuery, Fence, Identity


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxRead:
    """ReadContext: *query* over the inbox of *as_role* ("" = the caller's own role),
    reflecting at least *min_revision*."""

    query: ContextQuery
    as_role: str
    min_revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Acks:
    """AckContext: the entries *ids* acted on (fenced when *fence* is given)."""

    namespace: str
    ids: list[int]
    fence: Fence | None


class ContextStore(Protocol):
    async def post(self, who: Identity, post: ContextPost) -> ContextEntry: ...

    async def read(
        self, agent_id: str, role: str, query: ContextQuery
    ) -> tuple[int, list[ContextEntry]]: ...

    async def ack(
        self, who: Identity, namespace: str, ids: list[int], fence: Fence | None
    ) -> tuple[int, list[int]]: ...


class Notifier(Protocol):
    recheck_s: float

    def follow(self, pattern: str, is_prefix: bool) -> AbstractAsyncContextManager[asyncio.Event]:
        """Register interest in a namespace (or prefix); the Event is set when it changes."""
        ...

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        """Until *changed* is set or *timeout* passes; ShuttingDownError once stopping."""
        ...


class ContextService:
    """Context rules: delivery to one agent, whose inbox a read opens, acks once each in id
    order, reads at a minimum revision, and subscriptions (backlog, then new entries).

    Attributes:
        store: The context store, for calls without a rule here.
    """

    def __init__(self, store: ContextStore, notifier: Notifier) -> None:
        self.store = store
        self._notifier = notifier

    async def post(self, who: Identity, post: ContextPost) -> ContextEntry:
        # An entry for one agent is delivered to that agent: ANY only makes sense for roles.
        if post.to_agent_id:
            post = replace(post, delivery="each")
        return await self.store.post(who, post)

    async def read(
        self, who: Identity, r: InboxRead, wait_s: float
    ) -> tuple[int, list[ContextEntry]]:
        """A page of the inbox of ``r.as_role`` (or the caller's role), at
        ``r.min_revision`` or later, waiting up to *wait_s* for it (else
        REVISION_NOT_REACHED). The servicer checked that another role's inbox is allowed."""
        role = r.as_role or who.role
        return await at_least(
            r.query.namespace,
            r.min_revision,
            lambda: self.store.read(who.agent_id, role, r.query),
            wait_s,
        )

    async def ack(self, who: Identity, a: Acks) -> tuple[int, list[int]]:
        """Acknowledge each id once, in id order."""
        return await self.store.ack(who, a.namespace, sorted(set(a.ids)), a.fence)

    async def subscribe(
        self, who: Identity, query: ContextQuery
    ) -> AsyncIterator[tuple[int, ContextEntry]]:
        """The backlog after ``query.after_id``, then entries as they are posted."""
        cursor = query.after_id
        async with self._notifier.follow(query.namespace, False) as changed:
            while True:
                changed.clear()  # before reading: a post after the read sets it again
                revision, entries = await self.store.read(
                    who.agent_id, who.role, replace(query, after_id=cursor)
                )
                for entry in entries:
                    yield revision, entry
                    cursor = entry.id
                if len(entries) == query.limit:
                    continue  # more backlog
                await self._notifier.wait(changed, self._notifier.recheck_s)
