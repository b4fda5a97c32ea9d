"""Context rules: directional posts, inbox reads, acknowledgements, live subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Protocol

from coordd.domain.models import ContextEntry, ContextPost, ContextQuery, Fence, Identity


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
    def __init__(self, store: ContextStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier

    async def post(self, who: Identity, post: ContextPost) -> ContextEntry:
        # An entry for one agent is delivered to that agent: ANY only makes sense for roles.
        if post.to_agent_id:
            post = replace(post, delivery="each")
        return await self._store.post(who, post)

    async def read(
        self, who: Identity, query: ContextQuery, as_role: str = ""
    ) -> tuple[int, list[ContextEntry]]:
        return await self._store.read(who.agent_id, as_role or who.role, query)

    async def ack(
        self, who: Identity, namespace: str, ids: list[int], fence: Fence | None
    ) -> tuple[int, list[int]]:
        return await self._store.ack(who, namespace, ids, fence)

    async def subscribe(
        self, who: Identity, query: ContextQuery
    ) -> AsyncIterator[tuple[int, ContextEntry]]:
        """The backlog after ``query.after_id``, then entries as they are posted."""
        cursor = query.after_id
        async with self._notifier.follow(query.namespace, False) as changed:
            while True:
                changed.clear()  # before reading: a post after the read sets it again
                revision, entries = await self._store.read(
                    who.agent_id, who.role, replace(query, after_id=cursor)
                )
                for entry in entries:
                    yield revision, entry
                    cursor = entry.id
                if len(entries) == query.limit:
                    continue  # more backlog
                await self._notifier.wait(changed, self._notifier.recheck_s)
