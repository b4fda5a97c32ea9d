"""Group commit per namespace, against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import pytest

from coordd.domain.claims import Acquire
from coordd.domain.models import ClaimOutcome, Fence, Identity
from coordd.storage.batching import WriteBatcher
from coordd.storage.claims import ClaimStore
from coordd.storage.db import Database


def acquire(
    store: ClaimStore,
    namespace: str,
    resource: str,
    agent_id: str,
    role: str,
    ttl: timedelta,
    progress: str,
) -> Awaitable[ClaimOutcome]:
    ask = Acquire(
        namespace=namespace, resource=resource, ttl=ttl, wait=timedelta(0), progress=progress
    )
    return store.acquire(Identity(agent_id=agent_id, role=role), ask)


def release(
    store: ClaimStore, namespace: str, resource: str, agent_id: str, token: int
) -> Awaitable[ClaimOutcome]:
    claim = Fence(namespace=namespace, resource=resource, token=token)
    return store.release(Identity(agent_id=agent_id), claim)


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    database = Database(pg_dsn, min_size=1, max_size=4)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def test_concurrent_writes_share_commits_and_keep_gapless_revisions(db, pg_conn) -> None:
    writes = WriteBatcher(db)
    store = ClaimStore(db, writes)
    outcomes = await asyncio.gather(
        *(
            acquire(store, "hot", f"r{i}", f"agent-{i}", "", timedelta(seconds=30), "")
            for i in range(64)
        )
    )
    assert all(o.acquired for o in outcomes)
    assert sorted(o.revision for o in outcomes) == list(range(1, 65)), "gapless, one each"
    assert all(o.claim and o.claim.fencing_token == o.revision for o in outcomes)
    assert writes.writes == 64 and writes.transactions < 64 / 4, "writes were not batched"
    cur = await pg_conn.execute(
        "SELECT array_agg(revision ORDER BY revision) FROM coordd.changes WHERE namespace = 'hot'"
    )
    assert (await cur.fetchone())[0] == list(range(1, 65))


async def test_failing_write_fails_alone(db, pg_conn) -> None:
    writes = WriteBatcher(db)

    async def good(i: int) -> object:
        return await writes.fetchone(
            "ns",
            "SELECT status FROM coordd.acquire_claim(%s, %s, %s, '', '30s', '')",
            ("ns", f"r{i}", "a"),
        )

    async def bad() -> object:
        return await writes.fetchone("ns", "SELECT 1/0", ())

    results = await asyncio.gather(
        good(0), good(1), bad(), good(2), good(3), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and "division by zero" in str(errors[0])
    assert [r for r in results if not isinstance(r, Exception)] == [("ok",)] * 4
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.claims WHERE namespace = 'ns'")
    assert (await cur.fetchone())[0] == 4


async def test_calls_of_several_functions_share_one_statement_in_queue_order(db, pg_conn) -> None:
    writes = WriteBatcher(db)
    store = ClaimStore(db, writes)
    ttl = timedelta(seconds=30)
    held = [await acquire(store, "mix", f"old{i}", "a", "", ttl, "") for i in range(4)]
    before = writes.transactions
    first, *batched = await asyncio.gather(
        acquire(store, "mix", "lone", "a", "", ttl, ""),
        *(release(store, "mix", f"old{i}", "a", o.claim.fencing_token) for i, o in enumerate(held)),
        acquire(store, "mix", "contested", "first", "", ttl, ""),
        acquire(store, "mix", "contested", "second", "", ttl, ""),
        acquire(store, "mix", "fresh", "b", "", ttl, ""),
    )
    assert writes.transactions - before == 2, "the lone write, then one batch"
    releases, (won, lost, fresh) = batched[:4], batched[4:]
    assert all(r.acquired for r in releases) and won.acquired and fresh.acquired
    assert not lost.acquired and lost.claim and lost.claim.holder_agent_id == "first"
    granted = [first, *releases, won, fresh]
    assert sorted(o.revision for o in granted) == list(range(5, 12)), "gapless, one each"
    assert lost.revision in range(5, 12), "a refusal reports the revision it saw"
    cur = await pg_conn.execute(
        "SELECT revision, op, key FROM coordd.changes WHERE namespace = 'mix' AND revision > 4"
    )
    logged = {rev: (op, key) for rev, op, key in await cur.fetchall()}
    assert logged == {
        first.revision: ("acquire", "lone"),
        **{r.revision: ("release", f"old{i}") for i, r in enumerate(releases)},
        won.revision: ("acquire", "contested"),
        fresh.revision: ("acquire", "fresh"),
    }
    assert won.claim and won.claim.fencing_token == won.revision


async def test_failing_call_in_a_batched_statement_fails_alone(db, pg_conn) -> None:
    writes = WriteBatcher(db)
    store = ClaimStore(db, writes)
    ttl = timedelta(seconds=30)
    results = await asyncio.gather(
        *(acquire(store, "calls", f"r{i}", "a", "", ttl, "") for i in range(3)),
        # now() + this lease is past PostgreSQL's last timestamp: that call raises.
        acquire(store, "calls", "bad", "a", "", timedelta.max, ""),
        acquire(store, "calls", "r3", "a", "", ttl, ""),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and "out of range" in str(errors[0])
    assert all(r.acquired for r in results if not isinstance(r, Exception))
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.claims WHERE namespace = 'calls'")
    assert (await cur.fetchone())[0] == 4
