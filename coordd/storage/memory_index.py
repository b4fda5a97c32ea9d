"""Keeps the vector index caught up with PostgreSQL through the change log.

Every path that writes memory (PutMemory, EndTask archives, compaction, retention sweeps,
agreement transitions, other daemon replicas) leaves change-log rows of kind 'memory'. The
indexer reads, per namespace, which keys changed after the revision the index reflects and the
current rows of those keys, in one statement (one snapshot), and applies them. It runs when this
daemon writes a namespace, every ``interval_s`` for writes made elsewhere, and on demand when a
search asks for at least a revision (read-your-writes).

At start it loads the snapshot saved at the last shutdown and catches up; with no usable
snapshot, or a change log compacted past a cursor, it rebuilds from the memory table, logging
progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path

import numpy as np

from coordd import telemetry
from coordd.domain.consistency import MAX_WAIT_S, at_least
from coordd.storage.db import Database, Row
from coordd.storage.vector_index import Element, VectorIndex, normalize

logger = logging.getLogger(__name__)

_ELEMENT_COLUMNS = (
    "m.namespace, m.key, m.tier, m.embedding, m.tags, m.task_id, m.expire_time, m.review_time,"
    " m.revision"
)


def _epoch(value: object) -> float:
    return value.timestamp() if value is not None else math.inf  # type: ignore[attr-defined]


def element(row: Row) -> Element | None:
    """An index element from a row of ``_ELEMENT_COLUMNS`` (None: no embedding)."""
    if row.embedding is None:
        return None
    vector = np.frombuffer(bytes(row.embedding), dtype="<f4").astype(np.float32)
    return Element(
        namespace=row.namespace,
        key=row.key,
        tier=int(row.tier),
        tags=frozenset(row.tags),
        task_id=row.task_id,
        expire=_epoch(row.expire_time),
        review=_epoch(row.review_time),
        vector=normalize(vector),
        revision=int(row.revision),
    )


class MemoryIndexer:
    def __init__(
        self, db: Database, index: VectorIndex, snapshot_dir: Path | None, interval_s: float = 1.0
    ) -> None:
        self._db = db
        self.index = index
        self._snapshot_dir = snapshot_dir
        self._interval_s = interval_s
        self._identity = ""
        self._dirty = asyncio.Event()
        self._dirty_namespaces: set[str] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.clock_offset_s = 0.0
        """coordd.now() minus this host's clock (non-zero only where tests shift time)."""

    async def start(self) -> None:
        row = await self._db.fetchone(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text"
            " || '/' || current_database() AS identity"
        )
        self._identity = str(row.identity)
        started = time.monotonic()
        loaded = False
        if self._snapshot_dir is not None:
            loaded = await asyncio.to_thread(self.index.load, self._snapshot_dir, self._identity)
        if loaded:
            logger.info(
                "vector index: loaded %d vectors from %s", len(self.index), self._snapshot_dir
            )
            await self.catch_up()
        else:
            await self.rebuild()
        logger.info(
            "vector index ready: %d vectors in %.1fs", len(self.index), time.monotonic() - started
        )
        self._task = asyncio.create_task(self._loop(), name="coordd-indexer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._snapshot_dir is not None and self._identity:
            await asyncio.to_thread(self.index.save, self._snapshot_dir, self._identity)
            logger.info("vector index: saved %d vectors to %s", len(self.index), self._snapshot_dir)

    async def reset(self) -> None:
        """Forget everything indexed (for databases truncated under a running daemon)."""
        async with self._lock:
            self.index.apply([], [(ns, key) for ns, key in list(self.index.keys())])
            self.index.cursors = {}
            self.index.epoch += 1

    def dirty(self, namespace: str) -> None:
        """This daemon wrote memory in *namespace*: catch up with it soon."""
        self._dirty_namespaces.add(namespace)
        self._dirty.set()

    async def ensure(self, minimum: dict[str, int], wait_s: float = MAX_WAIT_S) -> None:
        """Return once the index reflects at least these namespace revisions.

        Catches up from the change log; a revision the database has not reached yet is waited
        for up to *wait_s*, then ``RevisionNotReachedError`` (never a search of older data).
        """
        deadline = time.monotonic() + wait_s
        for namespace, revision in minimum.items():
            if self.index.cursors.get(namespace, 0) >= revision:
                continue

            async def caught_up(namespace: str = namespace) -> tuple[int, None]:
                await self.catch_up(list(minimum))
                return self.index.cursors.get(namespace, 0), None

            await at_least(namespace, revision, caught_up, max(0.0, deadline - time.monotonic()))

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._interval_s)
            self._dirty.clear()
            # Woken by this daemon's writes: only the namespaces written, so the cost does
            # not grow with the namespace count. On the timer: all (writes made elsewhere).
            namespaces = sorted(self._dirty_namespaces) or None
            self._dirty_namespaces.clear()
            try:
                # Background work, traced only when the timer found writes made elsewhere
                # (this daemon's own writes are in their requests' traces already).
                started = time.time_ns()
                with telemetry.untraced():
                    applied = await self.catch_up(namespaces)
                if applied and namespaces is None:
                    telemetry.record_work("index_catch_up", started, {"entries": applied})
            except Exception:
                logger.warning("vector index catch-up failed; retrying", exc_info=True)

    async def rebuild(self) -> None:
        """Load every embedding from PostgreSQL, in batches, logging progress."""
        async with self._lock:
            await self._rebuild()

    async def _rebuild(self) -> None:
        async with self._db.connection() as conn:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur = await conn.execute("SELECT name, revision FROM coordd.namespaces")
                cursors = {r.name: r.revision for r in await cur.fetchall()}
                cur = await conn.execute(
                    "SELECT count(*) AS total FROM coordd.memory WHERE embedding IS NOT NULL"
                )
                counted = await cur.fetchone()
                total = counted.total if counted else 0
                logger.info("vector index: rebuilding from PostgreSQL (%d vectors)", total)
                done = 0
                last_log = time.monotonic()
                async with conn.cursor(name="coordd_rebuild") as named:
                    await named.execute(
                        f"SELECT {_ELEMENT_COLUMNS} FROM coordd.memory m"
                        " WHERE m.embedding IS NOT NULL"
                    )
                    while rows := await named.fetchmany(5000):
                        batch = [e for r in rows if (e := element(r)) is not None]
                        await asyncio.to_thread(self.index.apply, batch, [])
                        done += len(rows)
                        if time.monotonic() - last_log > 2 or done == total:
                            last_log = time.monotonic()
                            logger.info("vector index: rebuilt %d/%d", done, total)
            self.index.cursors = cursors
            self.index.epoch += 1

    async def catch_up(self, namespaces: list[str] | None = None) -> int:
        """Apply memory changes committed after the revisions the index reflects.

        Returns:
            How many entries were added, replaced or removed (0 after a full rebuild).
        """
        async with self._lock:
            cursors = self.index.cursors
            # Only the cursors asked about travel: the query does not grow with the namespace
            # count when a write wakes it.
            sent = cursors if namespaces is None else {n: cursors.get(n, 0) for n in namespaces}
            # The clock offset rides along (one row even when nothing changed), so searches
            # filter expiry by the database clock without reading it themselves.
            rows = await self._db.fetchall(
                "WITH clock AS (SELECT extract(epoch FROM coordd.now())::float8"
                "  - extract(epoch FROM now())::float8 AS offset_s),"
                " ns AS ("
                " SELECT n.name, n.revision, n.compact_revision, coalesce(c.rev, 0) AS cursor"
                " FROM coordd.namespaces n"
                " LEFT JOIN unnest(%s::text[], %s::bigint[]) AS c(ns, rev) ON c.ns = n.name"
                " WHERE n.revision > coalesce(c.rev, 0)"
                " AND (%s::text[] IS NULL OR n.name = ANY(%s::text[])))"
                " SELECT ns.name AS ns_name, ns.revision AS ns_revision,"
                " ns.compact_revision > ns.cursor + 1 AS compacted, k.key AS changed_key,"
                f" {_ELEMENT_COLUMNS}, m.key IS NOT NULL AS live, clock.offset_s"
                " FROM clock LEFT JOIN ns ON true LEFT JOIN LATERAL ("
                "  SELECT DISTINCT ch.key FROM coordd.changes ch WHERE ch.namespace = ns.name"
                "  AND ch.revision > ns.cursor AND ch.kind = 'memory') k ON true"
                " LEFT JOIN coordd.memory m ON m.namespace = ns.name AND m.key = k.key",
                (list(sent), list(sent.values()), namespaces, namespaces),
            )
            self.clock_offset_s = float(rows[0].offset_s)
            rows = [r for r in rows if r.ns_name is not None]
            if any(r.compacted for r in rows):  # the log was compacted past a cursor
                logger.warning("vector index: change log compacted past the index; rebuilding")
                await self._rebuild()
                return 0
            puts: list[Element] = []
            removes: list[tuple[str, str]] = []
            advanced: dict[str, int] = {}
            for r in rows:
                advanced[r.ns_name] = r.ns_revision
                if r.changed_key is None:
                    continue
                e = element(r) if r.live else None
                if e is None:
                    removes.append((r.ns_name, r.changed_key))
                else:
                    puts.append(e)
            if puts or removes:
                await asyncio.to_thread(self.index.apply, puts, removes)
            self.index.cursors = {**cursors, **advanced}
            return len(puts) + len(removes)
