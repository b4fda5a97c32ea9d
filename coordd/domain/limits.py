"""Protection from runaway agents: a token bucket of calls and a cap on open streams, per caller.

Limits are per agent (one agent's retry storm spends its own bucket, never another's) and
configured per role in the policy file, so a SIGHUP changes them::

    [[limits]]
    role = "worker"         # or "*" for every role without its own entry
    rate = 50               # calls per second, sustained (0 = unlimited)
    burst = 100             # calls allowed at once after a quiet spell (default: rate)
    streams = 8             # open Watch / SubscribeContext streams at once (0 = unlimited)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from coordd.domain.models import Identity
from coordd.errors import RateLimitedError, TooManyStreamsError


@dataclass(frozen=True, slots=True)
class RoleLimits:
    role: str
    rate: float = 0.0
    burst: float = 0.0
    streams: int = 0


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Limiter:
    """Admits calls and streams per agent, by the limits of the agent's role."""

    def __init__(
        self,
        limits: Callable[[], tuple[RoleLimits, ...]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, int] = {}

    def _for(self, who: Identity) -> RoleLimits | None:
        fallback = None
        for entry in self._limits():
            if entry.role == who.role:
                return entry
            if entry.role == "*":
                fallback = entry
        return fallback

    def admit(self, who: Identity) -> None:
        """Take one call from the caller's bucket, or raise RateLimitedError (with how long
        until a token is back)."""
        limits = self._for(who)
        if limits is None or limits.rate <= 0:
            return
        burst = limits.burst or limits.rate
        now = self._clock()
        bucket = self._buckets.get(who.agent_id)
        if bucket is None:
            bucket = self._buckets[who.agent_id] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * limits.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / limits.rate
            raise RateLimitedError(who.agent_id, limits.rate, timedelta(seconds=wait))
        bucket.tokens -= 1.0

    def open_stream(self, who: Identity) -> None:
        """Count a stream the caller opens, or raise TooManyStreamsError at the cap."""
        limits = self._for(who)
        open_now = self._streams.get(who.agent_id, 0)
        if limits is not None and limits.streams > 0 and open_now >= limits.streams:
            raise TooManyStreamsError(who.agent_id, limits.streams)
        self._streams[who.agent_id] = open_now + 1

    def close_stream(self, who: Identity) -> None:
        left = self._streams.get(who.agent_id, 0) - 1
        if left > 0:
            self._streams[who.agent_id] = left
        else:
            self._streams.pop(who.agent_id, None)

    def open_streams(self, agent_id: str) -> int:
        """Streams *agent_id* has open now."""
        return self._streams.get(agent_id, 0)
