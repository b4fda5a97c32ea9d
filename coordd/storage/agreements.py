"""Agreement storage: each operation is one call of a SQL function (one round trip).

Proposals and votes run as their own transactions, not through the namespace's write batch:
a vote may decide the agreement and apply its transition writes, which locks every namespace
those writes touch in name order (coordd.agreement_lock). A batch already holds its namespace's
lock from earlier statements, so a multi-namespace statement inside it could wait in a cycle.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from coordd.domain.agreements import (
    Agreement,
    AgreementListing,
    AgreementPage,
    AgreementState,
    AgreementView,
    Ballot,
    DecisionCause,
    Participant,
    Proposal,
    TransitionWrite,
    VoteCast,
    WriteMode,
)
from coordd.domain.models import Identity
from coordd.errors import (
    AgreementDecidedError,
    NotAParticipantError,
)
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database, Row
from coordd.storage.outcomes import Call, check

# Columns of coordd.agreement_result, in order.
_COLUMNS = "status, ns_revision, changed, db_time, agreement"


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _write_json(w: TransitionWrite, trace_id: str) -> dict[str, Any]:
    return {
        "namespace": w.namespace,
        "key": w.key,
        "tier": w.tier,
        "value": json.loads(w.value_json),
        "text": w.text,
        "tags": list(w.tags),
        "task_id": w.task_id,
        "mode": w.mode.value,
        "expected_revision": w.expected_revision,
        "ttl_s": None if w.ttl is None else w.ttl.total_seconds(),
        "trace_id": trace_id,
    }


def _write(doc: dict[str, Any]) -> TransitionWrite:
    ttl = doc.get("ttl_s")
    return TransitionWrite(
        namespace=doc["namespace"],
        key=doc["key"],
        tier=int(doc["tier"]),
        value_json=json.dumps(doc["value"], separators=(",", ":")),
        text=doc.get("text", ""),
        tags=tuple(doc.get("tags", ())),
        task_id=doc.get("task_id", ""),
        mode=WriteMode(doc.get("mode", "")),
        expected_revision=doc.get("expected_revision"),
        ttl=None if ttl is None else timedelta(seconds=ttl),
    )


def _agreement(doc: dict[str, Any]) -> Agreement:
    return Agreement(
        namespace=doc["namespace"],
        id=doc["id"],
        proposer_agent_id=doc["proposer_agent_id"],
        proposer_role=doc["proposer_role"],
        participants=[
            Participant(agent_id=p["agent_id"], role=p["role"], count=int(p["count"]))
            for p in doc["participants"]
        ],
        transition_json=json.dumps(doc["transition"], separators=(",", ":")),
        writes=[_write(w) for w in doc["writes"]],
        state=AgreementState(doc["state"]),
        cause=DecisionCause(doc["cause"]),
        reason=doc["reason"],
        decided_by_agent_id=doc["decided_by_agent_id"],
        votes=[
            Ballot(
                agent_id=b["agent_id"],
                role=b["role"],
                accept=b["accept"],
                reason=b["reason"],
                vote_time=datetime.fromisoformat(b["vote_time"]),
                seat=b["seat"],
                revision=b["revision"],
            )
            for b in doc["votes"]
        ],
        seats=doc["seats"],
        accepted=doc["accepted"],
        create_time=datetime.fromisoformat(doc["create_time"]),
        deadline_time=datetime.fromisoformat(doc["deadline_time"]),
        decide_time=_time(doc["decide_time"]),
        create_revision=doc["create_revision"],
        decide_revision=doc["decide_revision"],
        expire_time=_time(doc["expire_time"]),
        write_revisions={str(k): int(r) for k, r in doc["write_revisions"].items()},
    )


class AgreementStore:
    """SQL for agreements. Time is the database's (``coordd.now()``)."""

    def __init__(self, db: Database, writes: WriteBatcher) -> None:
        self._db = db
        # Not for batching (see the module note): its hook wakes the streams and waiters that
        # follow a namespace after writes made here.
        self._writes = writes

    async def propose(self, who: Identity, proposal: Proposal) -> AgreementView:
        p = proposal
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM coordd.propose_agreement("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                p.namespace,
                p.id,
                p.fingerprint,
                who.agent_id,
                who.role,
                Jsonb(
                    [
                        {"agent_id": x.agent_id, "role": x.role, "count": x.count}
                        for x in p.participants
                    ]
                ),
                Jsonb(json.loads(p.transition_json)),
                Jsonb([_write_json(w, p.trace_id) for w in p.writes]),
                p.deadline,
                p.retention,
                p.accept,
            ),
        )
        if row.status == "exists":
            self._changed(p.namespace, row)
        check(row, Call(p.namespace, p.id))
        return self._view(p.namespace, p.id, row, created=row.status == "ok")

    async def vote(self, who: Identity, vote: VoteCast) -> AgreementView:
        namespace, agreement_id, accept = vote.namespace, vote.id, vote.accept
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM coordd.vote_agreement(%s, %s, %s, %s, %s, %s)",
            (namespace, agreement_id, who.agent_id, who.role, accept, vote.reason),
        )
        if row.status == "ok":
            return self._view(namespace, agreement_id, row)
        self._changed(namespace, row)  # a refused vote may still have recorded an expiry
        check(row, Call(namespace, agreement_id, accept=accept, not_found=_NOT_FOUND))
        decided = _agreement(row.agreement)
        if row.status == "decided":
            raise AgreementDecidedError(
                namespace,
                agreement_id,
                decided.state.value,
                decided.cause.value,
                decided.reason,
                decided.decide_revision,
            )
        raise NotAParticipantError(namespace, agreement_id, who.agent_id, who.role)

    async def get(self, namespace: str, agreement_id: str) -> AgreementView:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM coordd.get_agreement(%s, %s)", (namespace, agreement_id)
        )
        check(row, Call(namespace, agreement_id, not_found=_NOT_FOUND))
        return self._view(namespace, agreement_id, row)

    async def list(self, q: AgreementListing) -> AgreementPage:
        namespace, state, limit = q.namespace, q.state, q.limit
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM coordd.list_agreements(%s, %s, %s, %s, %s)",
            (namespace, state.value if state else "", q.proposer, q.after, limit + 1),
        )
        if not rows:
            rev = await self._db.fetchone("SELECT coordd.ns_revision(%s) AS revision", (namespace,))
            return AgreementPage(revision=int(rev.revision), agreements=[], next_after=None)
        self._changed(namespace, rows[0])
        page = [_agreement(r.agreement) for r in rows[:limit]]
        next_after = page[-1].id if len(rows) > limit else None
        return AgreementPage(revision=rows[0].ns_revision, agreements=page, next_after=next_after)

    async def sweep(self, limit: int = 1000) -> int:
        """Record the expiry of pending agreements past their deadline; return how many."""
        rows = await self._db.fetchall(
            "SELECT namespace, expired FROM coordd.sweep_agreements(%s)", (limit,)
        )
        for row in rows:
            self._writes.written(row.namespace)
        return sum(int(row.expired) for row in rows)

    async def purge(self, limit: int = 1000) -> int:
        """Delete decided agreements past their retention; return how many."""
        return await self._db.purge_expired("coordd.agreements", limit)

    def _view(
        self, namespace: str, agreement_id: str, row: Row, created: bool = True
    ) -> AgreementView:
        agreement = _agreement(row.agreement)
        self._changed(namespace, row, agreement)
        return AgreementView(
            revision=row.ns_revision, agreement=agreement, db_time=row.db_time, created=created
        )

    def _changed(self, namespace: str, row: Row, agreement: Agreement | None = None) -> None:
        """Wake local followers of every namespace the call wrote."""
        if not row.changed:
            return
        self._writes.written(namespace)
        if agreement is not None and agreement.state is AgreementState.COMMITTED:
            for ns in {w.namespace for w in agreement.writes} - {namespace}:
                self._writes.written(ns)


_NOT_FOUND = "agreement {name!r} not found in {namespace}"
