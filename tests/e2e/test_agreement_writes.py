"""Transition writes: applied in the COMMITTED decision's transaction, never otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from coordd_client import (
    AgreementDecidedError,
    AsyncClient,
    InvalidArgumentError,
    NamespacePolicy,
    PermissionDeniedError,
    TransitionWrite,
)
from tests.fix_daemon import DaemonThread, write_policy
from tests.fix_db import DbClock

NS = "acme/plan"
FACTS = "acme/facts"


def _writes(tag: str) -> list[TransitionWrite]:
    return [
        TransitionWrite(namespace=NS, key=f"{tag}/status", value={"status": "approved"}),
        TransitionWrite(namespace=FACTS, key=f"{tag}/owner", value="team-a", tier="episodic"),
    ]


async def _stored(pg_conn, namespace: str, key: str) -> object:
    cur = await pg_conn.execute(
        "SELECT value FROM coordd.memory WHERE namespace = %s AND key = %s", (namespace, key)
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def test_commit_applies_every_write_in_the_decision(connect, pg_conn) -> None:
    a: AsyncClient = await connect("agent-a")
    b: AsyncClient = await connect("agent-b")
    await a.agreements.propose(
        NS, "t1", participants=["agent-a", "agent-b"], deadline=30, writes=_writes("t1")
    )
    assert await _stored(pg_conn, NS, "t1/status") is None  # nothing before the decision
    done = await b.agreements.vote(NS, "t1", accept=True)
    assert done.committed
    # Both namespaces were written; the agreement's own at the decision's revision.
    assert done.write_revisions[NS] == done.decide_revision
    entry = await b.memory.get(NS, "t1/status")
    assert entry is not None and entry.value == {"status": "approved"}
    assert entry.revision == done.decide_revision
    assert entry.provenance.agent_id == "agent-a"  # the proposer's write, agreed by all
    assert entry.provenance.request_id == "agreement:t1"
    other = await b.memory.get(FACTS, "t1/owner")
    assert other is not None and other.value == "team-a" and other.tier == "episodic"
    assert other.revision == done.write_revisions[FACTS]
    assert b.session.revision(FACTS) >= other.revision  # folded into the voter's session
    cur = await pg_conn.execute(
        "SELECT seq, kind, op, key FROM coordd.changes WHERE namespace = %s AND revision = %s"
        " ORDER BY seq",
        (NS, done.decide_revision),
    )
    assert await cur.fetchall() == [
        (0, "agreement", "vote", "t1"),
        (1, "agreement", "commit", "t1"),
        (2, "memory", "put", "t1/status"),
    ]


async def test_aborted_agreements_write_nothing(connect, pg_conn, db_clock: DbClock) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    for tag in ("rej", "dead", "wd"):
        await a.agreements.propose(
            NS, tag, participants=["agent-a", "agent-b"], deadline=30, writes=_writes(tag)
        )
    assert (await b.agreements.vote(NS, "rej", accept=False)).aborted
    assert (await a.agreements.vote(NS, "wd", accept=False)).cause == "withdrawn"
    db_clock.advance(31)
    assert (await a.agreements.get(NS, "dead")).cause == "deadline_passed"
    for tag in ("rej", "dead", "wd"):
        for namespace, key in ((NS, f"{tag}/status"), (FACTS, f"{tag}/owner")):
            assert await _stored(pg_conn, namespace, key) is None
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.changes WHERE kind = 'memory'")
    assert await cur.fetchone() == (0,)


async def test_conflicting_write_aborts_with_reason_and_writes_nothing(connect, pg_conn) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    existing = await a.memory.put(FACTS, "owner", "team-z")
    writes = [
        TransitionWrite(namespace=NS, key="first", value=1),  # fine on its own
        TransitionWrite(namespace=FACTS, key="owner", value="team-a", expected_revision=0),
    ]
    await a.agreements.propose(
        NS, "cas", participants=["agent-a", "agent-b"], deadline=30, writes=writes
    )
    done = await b.agreements.vote(NS, "cas", accept=True)
    assert done.aborted and done.cause == "transition_failed"
    assert done.reason == (
        f"transition write 1 ({FACTS}, key owner): revision mismatch "
        f"(expected 0, current {existing.revision})"
    )
    assert done.write_revisions == {}
    assert await _stored(pg_conn, NS, "first") is None  # the first write was rolled back too
    assert await _stored(pg_conn, FACTS, "owner") == "team-z"
    # The same write with the right expected revision commits.
    writes[1] = TransitionWrite(
        namespace=FACTS, key="owner", value="team-a", expected_revision=existing.revision
    )
    await a.agreements.propose(
        NS, "cas2", participants=["agent-a", "agent-b"], deadline=30, writes=writes
    )
    assert (await b.agreements.vote(NS, "cas2", accept=True)).committed
    assert await _stored(pg_conn, FACTS, "owner") == "team-a"
    assert await _stored(pg_conn, NS, "first") == 1


async def test_namespace_write_rules_apply(connect, pg_conn) -> None:
    a = await connect("agent-a")
    await a.memory.set_policy(FACTS, NamespacePolicy(default_mode="lww", forbid_unconditional=True))
    await a.memory.put(FACTS, "doc", {"a": 1, "b": 2}, mode="merge")
    single = await a.agreements.propose(
        NS,
        "lww",
        participants=["agent-a"],
        deadline=30,
        writes=[TransitionWrite(namespace=FACTS, key="x", value=1, mode="lww")],
    )
    assert single.agreement.aborted and single.agreement.cause == "transition_failed"
    assert "forbids unconditional writes" in single.agreement.reason
    merged = await a.agreements.propose(
        NS,
        "merge",
        participants=["agent-a"],
        deadline=30,
        writes=[
            TransitionWrite(namespace=FACTS, key="doc", value={"b": None, "c": 3}, mode="merge")
        ],
    )
    assert merged.agreement.committed  # one seat, accepted with the proposal
    assert await _stored(pg_conn, FACTS, "doc") == {"a": 1, "c": 3}


async def test_writes_are_validated_and_authorized(connect, start_daemon, tmp_path) -> None:
    a = await connect("agent-a")
    bad = [
        (TransitionWrite(namespace="bad//ns", key="k", value=1), "writes[0].namespace"),
        (TransitionWrite(namespace=NS, key="k", value=1, tier="working"), "writes[0].task_id"),
        (
            TransitionWrite(namespace=NS, key="k", value=1, mode="lww", expected_revision=3),
            "writes[0].expected_revision",
        ),
    ]
    for write, field in bad:
        with pytest.raises(InvalidArgumentError) as err:
            await a.agreements.propose(
                NS, "v", participants=["agent-a"], deadline=30, writes=[write]
            )
        assert err.value.violations[0].field == field
    twice = [TransitionWrite(namespace=NS, key="k", value=1)] * 2
    with pytest.raises(InvalidArgumentError):
        await a.agreements.propose(NS, "v", participants=["agent-a"], deadline=30, writes=twice)

    policy = write_policy(
        tmp_path,
        """
