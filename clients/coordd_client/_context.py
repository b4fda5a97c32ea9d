"""Context: directional entries from one role (or agent) to another, read and acknowledged."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from coordd.v1 import common_pb2
from coordd.v1 import context_service_pb2 as pb
from coordd.v1 import context_service_pb2_grpc as pb_grpc
from coordd.vocabulary import Delivery

from . import _convert as cv
from ._blocking import Face, blocking, blocking_iter
from ._construct import slots_constructor
from ._core import Service
from ._models import Acknowledgement, ContextEntry, Fence
from ._resume import Resumer

_DELIVERY_LABELS = {d.number: d.value for d in Delivery}
_from_timestamp = datetime.fromtimestamp
# ContextEntry without its frozen __init__: the same class, fields, equality and repr.
_new_entry = slots_constructor(ContextEntry)


def _time(ts: Any) -> datetime:
    # Whole microseconds as an exact integer, then one division: the nearest double is within
    # a quarter microsecond for any date before year 2100, so fromtimestamp's rounding gives
    # back the exact microsecond; about twice as fast as epoch + timedelta.
    return _from_timestamp((ts.seconds * 1_000_000 + ts.nanos // 1000) / 1e6, UTC)


def _entry(msg: pb.ContextEntry) -> ContextEntry:
    # Field by field rather than wire.from_message: take(n) reads up to 1,000 entries a call.
    content = msg.content_json
    vector = msg.sender_vector.revisions
    return _new_entry(
        namespace=msg.namespace,
        id=msg.id,
        from_agent_id=msg.from_agent_id,
        from_role=msg.from_role,
        to_role=msg.to_role,
        to_agent_id=msg.to_agent_id,
        context_type=msg.context_type,
        content=json.loads(content) if content else None,
        task_id=msg.task_id,
        correlation_id=msg.correlation_id,
        delivery=_DELIVERY_LABELS.get(msg.delivery, "each"),
        # By key: dict(map) and map.items() go through the Mapping mixin, 3-4x slower.
        sender_vector={ns: vector[ns] for ns in vector},
        create_time=_time(msg.create_time),
        expire_time=_time(msg.expire_time),
        acks=[
            Acknowledgement(agent_id=a.agent_id, role=a.role, ack_time=_time(a.ack_time))
            for a in msg.acks
        ]
        if msg.acks
        else [],
    )


class AsyncContext(Service):
    """``client.context``: post to a role or an agent, read the inbox, acknowledge, subscribe.

    Reading an entry merges the sender's version vector into this client's session, so reads
    that follow see everything the sender had written before posting (causal consistency).
    """

    stub_class = pb_grpc.ContextServiceStub
    _stub: pb_grpc.ContextServiceAsyncStub

    def _received(self, entry: ContextEntry) -> ContextEntry:
        self._core.session.merge(entry.sender_vector)
        self._core.session.observe(entry.namespace, entry.id)
        return entry

    def _received_page(self, namespace: str, entries: list[ContextEntry]) -> list[ContextEntry]:
        """``_received`` for a page: the senders' vectors folded first, then merged into the
        session once (a take reads up to 1,000 entries)."""
        if not entries:
            return entries
        merged: dict[str, int] = {}
        for entry in entries:
            for ns, revision in entry.sender_vector.items():
                if revision > merged.get(ns, -1):
                    merged[ns] = revision
        merged[namespace] = max(merged.get(namespace, -1), max(e.id for e in entries))
        self._core.session.merge(merged)
        return entries

    async def post(
        self,
        namespace: str,
        content: Any,
        *,
        to_role: str = "",
        to_agent_id: str = "",
        context_type: str = "",
        task_id: str = "",
        correlation_id: str = "",
        ttl: timedelta | float | None = None,
        delivery: str = "each",
        fence: Fence | None = None,
    ) -> ContextEntry:
        """Post *content* (any JSON value) to a role or to one agent.

        *context_type* says what kind of entry it is, for readers that filter by it (unset:
        ``"message"``).

        ``delivery="any"`` hands the entry to one agent of the role (redelivered if it does not
        acknowledge in time); ``"each"`` (default) to every agent of the role.
        """
        resp = await self._core.call(
            self._stub.PostContext,
            pb.PostContextRequest(
                namespace=namespace,
                to_role=to_role,
                to_agent_id=to_agent_id,
                context_type=context_type,
                content_json=json.dumps(content, separators=(",", ":")),
                task_id=task_id,
                correlation_id=correlation_id,
                ttl=cv.duration(ttl),
                delivery=Delivery.parse(delivery, "delivery").number,  # type: ignore[arg-type]
                fence=cv.fence(fence),
                sender_vector=common_pb2.VersionVector(revisions=self._core.session.vector),
            ),
        )
        return _entry(resp.entry)

    async def inbox(
        self,
        namespace: str,
        *,
        unread: bool = True,
        context_type: str = "",
        task_id: str = "",
        after_id: int = 0,
        limit: int = 0,
        lease: timedelta | float | None = None,
        role: str = "",
    ) -> list[ContextEntry]:
        """Entries for this agent (its id or its role), oldest first; unread only by default.

        For ANY entries an unread read takes them for *lease* (default 60 s): acknowledge them
        before then or they go back to the role.
        """
        resp = await self._core.call(
            self._stub.ReadContext,
            pb.ReadContextRequest(
                namespace=namespace,
                unread_only=unread,
                context_type=context_type,
                task_id=task_id,
                after_id=after_id,
                page_size=limit,
                lease=cv.duration(lease),
                role=role,
            ),
        )
        return self._received_page(namespace, [_entry(e) for e in resp.entries])

    async def sent(
        self, namespace: str, *, after_id: int = 0, limit: int = 0, context_type: str = ""
    ) -> list[ContextEntry]:
        """Entries this agent posted, with who acknowledged them."""
        resp = await self._core.call(
            self._stub.ReadContext,
            pb.ReadContextRequest(
                namespace=namespace,
                sent=True,
                after_id=after_id,
                page_size=limit,
                context_type=context_type,
            ),
        )
        return [_entry(e) for e in resp.entries]

    async def take(
        self,
        namespace: str,
        n: int,
        *,
        lease: timedelta | float | None = None,
        context_type: str = "",
        task_id: str = "",
    ) -> list[ContextEntry]:
        """Take up to *n* (1-1000) unread entries for this agent in one call, oldest first.

        ANY entries of this agent's role become this agent's for *lease* (default 60 s):
        acknowledge them with one ``ack(namespace, [e.id for e in entries])`` before then, or
        they go back to the role. A batch of both is two round trips for *n* entries.
        """
        if not 1 <= n <= 1000:
            raise ValueError(f"n must be between 1 and 1000, got {n}")
        return await self.inbox(
            namespace,
            unread=True,
            limit=n,
            lease=lease,
            context_type=context_type,
            task_id=task_id,
        )

    async def ack(
        self, namespace: str, ids: int | list[int], *, fence: Fence | None = None
    ) -> list[int]:
        """Acknowledge entries after acting on them; returns the ids acknowledged now."""
        resp = await self._core.call(
            self._stub.AckContext,
            pb.AckContextRequest(
                namespace=namespace,
                ids=[ids] if isinstance(ids, int) else ids,
                fence=cv.fence(fence),
            ),
        )
        return list(resp.acknowledged_ids)

    async def subscribe(
        self,
        namespace: str,
        *,
        after_id: int = 0,
        unread: bool = False,
        context_type: str = "",
        lease: timedelta | float | None = None,
        reconnect_for: float = 30.0,
    ) -> AsyncIterator[ContextEntry]:
        """The backlog after *after_id*, then entries as they are posted (no polling).

        If the connection drops or the daemon stops, the subscription resumes after the last
        entry delivered, trying for up to *reconnect_for* seconds: nothing is delivered twice
        or skipped. Past that it raises UnavailableError; subscribe again with the last id.
        """

        def request() -> pb.SubscribeContextRequest:
            return pb.SubscribeContextRequest(
                namespace=namespace,
                after_id=after_id,
                unread_only=unread,
                context_type=context_type,
                lease=cv.duration(lease),
            )

        resumer = Resumer(self._core, reconnect_for)
        stream = resumer.follow(self._stub.SubscribeContext, request)
        async with contextlib.aclosing(stream) as responses:
            async for resp in responses:
                entry = self._received(_entry(resp.entry))
                after_id = entry.id
                yield entry


class Context(Face[AsyncContext]):
    """Blocking ``client.context``; see ``AsyncContext``."""

    post = blocking(AsyncContext.post)
    inbox = blocking(AsyncContext.inbox)
    take = blocking(AsyncContext.take)
    sent = blocking(AsyncContext.sent)
    ack = blocking(AsyncContext.ack)
    subscribe = blocking_iter(AsyncContext.subscribe)
