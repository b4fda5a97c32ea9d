"""Run the client's coroutines from LangGraph's blocking and asyncio entry points.

LangGraph calls a store or saver both ways (``batch``/``abatch``, ``put``/``aput``). The work is
written once, as coroutines of an ``AsyncClient``; this module runs them on the loop that owns
the client's channel: a blocking ``Client``'s private loop thread, or the loop an
``AsyncClient`` was created on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from coordd_client import AsyncClient, Client

T = TypeVar("T")


class Bridge:
    """The async client behind a ``Client`` or ``AsyncClient``, and a way to run its calls."""

    def __init__(self, client: Client | AsyncClient, *, owned: bool = False) -> None:
        self.client = client
        self.owned = owned
        if isinstance(client, Client):
            self.aclient: AsyncClient = client._a
            self._loop: asyncio.AbstractEventLoop | None = client._loop.loop
        elif isinstance(client, AsyncClient):
            self.aclient = client
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
        else:
            raise TypeError(
                f"expected a coordd_client.Client or AsyncClient, got {type(client).__name__}"
            )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* on the client's loop and wait for it (blocking callers)."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError(
                "this store/saver wraps an AsyncClient that has not been used from its event"
                " loop yet: call the async methods (abatch, aput, aget_tuple, ...) or pass a"
                " blocking coordd_client.Client"
            )
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "blocking call from the event loop that runs the coordd client: use the async"
                " methods (abatch, aput, aget_tuple, ...) inside async code"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await *coro* on the client's loop (from any loop)."""
        current = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = current
        if self._loop is current:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        """Close the client if this bridge opened it (``from_addr``)."""
        if self.owned and isinstance(self.client, Client):
            self.client.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def connect(addr: str | None, connect_kwargs: dict[str, Any]) -> Bridge:
    """A blocking client for ``from_addr`` (no address: ``$COORDD_ADDR``), owned by the bridge.

    Without ``agent_id``, the agent is ``$COORDD_AGENT_ID`` or ``langgraph-<pid>``.
    """
    kwargs = dict(connect_kwargs)
    kwargs.setdefault("agent_id", os.environ.get("COORDD_AGENT_ID") or f"langgraph-{os.getpid()}")
    return Bridge(Client.connect(addr, **kwargs), owned=True)