[[grants]]
role = "worker"
namespaces = ["acme/plan"]
operations = ["read", "write"]
""",
    )
    scoped: DaemonThread = start_daemon(policy_file=policy)
    w = await connect("agent-w", address=scoped.address)
    with pytest.raises(PermissionDeniedError) as denied:
        await w.agreements.propose(
            NS,
            "scope",
            participants=["agent-w"],
            deadline=30,
            writes=[TransitionWrite(namespace=FACTS, key="k", value=1)],
        )
    assert denied.value.namespace == FACTS


async def test_writes_exactly_when_committed_under_concurrency(connect, pg_conn) -> None:
    """Many agreements decided concurrently, half rejected: the stored entries are exactly the
    committed agreements' writes, across both namespaces, and no agreement is half applied."""
    voters = [await connect(f"v{i}") for i in range(3)]
    rng = random.Random(5)
    ids = [f"c{i}" for i in range(16)]
    for agreement_id in ids:
        await voters[0].agreements.propose(
            NS,
            agreement_id,
            participants=[v.agent_id for v in voters],
            deadline=30,
            writes=_writes(agreement_id),
        )

    async def vote(voter: AsyncClient, agreement_id: str, accept: bool) -> None:
        await asyncio.sleep(rng.uniform(0, 0.01))
        with contextlib.suppress(AgreementDecidedError):  # a vote after a reject decided it
            await voter.agreements.vote(NS, agreement_id, accept)

    plan = {i: rng.random() < 0.5 for i in ids}  # True: one voter rejects
    await asyncio.gather(
        *(vote(v, i, not (plan[i] and n == 2)) for i in ids for n, v in enumerate(voters[1:], 1))
    )
    for agreement_id in ids:
        state = (await voters[0].agreements.get(NS, agreement_id)).state
        status = await _stored(pg_conn, NS, f"{agreement_id}/status")
        owner = await _stored(pg_conn, FACTS, f"{agreement_id}/owner")
        if state == "committed":
            assert not plan[agreement_id]
            assert status == {"status": "approved"} and owner == "team-a"
        else:
            assert plan[agreement_id] and status is None and owner is None


async def test_crossing_writes_never_deadlock(connect) -> None:
    """Agreements in A writing into B and in B writing into A, decided concurrently with plain
    memory writes to both: every decision commits (namespaces are locked in one global order)."""
    a = await connect("agent-a")
    b = await connect("agent-b")
    pairs = [(NS, FACTS), (FACTS, NS)] * 6
    for i, (home, away) in enumerate(pairs):
        await a.agreements.propose(
            home,
            f"x{i}",
            participants=["agent-a", "agent-b"],
            deadline=30,
            writes=[
                TransitionWrite(namespace=away, key=f"x{i}", value=i),
                TransitionWrite(namespace=home, key=f"x{i}", value=i),
            ],
        )
    results = await asyncio.gather(
        *(b.agreements.vote(home, f"x{i}", accept=True) for i, (home, _) in enumerate(pairs)),
        *(a.memory.put(ns, f"plain-{i}", i) for i in range(6) for ns in (NS, FACTS)),
    )
    decided = results[: len(pairs)]
    assert all(r.committed for r in decided)  # type: ignore[union-attr]
    for i, (home, away) in enumerate(pairs):
        for ns in (home, away):
            entry = await b.memory.get(ns, f"x{i}")
            assert entry is not None and entry.value == i
