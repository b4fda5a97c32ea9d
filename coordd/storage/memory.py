"""Memory entries in PostgreSQL: one SQL function call per write."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from coordd.domain.memory import Compaction, Deletion, Listing, TaskEnd, TaskEnded, TaskStart
from coordd.domain.models import (
    EntryRef,
    Identity,
    MemoryEntry,
    MemoryWrite,
    NamespacePolicy,
    Tier,
)
from coordd.errors import (
    NotFoundError,
)
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row, fence_params, from_row
from coordd.storage.outcomes import Call, check

# Named like MemoryEntry's fields: entry_from_row reads them by name.
ENTRY_COLUMNS = (
    "namespace, key, tier, value::text AS value_json, text,"
    " coalesce(embedding, ''::bytea) AS embedding, tags, task_id, revision, create_revision,"
    " agent_id, role, write_time, trace_id, request_id, derived_from::text AS derived_from,"
    " expire_time, valid_from, {valid_to} AS valid_to, review_time, confidence,"
    " coalesce(review_time <= coordd.now(), false) AS stale"
)
CURRENT = ENTRY_COLUMNS.format(valid_to="NULL::timestamptz")
HISTORIC = ENTRY_COLUMNS.format(valid_to="valid_to")
_TASK_NOT_STARTED = "task {name!r} is not started in {namespace}"
_LIVE = "(expire_time IS NULL OR expire_time > coordd.now())"


def entry_from_row(row: Row) -> MemoryEntry:
    """The entry in a row of ``ENTRY_COLUMNS`` (other columns of the row are ignored)."""
    return from_row(
        MemoryEntry,
        row,
        tier=Tier(row.tier),
        embedding=bytes(row.embedding),
        tags=list(row.tags),
        derived_from=[
            EntryRef(namespace=d["namespace"], key=d["key"], revision=int(d.get("revision", 0)))
            for d in json.loads(row.derived_from)
        ],
        confidence=float(row.confidence),
        stale=bool(row.stale),
    )


def _refs(refs: list[EntryRef]) -> Jsonb:
    return Jsonb([{"namespace": r.namespace, "key": r.key, "revision": r.revision} for r in refs])


_PUT = (
    "SELECT status, ns_revision, revision, create_revision, write_time, expire_time,"
    " value, current_revision, current_token FROM coordd.memory_put("
    "%s, %s, %s::smallint, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::real,"
    " %s, %s, %s, %s, %s, %s, %s)"
)


_PUT_MANY = (
    "SELECT status, ns_revision, revision, create_revision, write_time, expire_time,"
    " value, current_revision, current_token FROM coordd.memory_put_many("
    "%s::text[], %s::text[], %s::smallint[], %s::jsonb[], %s::text[], %s::bytea[],"
    " %s::integer[], %s::jsonb[], %s::text[], %s::text[], %s::bigint[], %s::interval[],"
    " %s::jsonb[], %s::timestamptz[], %s::real[], %s, %s, %s, %s::text[], %s::text[],"
    " %s::text[], %s::bigint[])"
)


def _put_params(who: Identity, trace_id: str, w: MemoryWrite) -> tuple[Any, ...]:
    return (
        w.namespace,
        w.key,
        int(w.tier),
        w.value_json,  # checked JSON text (strict): PostgreSQL parses it once, as jsonb
        w.text,
        w.embedding or None,
        w.dim,
        w.tags,
        w.task_id,
        w.mode,
        w.expected_revision,
        w.ttl,
        _refs(w.derived_from),
        w.review_time,
        w.confidence,
        who.agent_id,
        who.role,
        trace_id,
        w.request_id,
        *fence_params(w.fence),
    )


def _put_result(who: Identity, trace_id: str, w: MemoryWrite, row: Row) -> MemoryEntry:
    """The entry memory_put wrote, or the error its status names."""
    if row.status == "task_not_started":
        raise NotFoundError(f"task {w.task_id!r} is not started in {w.namespace}: StartTask first")
    check(row, Call(w.namespace, w.key, w.fence, w.expected_revision))
    return from_row(
        MemoryEntry,
        w,  # what was asked, as asked; then what the database and the caller stamped
        value_json=row.value,  # a merge patch's result, not the patch
        revision=row.revision,
        create_revision=row.create_revision,
        agent_id=who.agent_id,
        role=who.role,
        write_time=row.write_time,
        trace_id=trace_id,
        expire_time=row.expire_time,
        valid_from=row.write_time,
        valid_to=None,
        stale=w.review_time is not None and w.review_time <= row.write_time,
    )


def _entry_or_none(row: Row) -> MemoryEntry | None:
    """The entry of a ``LEFT JOIN LATERAL`` row, None where the join found none."""
    return entry_from_row(row) if row.namespace is not None else None


def _page(rows: list[Row]) -> tuple[int, list[MemoryEntry]]:
    """The revision and entries of ``SELECT ns_revision, e.*`` rows (one row even if none)."""
    return int(rows[0].ns_revision), [e for r in rows if (e := _entry_or_none(r)) is not None]


class MemoryStore:
    def __init__(self, db: Database, writes: WriteBatcher) -> None:
        self._db = db
        self._writes = writes

    async def put(self, who: Identity, trace_id: str, w: MemoryWrite) -> MemoryEntry:
        row = await self._writes.fetchone(w.namespace, _PUT, _put_params(who, trace_id, w))
        return _put_result(who, trace_id, w, row)

    async def put_many(
        self, who: Identity, trace_id: str, writes: list[MemoryWrite]
    ) -> list[MemoryEntry]:
        """Apply *writes* in order in one transaction: all, or none and the first refusal.

        One statement (coordd.memory_put_many): it locks the namespaces first, in name order,
        so batches over the same namespaces queue instead of deadlocking, and holds the locks
        only while PostgreSQL applies the writes.
        """
        namespaces = sorted({w.namespace for w in writes})
        columns: list[list[Any]] = [
            list(c) for c in zip(*(_put_params(who, trace_id, w) for w in writes), strict=True)
        ]
        columns[7] = [Jsonb(w.tags) for w in writes]  # ragged: one JSON array per entry
        async with self._db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                _PUT_MANY, [*columns[:15], who.agent_id, who.role, trace_id, *columns[18:]]
            )
            rows = await cur.fetchall()
            # A refusal (the last row) raises here, inside the transaction: nothing is written.
            entries = [
                _put_result(who, trace_id, w, row) for w, row in zip(writes, rows, strict=False)
            ]
        for ns in namespaces:  # the index takes the whole batch in one catch-up
            self._writes.written(ns)
        return entries

    async def get(
        self, namespace: str, key: str, as_of: datetime | None
    ) -> tuple[int, MemoryEntry | None]:
        """The entry (or None) and the namespace revision it reflects, in one snapshot."""
        if as_of is None:
            inner = (
                f"SELECT {CURRENT} FROM coordd.memory WHERE namespace = %s AND key = %s AND {_LIVE}"
            )
            params: tuple[Any, ...] = (namespace, key)
        else:
            inner = (
                f"SELECT * FROM (SELECT {CURRENT} FROM coordd.memory"
                f"  WHERE namespace = %s AND key = %s AND valid_from <= %s"
                f" UNION ALL SELECT {HISTORIC} FROM coordd.memory_history"
                f"  WHERE namespace = %s AND key = %s AND valid_from <= %s AND valid_to > %s"
                f") v ORDER BY revision DESC LIMIT 1"
            )
            params = (namespace, key, as_of, namespace, key, as_of, as_of)
        row = await self._db.fetchone(
            f"SELECT coordd.ns_revision(%s) AS ns_revision, e.* FROM (SELECT 1) one"
            f" LEFT JOIN LATERAL ({inner}) e ON true",
            (namespace, *params),
        )
        return int(row.ns_revision), _entry_or_none(row)

    async def hits(
        self, refs: list[tuple[str, str]]
    ) -> tuple[float, dict[tuple[str, str], MemoryEntry]]:
        """In one query: the database clock (epoch seconds) and the live current entries of
        *refs* without their embeddings (stale ones flagged)."""
        columns = CURRENT.replace("coalesce(embedding, ''::bytea)", "''::bytea")
        rows = await self._db.fetchall(
            "SELECT extract(epoch FROM coordd.now())::float8 AS db_now, e.*"
            " FROM (SELECT 1) one LEFT JOIN LATERAL ("
            f" SELECT {columns} FROM coordd.memory m JOIN unnest(%s::text[], %s::text[])"
            f" AS r(ns, k) ON m.namespace = r.ns AND m.key = r.k WHERE {_LIVE}) e ON true",
            ([r[0] for r in refs], [r[1] for r in refs]),
        )
        entries = {(r.namespace, r.key): entry_from_row(r) for r in rows if r.namespace}
        return float(rows[0].db_now), entries

    async def revision(self, namespace: str) -> int:
        row = await self._db.fetchone("SELECT coordd.ns_revision(%s) AS revision", (namespace,))
        return int(row.revision)

    async def delete(self, who: Identity, d: Deletion) -> tuple[int, bool]:
        row = await self._writes.fetchone(
            d.namespace,
            "SELECT status, ns_revision, deleted, current_revision, current_token"
            " FROM coordd.memory_delete(%s, %s, %s, %s, %s, %s, %s)",
            (d.namespace, d.key, d.expected_revision, who.agent_id, *fence_params(d.fence)),
        )
        check(row, Call(d.namespace, d.key, d.fence, d.expected_revision))
        return row.ns_revision, row.deleted > 0

    async def list_entries(
        self, q: Listing, after: tuple[str, str], limit: int
    ) -> tuple[int, list[MemoryEntry]]:
        """Up to *limit* entries under ``q.prefix`` after *after* (namespace, key), and the
        revision of the prefix they reflect."""
        prefix = q.prefix
        rows = await self._db.fetchall(
            "SELECT coordd.ns_revision(%s) AS ns_revision, e.* FROM (SELECT 1) one"
            " LEFT JOIN LATERAL ("
            f" SELECT {CURRENT} FROM coordd.memory"
            " WHERE (namespace = %s OR (namespace >= %s AND namespace < %s))"
            " AND (namespace, key) > (%s, %s) AND (%s = 0 OR tier = %s) AND tags @> %s"
            " AND (%s = '' OR task_id = %s)"
            f" AND {_LIVE} AND (%s OR review_time IS NULL OR review_time > coordd.now())"
            " ORDER BY namespace, key LIMIT %s) e ON true",
            (
                prefix,
                prefix,
                prefix + "/",
                prefix + "0",
                after[0],
                after[1],
                q.tier,
                q.tier,
                q.tags,
                q.task_id,
                q.task_id,
                q.include_stale,
                limit,
            ),
        )
        return _page(rows)

    async def history(
        self, namespace: str, key: str, before: int, limit: int
    ) -> tuple[int, list[MemoryEntry]]:
        """Versions of a key older than *before*, newest first, and the namespace revision."""
        rows = await self._db.fetchall(
            "SELECT coordd.ns_revision(%s) AS ns_revision, e.* FROM (SELECT 1) one"
            " LEFT JOIN LATERAL ("
            f" SELECT * FROM (SELECT {CURRENT} FROM coordd.memory WHERE namespace = %s"
            f" AND key = %s UNION ALL SELECT {HISTORIC} FROM coordd.memory_history"
            " WHERE namespace = %s AND key = %s) v WHERE revision < %s"
            " ORDER BY revision DESC LIMIT %s) e ON true",
            (namespace, namespace, key, namespace, key, before, limit),
        )
        return _page(rows)

    async def start_task(self, who: Identity, t: TaskStart) -> tuple[int, datetime]:
        """Start (or renew) a task: its working memory lives until it ends or its lease lapses."""
        row = await self._writes.fetchone(
            t.namespace,
            "SELECT * FROM coordd.memory_start_task(%s, %s, %s, %s)",
            (t.namespace, t.task_id, who.agent_id, t.lease),
        )
        return row.ns_revision, row.lease_expire_time

    async def end_task(self, who: Identity, trace_id: str, t: TaskEnd) -> TaskEnded:
        """End a task: its working memory goes, archived as one episode if asked."""
        row = await self._writes.fetchone(
            t.namespace,
            "SELECT * FROM coordd.memory_end_task(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                t.namespace,
                t.task_id,
                t.outcome.label,
                t.archive,
                Jsonb(json.loads(t.summary_json)) if t.summary_json else None,
                t.summary_text,
                t.embedding or None,
                t.dim,
                who.agent_id,
                who.role,
                trace_id,
            ),
        )
        check(row, Call(t.namespace, t.task_id, not_found=_TASK_NOT_STARTED))
        episode = None
        if t.archive:
            _, episode = await self.get(t.namespace, f"task/{t.task_id}", None)
        return TaskEnded(revision=row.ns_revision, removed=row.removed, episode=episode)

    async def compact(self, who: Identity, trace_id: str, c: Compaction) -> MemoryEntry:
        row = await self._writes.fetchone(
            c.namespace,
            "SELECT status, ns_revision, revision FROM coordd.memory_compact("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                c.namespace,
                c.keys,
                c.summary_key,
                Jsonb(json.loads(c.summary_json)),
                c.summary_text,
                c.embedding or None,
                c.dim,
                c.tags,
                who.agent_id,
                who.role,
                trace_id,
            ),
        )
        check(row, Call(c.namespace, not_found="not every key is an episode in {namespace}"))
        _, entry = await self.get(c.namespace, c.summary_key, None)
        assert entry is not None
        return entry

    async def set_policy(self, who: Identity, namespace: str, p: NamespacePolicy) -> int:
        row = await self._writes.fetchone(
            namespace,
            "SELECT coordd.memory_set_policy(%s, %s, %s, %s, %s, %s) AS revision",
            (
                namespace,
                p.default_mode,
                p.forbid_unconditional,
                p.episodic_max_age,
                p.episodic_max_count,
                who.agent_id,
            ),
        )
        return int(row.revision)

    async def get_policy(self, namespace: str) -> tuple[int, NamespacePolicy]:
        rows = await self._db.fetchall(
            "SELECT default_mode, forbid_unconditional, episodic_max_age, episodic_max_count"
            " FROM coordd.memory_policy WHERE namespace = %s",
            (namespace,),
        )
        policy = from_row(NamespacePolicy, rows[0]) if rows else NamespacePolicy()
        return await self.revision(namespace), policy

    async def sweep(self, limit: int = 1000) -> int:
        row = await self._db.fetchone("SELECT coordd.memory_sweep(%s) AS swept", (limit,))
        return int(row.swept)
