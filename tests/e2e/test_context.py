"""Context end to end: the seed's protocol, EACH and ANY delivery, subscriptions, expiry."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from coordd_client import (
    AsyncClient,
    FencingTokenStaleError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from tests.fix_daemon import write_policy

NS = "acme/swarm"


async def test_seed_protocol_each_delivery(connect) -> None:
    planner = await connect("planner-1", role="planner")
    reviewers = [await connect(f"reviewer-{i}", role="reviewer") for i in (1, 2)]
    posted = await planner.context.post(
        NS,
        {"doc": "doc-42", "ask": "check citations"},
        to_role="reviewer",
        context_type="review_request",
        task_id="task-7",
    )
    assert (posted.from_agent_id, posted.from_role) == ("planner-1", "planner")
    for r in reviewers:
        inbox = await r.context.inbox(NS)
        assert [e.id for e in inbox] == [posted.id]
        assert inbox[0].content == {"doc": "doc-42", "ask": "check citations"}
        assert await r.context.ack(NS, posted.id) == [posted.id]
        assert await r.context.inbox(NS) == []
        assert await r.context.ack(NS, posted.id) == [], "acknowledged once per agent"
    assert [e.id for e in await reviewers[0].context.inbox(NS, unread=False)] == [posted.id]
    (sent,) = await planner.context.sent(NS)
    assert sorted(a.agent_id for a in sent.acks) == ["reviewer-1", "reviewer-2"]
    assert {a.role for a in sent.acks} == {"reviewer"}
    assert await planner.context.inbox(NS) == [], "the planner's own inbox is empty"


async def test_entries_to_one_agent_and_filters(connect) -> None:
    a = await connect("a", role="worker")
    b = await connect("b", role="worker")
    direct = await a.context.post(NS, "just for b", to_agent_id="b", context_type="note")
    await a.context.post(NS, "for all workers", to_role="worker", context_type="broadcast")
    assert [e.id for e in await b.context.inbox(NS, context_type="note")] == [direct.id]
    assert len(await b.context.inbox(NS)) == 2
    assert [e.context_type for e in await a.context.inbox(NS)] == ["broadcast"]
    page = await b.context.inbox(NS, limit=1)
    rest = await b.context.inbox(NS, after_id=page[0].id)
    assert len(page) == 1 and len(rest) == 1 and rest[0].id > page[0].id


async def test_any_delivery_every_entry_acknowledged_exactly_once(connect, db_clock) -> None:
    planner = await connect("planner", role="planner")
    workers = [await connect(f"w{i}", role="worker") for i in range(4)]
    ids = []
    for i in range(500):
        entry = await planner.context.post(
            NS, {"n": i}, to_role="worker", context_type="job", delivery="any"
        )
        ids.append(entry.id)
    acked: Counter[int] = Counter()
    taken_by_dead: list[int] = []

    async def work(i: int, client: AsyncClient) -> None:
        while True:
            batch = await client.context.inbox(NS, limit=25, lease=30)
            if not batch:
                return
            if i == 0 and not taken_by_dead:  # worker 0 dies holding its first batch
                taken_by_dead.extend(e.id for e in batch)
                return
            for e in batch:
                acked.update(await client.context.ack(NS, e.id))

    await asyncio.gather(*(work(i, c) for i, c in enumerate(workers)))
    assert taken_by_dead and not set(taken_by_dead) & set(acked)
    assert set(acked) == set(ids) - set(taken_by_dead)
    db_clock.advance(31)  # the dead worker's lease lapses: its entries are unread again
    await asyncio.gather(*(work(i, c) for i, c in enumerate(workers[1:], start=1)))
    assert set(acked) == set(ids)
    assert max(acked.values()) == 1, "an entry was acknowledged twice"
    for w in workers:
        assert await w.context.inbox(NS) == []


async def test_any_entry_held_by_a_live_taker_cannot_be_acked_by_others(connect) -> None:
    planner = await connect("planner", role="planner")
    w1, w2 = await connect("w1", role="worker"), await connect("w2", role="worker")
    entry = await planner.context.post(NS, 1, to_role="worker", context_type="job", delivery="any")
    assert [e.id for e in await w1.context.inbox(NS)] == [entry.id]
    assert await w2.context.inbox(NS) == [], "taken by w1"
    assert await w2.context.ack(NS, entry.id) == []
    assert await w1.context.ack(NS, entry.id) == [entry.id]


async def test_subscribe_backlog_then_live_and_resume(connect) -> None:
    planner = await connect("planner", role="planner")
    reviewer = await connect("reviewer", role="reviewer")
    first = await planner.context.post(NS, 1, to_role="reviewer", context_type="t")
    stream = reviewer.context.subscribe(NS)
    got = [await asyncio.wait_for(anext(stream), 10)]
    second = await planner.context.post(NS, 2, to_role="reviewer", context_type="t")
    got.append(await asyncio.wait_for(anext(stream), 10))
    await stream.aclose()
    assert [e.id for e in got] == [first.id, second.id]
    third = await planner.context.post(NS, 3, to_role="reviewer", context_type="t")
    resumed = reviewer.context.subscribe(NS, after_id=got[-1].id)  # reconnect from the cursor
    assert (await asyncio.wait_for(anext(resumed), 10)).id == third.id
    await resumed.aclose()


async def test_ten_live_subscribers_each_get_every_entry_once_in_order(connect) -> None:
    """Fan-out to open streams (delivery latency is measured by ``python -m bench context``)."""
    planner = await connect("planner", role="planner")
    subscribers = [await connect(f"r{i}", role="reviewer") for i in range(10)]
    rounds = 30
    ready = [asyncio.Event() for _ in subscribers]
    received: list[list[object]] = [[] for _ in subscribers]

    async def listen(n: int, client: AsyncClient) -> None:
        stream = client.context.subscribe(NS)
        async for entry in stream:
            if entry.content == "ready":
                ready[n].set()
            else:
                received[n].append(entry.content)
                if entry.content == rounds - 1:
                    break
        await stream.aclose()

    listeners = [asyncio.create_task(listen(n, c)) for n, c in enumerate(subscribers)]
    # Every stream has seen the first entry before the rest are posted: what follows reaches
    # streams that are already open (pushed by LISTEN/NOTIFY), not a backlog read.
    await planner.context.post(NS, "ready", to_role="reviewer", context_type="tick")
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 30)
    for n in range(rounds):
        await planner.context.post(NS, n, to_role="reviewer", context_type="tick")
    await asyncio.wait_for(asyncio.gather(*listeners), 30)
    assert received == [list(range(rounds))] * len(subscribers)


async def test_a_post_without_context_type_is_a_message(connect) -> None:
    planner = await connect("planner", role="planner")
    reviewer = await connect("reviewer", role="reviewer")
    posted = await planner.context.post(NS, {"doc": "doc-1"}, to_role="reviewer")
    assert posted.context_type == "message"
    assert [e.context_type for e in await reviewer.context.inbox(NS)] == ["message"]
    assert [e.id for e in await reviewer.context.inbox(NS, context_type="message")] == [posted.id]


async def test_expired_entries_vanish_and_are_purged(connect, db_clock, daemon, pg_conn) -> None:
    planner = await connect("planner", role="planner")
    reviewer = await connect("reviewer", role="reviewer")
    await planner.context.post(NS, "short", to_role="reviewer", context_type="t", ttl=10)
    await planner.context.post(NS, "short", to_role="reviewer", delivery="any", ttl=10)
    keep = await planner.context.post(NS, "long", to_role="reviewer", context_type="t", ttl=60)
    keep_any = await planner.context.post(NS, "long", to_role="reviewer", delivery="any", ttl=60)
    db_clock.advance(11)
    assert [e.id for e in await reviewer.context.inbox(NS, unread=False)] == [keep.id, keep_any.id]
    assert daemon.sweep()["context_purged"] == 2
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.context_entries")
    assert (await cur.fetchone())[0] == 2
    # An ANY entry's delivery state goes with it.
    cur = await pg_conn.execute("SELECT id FROM coordd.context_any")
    assert await cur.fetchall() == [(keep_any.id,)]


async def test_fenced_post_and_bad_input(connect, db_clock) -> None:
    a, b = await connect("a", role="worker"), await connect("b", role="worker")
    old = await a.claims.acquire(NS, "doc", ttl=5)
    db_clock.advance(6)
    await b.claims.acquire(NS, "doc", ttl=5)
    assert old.claim
    with pytest.raises(FencingTokenStaleError):
        await a.context.post(NS, 1, to_role="x", context_type="t", fence=old.claim.fence)
    assert await b.context.inbox(NS, unread=False) == []
    with pytest.raises(InvalidArgumentError) as exc:
        await a.context.post(NS, float("nan"), to_role="x", to_agent_id="y", context_type="a\tb")
    assert [v.field for v in exc.value.violations] == ["to_role", "context_type", "content_json"]


async def test_reading_another_roles_inbox_needs_admin(start_daemon, tmp_path) -> None:
    policy = write_policy(
        tmp_path,
        '[[grants]]\nrole = "worker"\nnamespaces = ["acme/**"]\noperations = ["read", "write"]\n'
        '[[grants]]\nrole = "lead"\nnamespaces = ["acme/**"]\noperations = ["read", "admin"]\n',
    )
    d = start_daemon(policy_file=policy)
    async with (
        await AsyncClient.connect(d.address, agent_id="w", role="worker") as worker,
        await AsyncClient.connect(d.address, agent_id="l", role="lead") as lead,
    ):
        await worker.context.post(NS, 1, to_role="reviewer", context_type="t")
        with pytest.raises(PermissionDeniedError):
            await worker.context.inbox(NS, role="reviewer")
        assert len(await lead.context.inbox(NS, role="reviewer", unread=False)) == 1


async def test_entry_carries_the_senders_vector_and_the_reader_merges_it(connect) -> None:
    a = await connect("agent-a", role="writer")
    b = await connect("agent-b", role="reader")
    got = await a.claims.acquire("acme/other", "r", ttl=30)  # A has seen acme/other@rev
    await a.context.post(NS, "go", to_agent_id="agent-b", context_type="handoff")
    (entry,) = await b.context.inbox(NS)
    assert entry.sender_vector == {"acme/other": got.revision}
    assert b.session.revision("acme/other") == got.revision
    assert b.session.revision(NS) == entry.id


async def test_causality_reader_sees_what_the_sender_wrote_before_posting(connect) -> None:
    a = await connect("agent-a", role="writer")
    b = await connect("agent-b", role="reader")
    written = await a.memory.put("acme/facts", "plan", {"step": 3})
    posted = await a.context.post(NS, "plan updated", to_agent_id="agent-b", context_type="ping")
    assert posted.sender_vector["acme/facts"] == written.revision
    (entry,) = await b.context.inbox(NS)
    assert entry.sender_vector == posted.sender_vector
    # B merged A's vector: its read carries min_revision >= A's write, and returns it.
    assert b.session.revision("acme/facts") == written.revision
    seen = await b.memory.get("acme/facts", "plan")
    assert seen is not None and seen.revision >= written.revision and seen.value == {"step": 3}


async def test_a_take_returns_what_the_caller_still_holds_first_then_new_entries(connect) -> None:
    # A take's answer is what the caller holds after it, in id order: entries it still holds
    # from an earlier take (and has not acknowledged) come first. The common case (nothing
    # held) answers with what the take locked, without looking up the caller's holdings.
    planner = await connect("planner", role="planner")
    w1, w2 = await connect("w1", role="worker"), await connect("w2", role="worker")

    async def post_any(n: int) -> list[int]:
        return [
            (await planner.context.post(NS, i, to_role="worker", delivery="any")).id
            for i in range(n)
        ]

    ids = await post_any(8)
    assert [e.id for e in await w1.context.take(NS, 3)] == ids[:3]
    # Still holding ids[:3]: those come first. The take itself took five more (ids[3:8]).
    assert [e.id for e in await w1.context.take(NS, 5)] == ids[:5]
    assert await w2.context.take(NS, 2) == [], "w1 holds every entry"
    assert sorted(await w1.context.ack(NS, ids[:5])) == ids[:5]  # every id an ANY entry
    assert [e.id for e in await w1.context.take(NS, 5)] == ids[5:]
    assert sorted(await w1.context.ack(NS, ids[5:])) == ids[5:]
    # Nothing held any more: the next take answers with new entries only.
    more = await post_any(3)
    assert [e.id for e in await w1.context.take(NS, 2)] == more[:2]
    assert [e.id for e in await w2.context.take(NS, 2)] == more[2:]
    # One ack over ANY and EACH entries, and one held by another: each kind as it should.
    each = await planner.context.post(NS, "all", to_role="worker", context_type="note")
    acked = await w1.context.ack(NS, [more[1], each.id, more[2], more[0]])
    assert sorted(acked) == sorted([more[0], more[1], each.id]), "more[2] is w2's"
    assert sorted(await w2.context.ack(NS, [more[2], each.id])) == sorted([more[2], each.id])


async def test_a_taken_page_merges_every_senders_vector_into_the_session(connect) -> None:
    a, b = await connect("a", role="planner"), await connect("b", role="planner")
    worker = await connect("w", role="worker")
    await a.memory.put("acme/a-notes", "k", 1)
    await b.memory.put("acme/b-notes", "k", 1)
    await b.memory.put("acme/b-notes", "k", 2)
    first = await a.context.post(NS, 1, to_role="worker", context_type="job", delivery="any")
    last = await b.context.post(NS, 2, to_role="worker", context_type="job", delivery="any")
    assert [e.id for e in await worker.context.take(NS, 10)] == [first.id, last.id]
    vector = worker.session.vector
    assert vector["acme/a-notes"] == a.session.vector["acme/a-notes"]
    assert vector["acme/b-notes"] == b.session.vector["acme/b-notes"]
    assert vector[NS] >= last.id


async def test_what_a_taker_holds_survives_lapsed_leases_and_stale_fenced_acks(
    connect, db_clock
) -> None:
    # Whether a taker still holds entries is kept as a count per agent (schema 13), used only
    # to skip looking them up when it is zero: these are the cases where it is not exact.
    planner = await connect("planner", role="planner")
    w1, w2 = await connect("w1", role="worker"), await connect("w2", role="worker")
    ids = [
        (await planner.context.post(NS, i, to_role="worker", delivery="any")).id for i in range(6)
    ]
    assert [e.id for e in await w1.context.take(NS, 2, lease=10)] == ids[:2]
    db_clock.advance(11)  # w1's lease lapses; w2 takes and acknowledges what w1 had
    assert [e.id for e in await w2.context.take(NS, 2, lease=30)] == ids[:2]
    assert sorted(await w2.context.ack(NS, ids[:2])) == ids[:2]
    # w1 holds nothing now (its count is stale until its next take): new entries only.
    assert [e.id for e in await w1.context.take(NS, 2, lease=30)] == ids[2:4]
    # A fenced ack that fails acknowledges nothing, so w1 still holds both.
    lane = await w1.claims.acquire(NS, "lane", ttl=5)
    db_clock.advance(6)
    await w2.claims.acquire(NS, "lane", ttl=5)
    assert lane.claim
    with pytest.raises(FencingTokenStaleError):
        await w1.context.ack(NS, ids[2:4], fence=lane.claim.fence)
    assert [e.id for e in await w1.context.take(NS, 1, lease=30)] == ids[2:3]
    assert sorted(await w1.context.ack(NS, ids[2:5])) == ids[2:5]  # ids[4]: that take's
    assert [e.id for e in await w1.context.take(NS, 5, lease=30)] == ids[5:]
