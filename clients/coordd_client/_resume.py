"""Resuming server streams (Watch, SubscribeContext) after the daemon went away.

A daemon that stops ends its streams at once with UNAVAILABLE (reason SHUTTING_DOWN); a crash
or a network cut ends them with UNAVAILABLE too. The stream's owner then reconnects and asks
again from its cursor. This decides when to try again, and when to give up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from typing import Any

from coordd.errors import UnavailableError

from ._core import Core

_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


class Resumer:
    """Backoff across reconnect attempts, for up to *within* seconds of disconnection.

    :meth:`follow` does it all for a stream; by hand, call :meth:`delivered` whenever the
    stream yields something (the outage is over), and :meth:`retry` on UnavailableError: True
    means ask again from the cursor, False means give up (re-raise).
    """

    def __init__(self, core: Core, within: float) -> None:
        self._core = core
        self._within = within
        self._deadline: float | None = None
        self._backoff = _FIRST_BACKOFF_S

    async def follow(
        self, method: Callable[..., Any], request: Callable[[], Any]
    ) -> AsyncGenerator[Any, None]:
        """The responses of the server stream *method*, asked again with a fresh
        ``request()`` (built from the caller's cursor) after each outage it outlasts."""
        while True:
            try:
                # aclosing: the call is cancelled as soon as this generator ends or is closed.
                async with contextlib.aclosing(self._core.stream(method, request())) as responses:
                    async for response in responses:
                        self.delivered()
                        yield response
                return
            except UnavailableError as exc:
                if not await self.retry(exc):
                    raise

    def delivered(self) -> None:
        self._deadline = None
        self._backoff = _FIRST_BACKOFF_S

    async def retry(self, exc: UnavailableError) -> bool:
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._within
        # A stopping daemon's channel can still look ready: pause before asking again, as
        # long as the daemon said (RetryInfo) or the backoff says, whichever is longer.
        hinted = getattr(exc, "retry_after", None)
        pause = max(self._backoff, hinted.total_seconds() if isinstance(hinted, timedelta) else 0)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_S)
        remaining = self._deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        try:
            await asyncio.wait_for(
                self._core.channel.channel_ready(), max(self._deadline - loop.time(), 0)
            )
        except TimeoutError:
            return False
        return True
