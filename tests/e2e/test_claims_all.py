"""AcquireClaims: every resource of a set or none, in one transaction, under contention."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from coordd_client import AcquireAllResult, AsyncClient, Client, InvalidArgumentError
from tests.fix_db import DbClock

NS = "acme/multi"


async def test_all_or_nothing_and_tokens(connect) -> None:
    a: AsyncClient = await connect("agent-a")
    b: AsyncClient = await connect("agent-b")
    got = await a.claims.acquire_all(NS, ["r1", "r2", "r3"], ttl=30, progress="batch")
    assert got.acquired and [c.resource for c in got.claims] == ["r1", "r2", "r3"]
    # One revision for the whole grant; every new token is that revision.
    assert {c.fencing_token for c in got.claims} == {got.revision}
    assert all(c.holder_agent_id == "agent-a" and c.progress == "batch" for c in got.claims)

    refused = await b.claims.acquire_all(NS, ["r4", "r2", "r5", "r3"], ttl=30)
    assert not refused.acquired
    assert [(c.resource, c.holder_agent_id) for c in refused.claims] == [
        ("r2", "agent-a"),
        ("r3", "agent-a"),
    ]
    # Nothing was taken, not even the free resources of the refused set.
    assert await b.claims.get(NS, "r4") is None and await b.claims.get(NS, "r5") is None
    assert refused.revision == got.revision

    # The holder re-acquiring part of its set with new resources: renews (same tokens) and
    # takes the new ones with a larger token, all in one revision.
    more = await a.claims.acquire_all(NS, ["r3", "r6"], ttl=60)
    assert more.acquired and more.revision == got.revision + 1
    r3, r6 = more.claims
    assert r3.fencing_token == got.revision and r6.fencing_token == more.revision
    assert r3.expire_time > got.claims[2].expire_time


async def test_expired_set_goes_to_next_acquirer_with_larger_tokens(
    connect, db_clock: DbClock, pg_conn
) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    first = await a.claims.acquire_all(NS, ["x", "y"], ttl=10)
    db_clock.advance(11)
    second = await b.claims.acquire_all(NS, ["y", "x", "z"], ttl=10)
    assert second.acquired
    assert all(c.fencing_token == second.revision > first.revision for c in second.claims)
    cur = await pg_conn.execute(
        "SELECT seq, key, op FROM coordd.changes WHERE namespace = %s AND revision = %s"
        " ORDER BY seq",
        (NS, second.revision),
    )
    assert await cur.fetchall() == [(0, "y", "acquire"), (1, "x", "acquire"), (2, "z", "acquire")]


async def test_rejects_bad_sets(connect) -> None:
    a = await connect("agent-a")
    for resources in ([], ["r", "r"], ["ok", ""]):
        with pytest.raises(InvalidArgumentError) as err:
            await a.claims.acquire_all(NS, resources, ttl=10)
        assert err.value.violations[0].field.startswith("resources")


def test_blocking_acquire_all(client: Client) -> None:
    got = client.claims.acquire_all(NS, ["b1", "b2"], ttl=10)
    assert isinstance(got, AcquireAllResult) and got.acquired
    assert [c.resource for c in client.claims.list(NS).claims] == ["b1", "b2"]


async def test_no_partial_holdings_ever_visible_under_contention(
    connect, db_clock: DbClock
) -> None:
    """Agents race for overlapping sets while an observer lists claims without pause.

    Each attempt tags its claims with a unique progress note and records its set before the
    call. Every snapshot must show each tag's whole set held by its agent under one token, or
    nothing of it; losers' tags never appear; single-resource acquirers race in too.
    """
    resources = [f"r{i}" for i in range(8)]
    agents = [await connect(f"multi-{i}") for i in range(6)]
    singles = [await connect(f"single-{i}") for i in range(2)]
    observer = await connect("observer")
    rng = random.Random(7)
    intended: dict[str, tuple[str, frozenset[str]]] = {}
    outcomes: dict[str, bool] = {}
    seen_tags: set[str] = set()
    tally = {True: 0, False: 0}
    last_token: dict[str, int] = {}
    snapshots = 0

    async def observe(stop: asyncio.Event) -> None:
        nonlocal snapshots
        while not stop.is_set():
            page = await observer.claims.list(NS, page_size=1000)
            snapshots += 1
            groups: dict[str, list[tuple[str, str, int]]] = {}
            for c in page.claims:
                groups.setdefault(c.progress, []).append(
                    (c.resource, c.holder_agent_id, c.fencing_token)
                )
            for tag, held in groups.items():
                agent, wanted = intended[tag]
                assert {r for r, _, _ in held} == wanted, f"partial holding of {tag}"
                assert {h for _, h, _ in held} == {agent}
                assert len({t for _, _, t in held}) == 1
                assert outcomes.get(tag, True), "a refused grant became visible"
                seen_tags.add(tag)
            await asyncio.sleep(0)

    async def attempt(client: AsyncClient, wanted: list[str]) -> None:
        tag = uuid.uuid4().hex
        intended[tag] = (client.agent_id, frozenset(wanted))
        if len(wanted) == 1:
            single = await client.claims.acquire(NS, wanted[0], ttl=30, progress=tag)
            res = AcquireAllResult(
                acquired=single.acquired,
                claims=[single.claim] if single.claim else [],
                revision=single.revision,
            )
        else:
            res = await client.claims.acquire_all(NS, wanted, ttl=30, progress=tag)
        outcomes[tag] = res.acquired
        tally[res.acquired] += 1
        if res.acquired:
            assert [c.resource for c in res.claims] == wanted
            for c in res.claims:
                assert c.fencing_token == res.revision > last_token.get(c.resource, 0)
        else:
            assert res.claims, "a refusal names who blocked it"
            assert all(
                c.resource in wanted and c.holder_agent_id != client.agent_id for c in res.claims
            )

    for _ in range(12):
        stop = asyncio.Event()
        watcher = asyncio.create_task(observe(stop))
        tries = [attempt(c, rng.sample(resources, rng.randint(2, 4))) for c in agents] + [
            attempt(c, [rng.choice(resources)]) for c in singles
        ]
        await asyncio.gather(*tries)
        stop.set()
        await watcher
        # Final state of the round: exactly the winners' whole sets.
        page = await observer.claims.list(NS, page_size=1000)
        winners = [t for t, won in outcomes.items() if won]
        assert {c.progress for c in page.claims} == set(winners)
        won_sets = [intended[t][1] for t in winners]
        assert sum(map(len, won_sets)) == len(page.claims) == len(set().union(*won_sets))
        for c in page.claims:
            last_token[c.resource] = c.fencing_token
        db_clock.advance(31)  # every lease of the round lapses together
        outcomes.clear()
    assert snapshots >= 12 and tally[True] >= 12 and tally[False] >= 12, (snapshots, tally)
    assert seen_tags, "the observer never saw a grant"
