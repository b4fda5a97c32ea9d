"""The effect gate's reads: live claims behind fences, and changes after read revisions."""

from __future__ import annotations

from coordd.domain.gate import GateCheck, GateVerdict, LostClaim, MovedNamespace
from coordd.domain.models import Change, Claim, Fence
from coordd.storage.db import Database, Row, from_row

# The live claim behind each fence that is no longer current, in fence order.
_LOST_SQL = """
SELECT f.ord, c.holder_agent_id, c.holder_role, c.fencing_token, c.acquire_time,
       c.expire_time, c.progress
FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY AS f(ns, res, tok, ord)
LEFT JOIN coordd.claims c
       ON c.namespace = f.ns AND c.resource = f.res AND c.expire_time > coordd.now()
WHERE c.fencing_token IS DISTINCT FROM f.tok
ORDER BY f.ord
"""

# Each read namespace that has a counted change after the revision read (kinds NULL: any),
# or whose log was compacted past it, with the earliest such change still logged.
_MOVED_SQL = """
SELECT r.ns AS namespace, r.rev AS read_revision, n.revision AS current_revision,
       ch.revision, ch.seq, ch.kind, ch.key, ch.op, ch.agent_id, ch.create_time AS time,
       coalesce(ch.data::text, '') AS data_json
FROM unnest(%s::text[], %s::bigint[]) AS r(ns, rev)
JOIN coordd.namespaces n ON n.name = r.ns AND n.revision > r.rev
LEFT JOIN LATERAL (
    SELECT * FROM coordd.changes c
    WHERE c.namespace = r.ns AND c.revision > r.rev
      AND (%s::text[] IS NULL OR c.kind = ANY(%s::text[]))
    ORDER BY c.revision, c.seq LIMIT 1
) ch ON true
WHERE ch.revision IS NOT NULL OR n.compact_revision > r.rev + 1
ORDER BY r.ns
"""


class GateStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def check(self, q: GateCheck) -> GateVerdict:
        """Both questions in one pipelined round trip."""
        fences, read = q.fences, q.read
        kind_list = q.kinds or None
        lost_rows, moved_rows = await self._db.fetch_batch(
            [
                (
                    _LOST_SQL,
                    (
                        [f.namespace for f in fences],
                        [f.resource for f in fences],
                        [f.token for f in fences],
                    ),
                ),
                (_MOVED_SQL, (list(read), list(read.values()), kind_list, kind_list)),
            ]
        )
        lost = [
            LostClaim(fence=fences[row.ord - 1], holder=_holder(fences[row.ord - 1], row))
            for row in lost_rows
        ]
        moved = [
            MovedNamespace(
                namespace=row.namespace,
                read_revision=row.read_revision,
                current_revision=row.current_revision,
                first_change=from_row(Change, row) if row.revision is not None else None,
            )
            for row in moved_rows
        ]
        return GateVerdict(lost_claims=lost, moved_namespaces=moved)


def _holder(fence: Fence, row: Row) -> Claim | None:
    if row.holder_agent_id is None:
        return None
    return from_row(Claim, row, namespace=fence.namespace, resource=fence.resource)
