"""The change log as Watch reads it, and its compaction."""

from __future__ import annotations

from datetime import timedelta

from coordd.domain.models import Change
from coordd.domain.watch import WatchQuery
from coordd.errors import RevisionCompactedError
from coordd.storage.db import Database, from_row


def _scope(namespace: str, prefix: bool) -> tuple[str, bool, str, str]:
    # Namespaces below "p" are exactly the strings in ["p/", "p0"): '0' follows '/' in byte
    # order, so the range uses the primary-key index.
    return namespace, prefix, namespace + "/", namespace + "0"


_SCOPE_SQL = "(c.namespace = %s OR (%s AND c.namespace >= %s AND c.namespace < %s))"


class ChangeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def positions(self, q: WatchQuery) -> dict[str, tuple[int, int]]:
        """Current (revision, compact_revision) of each namespace in scope."""
        rows = await self._db.fetchall(
            "SELECT c.name, c.revision, c.compact_revision FROM coordd.namespaces c WHERE "
            + _SCOPE_SQL.replace("c.namespace", "c.name"),
            _scope(q.namespace, q.prefix),
        )
        return {r.name: (r.revision, r.compact_revision) for r in rows}

    async def check_compaction(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int
    ) -> None:
        """Raise RevisionCompactedError if a cursor points before a namespace's kept log."""
        scope = _scope(q.namespace, q.prefix)
        behind = await self._db.fetchall(
            "SELECT c.name, c.compact_revision FROM coordd.namespaces c"
            " LEFT JOIN unnest(%s::text[], %s::bigint[]) AS cur(ns, rev) ON cur.ns = c.name"
            " WHERE "
            + _SCOPE_SQL.replace("c.namespace", "c.name")
            + " AND c.compact_revision > coalesce(cur.rev, %s) + 1 LIMIT 1",
            (list(cursors), list(cursors.values()), *scope, default_after),
        )
        for first in behind:  # at most one (LIMIT 1)
            raise RevisionCompactedError(first.name, first.compact_revision)

    async def after(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int, limit: int = 500
    ) -> tuple[list[Change], bool]:
        """Changes after each namespace's cursor (default_after where it has none), in order,
        and whether more may follow at once (the read reached *limit*).

        Whole revisions only: a revision whose events would be cut by *limit* comes next time
        (or, if it alone exceeds *limit*, entirely now).
        """
        sql = (
            "SELECT c.namespace, c.revision, c.seq, c.kind, c.key, c.op, c.agent_id,"
            " c.create_time AS time, coalesce(c.data::text, '') AS data_json FROM coordd.changes c"
            " LEFT JOIN unnest(%s::text[], %s::bigint[]) AS cur(ns, rev) ON cur.ns = c.namespace"
            " WHERE " + _SCOPE_SQL + " AND c.revision > coalesce(cur.rev, %s)"
            " ORDER BY c.namespace, c.revision, c.seq LIMIT %s"
        )
        scope = _scope(q.namespace, q.prefix)
        params = (list(cursors), list(cursors.values()), *scope, default_after)
        rows = await self._db.fetchall(sql, (*params, limit))
        changes = [from_row(Change, r) for r in rows]
        if len(changes) < limit:
            return changes, False
        last = (changes[-1].namespace, changes[-1].revision)
        whole = [c for c in changes if (c.namespace, c.revision) != last]
        if whole:
            return whole, True
        rows = await self._db.fetchall(  # one revision larger than the limit: take it all
            "SELECT c.namespace, c.revision, c.seq, c.kind, c.key, c.op, c.agent_id,"
            " c.create_time AS time, coalesce(c.data::text, '') AS data_json FROM coordd.changes c"
            " WHERE c.namespace = %s AND c.revision = %s ORDER BY c.seq",
            last,
        )
        return [from_row(Change, r) for r in rows], True

    async def compact(self, retention: timedelta, limit: int = 1000) -> int:
        """Drop change rows older than *retention*; return how many."""
        row = await self._db.fetchone(
            "SELECT coordd.compact_changes(coordd.now() - %s, %s) AS compacted", (retention, limit)
        )
        return int(row.compacted)
