"""Reads at a minimum revision: reflect at least what the caller has seen, or wait, or refuse.

A session (an agent, its sidecar or its embedded cache) sends the largest revision it has seen
per namespace as ``min_revision`` (DESIGN.md §2). Whoever answers must reflect at least that
revision. Reads that go to PostgreSQL see every committed write, so the first attempt almost
always passes; what can lag is derived state (another replica's vector index catching up from
the change log) or a database that has not yet seen the write (a streaming replica). Those wait
a bounded time, polling with backoff, and then refuse with ``REVISION_NOT_REACHED`` rather
than answer older.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from coordd.errors import RevisionNotReachedError

T = TypeVar("T")

MAX_WAIT_S = 2.0
"""The longest a read waits for its ``min_revision`` (less if the call's deadline is nearer)."""

_ANSWER_MARGIN_S = 0.05
_FIRST_DELAY_S = 0.002
_MAX_DELAY_S = 0.05


def wait_budget(time_remaining: float | None) -> float:
    """Seconds a read may wait: ``MAX_WAIT_S``, or half the call's remaining deadline if less.

    Half, so that the caller still has time to hear ``REVISION_NOT_REACHED`` and go elsewhere
    instead of running into its own deadline.
    """
    if time_remaining is None:
        return MAX_WAIT_S
    return max(0.0, min(MAX_WAIT_S, time_remaining / 2))


def answer_within(wait: timedelta, time_remaining: float | None) -> timedelta:
    """*wait*, shortened to end 50 ms before the call's deadline (*time_remaining*, seconds,
    None without one), so a waiting call answers before its caller gives up."""
    if time_remaining is None:
        return wait
    return min(wait, timedelta(seconds=max(time_remaining - _ANSWER_MARGIN_S, 0)))


async def at_least(
    namespace: str,
    min_revision: int,
    read: Callable[[], Awaitable[tuple[int, T]]],
    wait_s: float,
) -> tuple[int, T]:
    """Run *read* (which returns the revision it reflects and its result) until it reflects
    *min_revision*; retry with backoff for up to *wait_s*, then raise RevisionNotReachedError.
    """
    revision, result = await read()
    if revision >= min_revision:
        return revision, result
    deadline = time.monotonic() + wait_s
    delay = _FIRST_DELAY_S
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, _MAX_DELAY_S)
        revision, result = await read()
        if revision >= min_revision:
            return revision, result
    raise RevisionNotReachedError(namespace, min_revision, revision)
