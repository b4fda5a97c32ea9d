"""Wake-ups for Watch and Subscribe streams, without polling in the steady state.

A stream registers the namespace (or prefix) it follows and waits on an asyncio.Event. Events
are set

- in-process, right after this daemon's own writes (``WriteBatcher`` calls :meth:`wake`), and
- from PostgreSQL ``LISTEN coordd_changes`` for writes made through other daemon replicas.

Writers only NOTIFY when some daemon registered interest in a matching namespace (the
``coordd.interest`` table, leased and refreshed here), because notifying transactions commit one
at a time. After the LISTEN connection is lost and re-established, every stream is woken: each
re-reads from its cursor, so nothing is missed. A stream also re-reads every ``recheck_s`` as a
bound on one narrow cross-replica race (a remote write whose interest check ran just before our
registration became visible); local writes never depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg

from coordd import telemetry
from coordd.errors import ShuttingDownError
from coordd.storage.db import Database

logger = logging.getLogger(__name__)

CHANNEL = "coordd_changes"
_INTEREST_LEASE = timedelta(seconds=30)
_REFRESH_S = 10.0


@dataclass(eq=False)
class _Interest:
    pattern: str
    is_prefix: bool
    events: set[asyncio.Event] = field(default_factory=set)
    registered: bool = False

    def matches(self, namespace: str) -> bool:
        return namespace == self.pattern or (
            self.is_prefix and namespace.startswith(self.pattern + "/")
        )


class ChangeNotifier:
    """Registry of waiting streams, fed by local writes and by PostgreSQL notifications."""

    def __init__(self, db: Database, daemon_id: str, recheck_s: float = 5.0) -> None:
        self._db = db
        self._daemon_id = daemon_id
        self.recheck_s = recheck_s
        self._interests: dict[tuple[str, bool], _Interest] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests wait on it)."""
        self.closing = False
        """Set by :meth:`close`: the daemon is stopping and every waiting stream ends."""

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="coordd-listen"),
            asyncio.create_task(self._refresh_loop(), name="coordd-interest"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._db.execute(
                "DELETE FROM coordd.interest WHERE daemon_id = %s", (self._daemon_id,)
            )

    def close(self) -> None:
        """The daemon is stopping: end every stream now rather than at the end of the grace.

        Streams waiting in :meth:`wait` (and any that start waiting from now on) raise
        ShuttingDownError, which reaches clients as UNAVAILABLE; they resume elsewhere or
        after the restart. Unary calls in flight keep the shutdown grace.
        """
        self.closing = True
        self.wake_all()

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        """Until *changed* is set or *timeout* seconds pass (the caller then re-reads).

        Raises:
            ShuttingDownError: the daemon is stopping.
        """
        if not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        if self.closing:
            raise ShuttingDownError()

    def wake(self, namespace: str) -> None:
        """A namespace changed: wake the streams that follow it."""
        for interest in self._interests.values():
            if interest.matches(namespace):
                for event in interest.events:
                    event.set()

    def following(self, namespace: str) -> bool:
        """True if some local stream follows *namespace* (its interest is registered)."""
        return any(i.matches(namespace) and i.registered for i in self._interests.values())

    def wake_all(self) -> None:
        for interest in self._interests.values():
            for event in interest.events:
                event.set()

    @contextlib.asynccontextmanager
    async def follow(self, pattern: str, is_prefix: bool) -> AsyncIterator[asyncio.Event]:
        """Register interest in *pattern* for the duration of a stream; yield its Event."""
        key = (pattern, is_prefix)
        interest = self._interests.get(key)
        first = interest is None
        if interest is None:
            interest = self._interests[key] = _Interest(pattern, is_prefix)
        event = asyncio.Event()
        interest.events.add(event)
        try:
            if first:
                await self._register(pattern, is_prefix)
                interest.registered = True
            yield event
        finally:
            interest.events.discard(event)
            if not interest.events and self._interests.get(key) is interest:
                del self._interests[key]
                with contextlib.suppress(Exception):
                    await self._db.execute(
                        "DELETE FROM coordd.interest WHERE daemon_id = %s AND pattern = %s"
                        " AND is_prefix = %s",
                        (self._daemon_id, pattern, is_prefix),
                    )

    async def _register(self, pattern: str, is_prefix: bool) -> None:
        await self._db.execute(
            "INSERT INTO coordd.interest (daemon_id, pattern, is_prefix, expire_time)"
            " VALUES (%s, %s, %s, now() + %s) ON CONFLICT (daemon_id, pattern, is_prefix)"
            " DO UPDATE SET expire_time = EXCLUDED.expire_time",
            (self._daemon_id, pattern, is_prefix, _INTEREST_LEASE),
        )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_S)
            try:
                with telemetry.untraced():  # housekeeping: nothing a trace reader needs
                    for pattern, is_prefix in list(self._interests):
                        await self._register(pattern, is_prefix)
                    await self._db.execute("DELETE FROM coordd.interest WHERE expire_time < now()")
            except Exception:
                logger.warning("could not refresh watch registrations", exc_info=True)

    async def _listen_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._db.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.1
                    self.wake_all()  # anything missed while (re)connecting is re-read
                    async for note in conn.notifies():
                        self.wake(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
