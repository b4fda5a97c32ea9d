"""Group commits per namespace: concurrent writes to one namespace share one transaction.

Every write locks its namespace's revision row until commit (that is what makes revisions
gapless and in commit order), so writes to one namespace run one commit at a time. Instead of
queueing on the row lock in PostgreSQL, writes queue here: while a batch for a namespace is in
flight, new writes for it wait, then go together as the next batch in one transaction with one
commit. Each write still gets its own revision and change-log row. Under no contention a batch
has one write and costs exactly what a lone statement costs.

A batch of calls of coordd's SQL write functions (:class:`SqlFunction`) runs as ONE statement:
each argument travels as an array, ``unnest`` turns them back into one row per call and a
``LATERAL`` call runs the function once per row, in queue order. Calls of several functions
with one result type are joined by ``UNION ALL``, function by function: each function's calls
keep their queue order, and calls of different functions, all pending at once and so
concurrent, may run in another order than they arrived (any order is one their callers could
have seen). One round trip, one
implicit transaction, one result to decode: psycopg's per-statement pipeline handling (and
the BEGIN and COMMIT round trips around it) was as large a share of the daemon's CPU as
gRPC's. Every call still sees the ones before it (the functions are VOLATILE, so each of their
queries takes a new snapshot), which is what running them one after another in one
transaction gave. Other writes are pipelined in one transaction, one statement each.

If a batch fails, its writes are retried one by one, so one bad write fails alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coordd.storage.db import Database, Row

logger = logging.getLogger(__name__)

Op = tuple[str, Sequence[Any]]

_BATCH_INDEX = "batch_index"
"""The column a batched statement adds to each row: the position of the call it answers."""


@dataclass(frozen=True, slots=True)
class SqlFunction:
    """A coordd SQL write function, called with one value per argument.

    Attributes:
        name: The qualified function name (``coordd.acquire_claim``).
        arg_types: The SQL type of each argument, in order (``("text", "interval")``).
        result: The SQL type of its result rows (every column is selected); calls of
            functions with the same result type may share one batched statement.
    """

    name: str
    arg_types: tuple[str, ...]
    result: str

    @property
    def statement(self) -> str:
        """The statement for one call (its parameters are the arguments)."""
        return _one_call(self)


@functools.cache
def _one_call(f: SqlFunction) -> str:
    return f"SELECT * FROM {f.name}({', '.join(['%s'] * len(f.arg_types))})"


@functools.cache
def _many_calls(functions: tuple[SqlFunction, ...]) -> str:
    """One statement calling each of *functions* once per row of its argument arrays, in array
    order; its parameters per function: the batch positions (int[]) then one array per
    argument. Each row carries the position of the call it answers."""
    arms = []
    for f in functions:
        names = [f"a{i}" for i in range(len(f.arg_types))]
        # Binary parameters (%b): psycopg dumps a list in binary 3x faster than as text.
        arrays = ", ".join(["%b::int[]", *(f"%b::{t}[]" for t in f.arg_types)])
        arms.append(
            f"SELECT a.{_BATCH_INDEX}, r.*"
            f" FROM unnest({arrays}) AS a({_BATCH_INDEX}, {', '.join(names)}),"
            f" LATERAL {f.name}({', '.join('a.' + n for n in names)}) AS r"
        )
    return " UNION ALL ".join(arms)


class _Pending:
    __slots__ = ("function", "future", "memory", "op")

    def __init__(
        self,
        op: Op,
        future: asyncio.Future[list[Row]],
        memory: bool,
        function: SqlFunction | None = None,
    ) -> None:
        self.op = op
        self.future = future
        self.memory = memory
        self.function = function


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
        self,
        namespace: str,
        sql: str,
        params: Sequence[Any],
        *,
        memory: bool = True,
        function: SqlFunction | None = None,
    ) -> list[Row]:
        """Run a write statement, in the next batch for *namespace*; return its rows.

        *memory* False promises the statement changes no memory entry (claims, idempotency,
        context), so the vector index is not woken for it. *function*: the statement is
        ``function.statement`` with *params* its arguments, so a batch may call it for many
        writes in one statement (:meth:`call` says it shorter).
        """
        queue = self._queues.get(namespace)
        if queue is not None:  # a batch is in flight: ride with the next one
            future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
            queue.append(_Pending((sql, params), future, memory, function))
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

    async def call(
        self, namespace: str, function: SqlFunction, args: Sequence[Any], *, memory: bool = True
    ) -> list[Row]:
        """Call *function* with *args* in the next batch for *namespace*; return its rows."""
        return await self.fetchall(
            namespace, function.statement, args, memory=memory, function=function
        )

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
            rows = await self._fetch(batch)
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

    async def _fetch(self, batch: list[_Pending]) -> list[list[Row]]:
        """The rows of each write of *batch*, run in one transaction."""
        groups: dict[SqlFunction, list[int]] = {}
        for i, p in enumerate(batch):
            if p.function is None:
                return await self._db.fetch_batch([p.op for p in batch])
            groups.setdefault(p.function, []).append(i)
        if len({f.result for f in groups}) > 1:
            return await self._db.fetch_batch([p.op for p in batch])
        params: list[Any] = []
        for positions in groups.values():
            params.append(positions)
            params.extend(map(list, zip(*(batch[i].op[1] for i in positions), strict=True)))
        out: list[list[Row]] = [[] for _ in batch]
        for row in await self._db.fetchall(_many_calls(tuple(groups)), params):
            out[getattr(row, _BATCH_INDEX)].append(row)
        return out

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
