"""Claims end to end: client -> daemon -> PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from coordd_client import (
    AsyncClient,
    ClaimHeldError,
    ClaimNotHeldError,
    Client,
)
from tests.fix_daemon import DaemonThread
from tests.fix_db import DbClock

NS = "acme/docs"


async def test_acquire_answers_in_band_and_routes_to_free_work(connect) -> None:
    a: AsyncClient = await connect("agent-a")
    b: AsyncClient = await connect("agent-b")
    got = await a.claims.acquire(NS, "doc-1", ttl=30)
    assert got.acquired and got.claim is not None
    assert got.claim.holder_agent_id == "agent-a" and got.claim.holder_role == "worker"
    assert got.claim.fencing_token == got.revision > 0

    refused = await b.claims.acquire(NS, "doc-1", ttl=30)
    assert not refused.acquired
    assert refused.claim is not None and refused.claim.holder_agent_id == "agent-a"
    assert refused.claim.expire_time == got.claim.expire_time

    other = await b.claims.acquire_any(NS, ["doc-1", "doc-2", "doc-3"], ttl=30)
    assert other.acquired and other.claim is not None and other.claim.resource == "doc-2"


async def test_reacquire_by_holder_renews_and_keeps_token(connect) -> None:
    a = await connect("agent-a")
    first = await a.claims.acquire(NS, "doc-1", ttl=5)
    again = await a.claims.acquire(NS, "doc-1", ttl=60)
    assert again.acquired and again.claim and first.claim
    assert again.claim.fencing_token == first.claim.fencing_token
    assert again.claim.expire_time > first.claim.expire_time
    assert again.revision == first.revision + 1


async def test_expired_claim_goes_to_next_acquirer_with_larger_token(
    connect, db_clock: DbClock
) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    first = await a.claims.acquire(NS, "doc-1", ttl=10)
    db_clock.advance(9)
    assert not (await b.claims.acquire(NS, "doc-1", ttl=10)).acquired
    db_clock.advance(2)  # past a's lease, by the database clock
    second = await b.claims.acquire(NS, "doc-1", ttl=10)
    assert second.acquired and second.claim and first.claim
    assert second.claim.fencing_token > first.claim.fencing_token
    with pytest.raises(ClaimNotHeldError) as err:
        await a.claims.renew(NS, "doc-1", first.claim.fencing_token, ttl=10)
    assert err.value.holder_agent_id == "agent-b"
    assert err.value.fencing_token == second.claim.fencing_token


async def test_renew_release_and_reads(connect) -> None:
    a = await connect("agent-a")
    got = await a.claims.acquire(NS, "doc-1", ttl=10, progress="starting")
    assert got.claim
    renewed = await a.claims.renew(NS, "doc-1", got.claim.fencing_token, 20, progress="half done")
    assert renewed.progress == "half done" and renewed.expire_time > got.claim.expire_time
    seen = await a.claims.get(NS, "doc-1")
    assert seen is not None and seen.progress == "half done"
    listed = await a.claims.list(NS)
    assert [c.resource for c in listed.claims] == ["doc-1"]
    await a.claims.release(NS, "doc-1", got.claim.fencing_token)
    assert await a.claims.get(NS, "doc-1") is None
    with pytest.raises(ClaimNotHeldError):
        await a.claims.release(NS, "doc-1", got.claim.fencing_token)


async def test_list_pages_and_filters_by_holder(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    for i in range(5):
        await a.claims.acquire(NS, f"r{i}", ttl=30)
    await b.claims.acquire(NS, "zz", ttl=30)
    page1 = await a.claims.list(NS, page_size=2)
    page2 = await a.claims.list(NS, page_size=2, page_token=page1.next_page_token)
    page3 = await a.claims.list(NS, page_size=2, page_token=page2.next_page_token)
    names = [c.resource for p in (page1, page2, page3) for c in p.claims]
    assert names == ["r0", "r1", "r2", "r3", "r4", "zz"] and page3.next_page_token == ""
    only_b = await a.claims.list(NS, holder_agent_id="agent-b")
    assert [c.resource for c in only_b.claims] == ["zz"]


async def _queued(daemon: DaemonThread, n: int) -> None:
    service = daemon.daemon.claim_service
    assert service is not None
    deadline = asyncio.get_running_loop().time() + 10
    while service.waiting(NS, "doc-1") < n:
        assert asyncio.get_running_loop().time() < deadline, "waiter never queued"
        await asyncio.sleep(0.01)


async def test_wait_blocks_until_release_first_come_first_served(
    connect, daemon: DaemonThread
) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    c = await connect("agent-c")
    held = await a.claims.acquire(NS, "doc-1", ttl=60)
    assert held.claim
    wait_b = asyncio.create_task(b.claims.acquire(NS, "doc-1", ttl=60, wait=20))
    await _queued(daemon, 1)
    wait_c = asyncio.create_task(c.claims.acquire(NS, "doc-1", ttl=60, wait=20))
    await _queued(daemon, 2)
    assert not wait_b.done() and not wait_c.done()
    await a.claims.release(NS, "doc-1", held.claim.fencing_token)
    got_b = await asyncio.wait_for(wait_b, 10)
    assert got_b.acquired and got_b.claim and got_b.claim.holder_agent_id == "agent-b"
    assert not wait_c.done()
    await b.claims.release(NS, "doc-1", got_b.claim.fencing_token)
    got_c = await asyncio.wait_for(wait_c, 10)
    assert got_c.acquired and got_c.claim and got_c.claim.fencing_token > got_b.claim.fencing_token


async def test_wait_gives_up_after_its_bound(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    await a.claims.acquire(NS, "doc-1", ttl=60)
    loop = asyncio.get_running_loop()
    started = loop.time()
    res = await b.claims.acquire(NS, "doc-1", ttl=60, wait=0.3)
    assert not res.acquired and res.claim and res.claim.holder_agent_id == "agent-a"
    assert 0.3 <= loop.time() - started < 5


async def test_sweeper_records_expiry_in_change_log(
    connect, daemon: DaemonThread, db_clock: DbClock, pg_conn
) -> None:
    a = await connect("agent-a")
    got = await a.claims.acquire(NS, "doc-1", ttl=5)
    db_clock.advance(6)
    assert daemon.sweep()["claims_expired"] == 1
    cur = await pg_conn.execute(
        "SELECT revision, op, data->>'holder_agent_id' FROM coordd.changes"
        " WHERE namespace = %s ORDER BY revision",
        (NS,),
    )
    rows = await cur.fetchall()
    assert [r[1] for r in rows] == ["acquire", "expire"]
    assert rows[1][0] == got.revision + 1 and rows[1][2] == "agent-a"


async def test_hold_renews_in_background_and_releases(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    async with a.claims.hold(NS, "doc-1", ttl=0.6) as held:
        first_expiry = held.claim.expire_time
        deadline = asyncio.get_running_loop().time() + 5
        while held.claim.expire_time == first_expiry:  # poll against a deadline
            assert asyncio.get_running_loop().time() < deadline, "never renewed"
            await asyncio.sleep(0.05)
        assert not held.lost
        assert not (await b.claims.acquire(NS, "doc-1", ttl=5)).acquired
    assert await b.claims.get(NS, "doc-1") is None
    with pytest.raises(ClaimHeldError):
        async with b.claims.hold(NS, "doc-1", ttl=5), a.claims.hold(NS, "doc-1", ttl=5):
            pass


async def test_hold_reports_loss_when_taken_over(connect, db_clock: DbClock) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    async with a.claims.hold(NS, "doc-1", ttl=30) as held:
        db_clock.advance(31)  # a's lease lapses by the database clock; b takes the claim
        assert (await b.claims.acquire(NS, "doc-1", ttl=30)).acquired
        with pytest.raises(ClaimNotHeldError):
            await held.renew(progress="still here?")
        assert held.lost
        assert held.lost_event.is_set()


def test_blocking_client_hold(client: Client) -> None:
    with client.claims.hold(NS, "doc-9", ttl=10, progress="x") as held:
        assert held.fencing_token > 0
        client.claims.renew_held(held, progress="y")
        current = client.claims.get(NS, "doc-9")
        assert current is not None and current.progress == "y"
    assert client.claims.get(NS, "doc-9") is None
    assert client.session.revision(NS) >= held.fencing_token + 2


async def test_session_vector_tracks_headers(connect) -> None:
    a = await connect("agent-a")
    got = await a.claims.acquire("acme/x", "r", ttl=timedelta(seconds=10))
    await a.claims.acquire("acme/y", "r", ttl=timedelta(seconds=10))
    assert a.session.vector == {"acme/x": got.revision, "acme/y": 1}
