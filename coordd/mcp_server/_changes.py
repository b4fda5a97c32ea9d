"""Namespaces' change logs as MCP resources, ``coordd://NS/changes``, with live updates.

Reading the resource returns the namespace's revision and its latest changes (who changed
what). Subscribing to it (``subscriptions/listen`` on 2026-07-28 connections,
``resources/subscribe`` on earlier ones) starts one coordd Watch per namespace, from the
revision current at subscription time, so no change made after the subscription is missed;
each change sends ``notifications/resources/updated`` for the URI to subscribed clients, who
then read it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

from coordd.errors import CoorddError, RevisionCompactedError
from coordd_client import AsyncClient, ChangeEvent

from ._results import plain

logger = logging.getLogger(__name__)

SCHEME = "coordd://"
SUFFIX = "/changes"
TEMPLATE = "coordd://{+namespace}/changes"
RECENT = 50
MAX_FEEDS = 256


def uri_of(namespace: str) -> str:
    return f"{SCHEME}{namespace}{SUFFIX}"


def namespace_of(uri: str) -> str | None:
    """The namespace a ``coordd://NS/changes`` URI names (None for other URIs)."""
    if uri.startswith(SCHEME) and uri.endswith(SUFFIX) and len(uri) > len(SCHEME + SUFFIX):
        return uri[len(SCHEME) : -len(SUFFIX)]
    return None


async def recent_changes(
    client: AsyncClient, namespace: str, limit: int = RECENT
) -> dict[str, Any]:
    """The namespace's revision and its last *limit* change-log events, oldest first."""
    revision = (await client.claims.list(namespace, page_size=1)).revision
    events: list[ChangeEvent] = []
    start = max(1, revision - limit + 1)
    while revision > 0:
        try:
            async with asyncio.timeout(10):
                async for event in client.watch(namespace, start_revision=start):
                    events.append(event)
                    if event.revision >= revision:
                        break
            break
        except RevisionCompactedError as exc:  # older changes are gone: from what is kept
            start = max(exc.compact_revision, start + 1)
            events.clear()
    return {
        "namespace": namespace,
        "revision": revision,
        "changes": [plain(e) for e in events],
        "note": "The latest changes, oldest first. Subscribe to this resource to be told of new"
        " ones; after a change, read it again.",
    }


class ChangeFeeds:
    """One Watch per subscribed namespace, fanned out to MCP subscribers."""

    def __init__(self, client: AsyncClient, bus: SubscriptionBus) -> None:
        self._client = client
        self._bus = bus
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._legacy: dict[str, set[ServerSession]] = {}

    async def follow(self, uris: Iterable[str]) -> None:
        """Start following the namespaces of *uris* (from their current revision)."""
        for uri in uris:
            namespace = namespace_of(uri)
            if namespace is None or namespace in self._tasks:
                continue
            if len(self._tasks) >= MAX_FEEDS:
                logger.warning("not following %s: %d namespaces followed already", uri, MAX_FEEDS)
                continue
            try:
                revision = (await self._client.claims.list(namespace, page_size=1)).revision
            except CoorddError as exc:
                logger.warning("cannot follow %s: %s", uri, exc)
                continue
            self._tasks[namespace] = asyncio.create_task(
                self._run(namespace, revision + 1), name=f"coordd-mcp follow {namespace}"
            )

    def subscribe_session(self, uri: str, session: ServerSession) -> None:
        self._legacy.setdefault(uri, set()).add(session)

    def unsubscribe_session(self, uri: str, session: ServerSession) -> None:
        self._legacy.get(uri, set()).discard(session)

    async def _run(self, namespace: str, start: int) -> None:
        uri = uri_of(namespace)
        try:
            async for _event in self._client.watch(namespace, start_revision=start):
                await self._bus.publish(ResourceUpdated(uri=uri))
                for session in list(self._legacy.get(uri, ())):
                    try:
                        await session.send_resource_updated(uri)
                    except Exception:  # that client went away: stop telling it
                        self._legacy[uri].discard(session)
        except CoorddError as exc:
            logger.warning("stopped following %s: %s", uri, exc)
        finally:
            self._tasks.pop(namespace, None)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
