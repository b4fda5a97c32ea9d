"""Group commits per namespace: concurrent writes to one namespace share one transaction.

Every write locks its namespace's revision row until commit (that is what makes revisions
gapless and in commit order), so writes to one namespace run one commit at a time. Instead of
queueing on the row lock in PostgreSQL, writes queue here: while a batch for a namespace is in
flight, new writes for it wait, then go together as the next batch, pipelined in one
transaction with one commit. Each write still gets its own revision and change-log row. Under
no contention a batch has one write and costs exactly what a lone statement costs.

If a batch fails, its writes are retried one by one, so one bad write fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from coordd.storage.db import Database, Row

logger = logging.getLogger(__name__)

Op = tuple[str, Sequence[Any]]


class _Pending:
    __slots__ = ("future", "memory", "op")

    def __init__(self, op: Op, future: asyncio.Future[list[Row]], memory: bool) -> None:
        self.op = op
        self.future = future
        self.memory = memory


class WriteBatcher:
    """Runs single-row write statements for a namespace, batched while one is in flight."""

    def __init__(
        self,
        db: Database,
        max_batch: int = 64,
        on_write: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._on_write = on_write
        self._queues: dict[str, list[_Pending]] = {}
        self.transactions = 0
        """Transactions run so far (a batch counts once)."""
        self.writes = 0
        """Writes run so far."""

    async def fetchone(
        self, namespace: str, sql: str, params: Sequence[Any], *, memory: bool = True
    ) -> Row:
        """Run a write statement returning one row, in the next batch for *namespace*."""
        rows = await self.fetchall(namespace, sql, params, memory=memory)
        if not rows:  # pragma: no cover - coordd's write functions always return a row
            raise RuntimeError("a write statement returned no row")
        return rows[0]

    async def fetchall(
        self, namespace: str, sql: str, params: Sequence[Any], *, memory: bool = True
    ) -> list[Row]:
        """Run a write statement, in the next batch for *namespace*; return its rows.

        *memory* False promises the statement changes no memory entry (claims, idempotency,
        context), so the vector index is not woken for it.
        """
        future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(namespace)
        if queue is not None:  # a batch is in flight: ride with the next one
            queue.append(_Pending((sql, params), future, memory))
            return await future
        self._queues[namespace] = []
        self.transactions += 1
        self.writes += 1
        try:
            rows = await self._db.fetchall(sql, params)
        except BaseException:
            self._drain_later(namespace)
            raise
        self._drain_later(namespace)
        self.written(namespace, memory)
        return rows

    def written(self, namespace: str, memory: bool = True) -> None:
        """Tell the write hook that *namespace* changed (writes made outside the batcher);
        *memory*: whether memory entries may have changed."""
        if self._on_write is not None:
            self._on_write(namespace, memory)

    def _drain_later(self, namespace: str) -> None:
        queue = self._queues.get(namespace)
        if not queue:
            self._queues.pop(namespace, None)
            return
        asyncio.get_running_loop().create_task(self._drain(namespace))

    async def _drain(self, namespace: str) -> None:
        while True:
            queue = self._queues.get(namespace)
            if not queue:
                self._queues.pop(namespace, None)
                return
            batch = queue[: self._max_batch]
            del queue[: self._max_batch]
            await self._run_batch(batch)
            self.written(namespace, any(p.memory for p in batch))

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            await self._run_alone(batch[0])
            return
        self.transactions += 1
        self.writes += len(batch)
        try:
            rows = await self._db.fetch_batch([p.op for p in batch])
        except Exception:
            logger.debug(
                "batch of %d failed; retrying its writes one by one", len(batch), exc_info=True
            )
            for p in batch:
                await self._run_alone(p)
            return
        for p, result in zip(batch, rows, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def _run_alone(self, p: _Pending) -> None:
        self.transactions += 1
        self.writes += 1
        try:
            rows = await self._db.fetchall(*p.op)
        except BaseException as exc:
            if not p.future.done():
                p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not p.future.done():
            p.future.set_result(rows)
