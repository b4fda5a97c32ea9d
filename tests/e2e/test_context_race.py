"""Concurrent takers of one role's ANY queue: never two holders, every entry acked once.

Takes and acks lock their entries first and the namespace's revision row last (only for the
bump, the change-log row and the commit), so takers of one role run in parallel and skip each
other's rows. These tests race them (with posts, fenced acks and an admin purge in the same
namespace) and check what the old one-at-a-time path guaranteed:

- while its lease holds, an entry is in exactly one taker's hands;
- when everyone acknowledges, every entry is acknowledged exactly once;
- a lapsed lease hands the entry to one new taker, and the old taker's late ack loses or wins
  the race whole (never both acknowledge);
- the change log is gapless, each take and each ack has its own revision, and replaying it
  gives the same takes and acknowledgements the clients saw.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from coordd_client import AsyncClient

NS = "race/queue"


async def _post(client: AsyncClient, n: int, tag: str) -> list[int]:
    ids = []
    for i in range(n):
        entry = await client.context.post(
            NS, {"job": f"{tag}-{i}"}, to_role="worker", context_type="job", delivery="any"
        )
        ids.append(entry.id)
    return ids


async def test_parallel_takers_hold_disjoint_entries_and_the_log_replays_them(connect) -> None:
    posters = [await connect(f"poster-{i}", role="planner") for i in range(2)]
    takers = [await connect(f"w{i}", role="worker") for i in range(6)]
    lanes = await takers[0].claims.acquire(NS, "lane", ttl=120)  # fenced acks, same namespace
    assert lanes.acquired and lanes.claim is not None
    start = (await posters[0].context.post(NS, "mark", to_role="nobody")).id + 1
    rng = random.Random(11)
    posting = asyncio.gather(*(_post(p, 120, p.agent_id) for p in posters))
    held: dict[int, str] = {}  # entry id -> taker currently holding it (until acked)
    taken: Counter[int] = Counter()
    acked: Counter[int] = Counter()
    acker: dict[int, str] = {}

    async def work(client: AsyncClient) -> None:
        idle = 0
        while idle < 3:
            batch = await client.context.take(NS, rng.randint(1, 15))
            if not batch:
                idle = idle + 1 if posting.done() else 0
                await asyncio.sleep(0)
                continue
            for e in batch:
                assert e.id not in held, f"{e.id} given to {client.agent_id}, held by {held[e.id]}"
                held[e.id] = client.agent_id
                taken[e.id] += 1
            await asyncio.sleep(rng.choice([0, 0, 0.005]))
            ids = [e.id for e in batch]
            for i in ids:
                del held[i]  # released before the ack's answer: a retake would show up above
            fence = lanes.claim.fence if client is takers[0] else None  # type: ignore[union-attr]
            done = await client.context.ack(NS, ids, fence=fence)
            acked.update(done)
            acker.update(dict.fromkeys(done, client.agent_id))

    await asyncio.gather(*(work(c) for c in takers))
    posted = [i for ids in await posting for i in ids]
    assert set(taken) == set(posted) and max(taken.values()) == 1, "an entry was taken twice"
    assert set(acked) == set(posted) and max(acked.values()) == 1, "an entry was acked twice"
    receipts = {}  # what the posters see: one receipt per entry, naming who acknowledged it
    for p in posters:
        cursor = start - 1
        while page := await p.context.sent(NS, after_id=cursor, limit=50):
            receipts.update({e.id: [(a.agent_id, a.role) for a in e.acks] for e in page})
            cursor = page[-1].id
    assert receipts == {i: [(acker[i], "worker")] for i in posted}

    last = max(c.session.revision(NS) for c in [*posters, *takers])
    events = [e async for e in takers[1].watch(NS, start_revision=start, until_revision=last)]
    revisions = sorted({e.revision for e in events})
    assert revisions == list(range(start, last + 1)), "the change log has a gap"
    assert Counter(e.revision for e in events).most_common(1)[0][1] == 1, "one row a revision"
    take_log: Counter[int] = Counter()
    ack_log: Counter[int] = Counter()
    taken_at: dict[int, int] = {}
    for e in events:
        if e.op == "take":
            take_log.update(e.data["ids"])
            taken_at.update(dict.fromkeys(e.data["ids"], e.revision))
        elif e.op == "ack":
            ack_log.update(e.data["ids"])
            assert all(taken_at[i] < e.revision for i in e.data["ids"]), "acked before taken"
    assert take_log == taken and ack_log == acked
    assert sorted(e.revision for e in events if e.op == "post") == sorted(posted)


async def test_lapsed_lease_goes_to_one_new_taker_and_the_late_ack_never_doubles(
    connect, db_clock
) -> None:
    poster = await connect("poster", role="planner")
    dead = await connect("dead", role="worker")
    takers = [await connect(f"w{i}", role="worker") for i in range(4)]
    posted = await _post(poster, 60, "job")
    held_by_dead = [e.id for e in await dead.context.take(NS, 40, lease=5)]
    assert held_by_dead == posted[:40]
    db_clock.advance(6)  # the lease lapses: the entries are free, the dead agent still acks
    acked: Counter[int] = Counter()
    taken: Counter[int] = Counter()

    async def retake(client: AsyncClient) -> None:
        while batch := await client.context.take(NS, 7):
            taken.update(e.id for e in batch)
            acked.update(await client.context.ack(NS, [e.id for e in batch]))

    async def late_ack() -> None:
        for chunk in (held_by_dead[:20], held_by_dead[20:]):
            acked.update(await dead.context.ack(NS, chunk))

    await asyncio.gather(late_ack(), *(retake(c) for c in takers))
    assert set(acked) == set(posted) and max(acked.values()) == 1
    assert max(taken.values()) == 1, "a lapsed entry went to two new takers"
    for c in [dead, *takers]:
        assert await c.context.take(NS, 100) == []


async def test_admin_purge_racing_takers_and_acks_completes(connect) -> None:
    poster = await connect("poster", role="planner")
    ops = await connect("ops", role="ops")
    takers = [await connect(f"w{i}", role="worker") for i in range(4)]
    await _post(poster, 80, "job")

    working = asyncio.Event()

    async def work(client: AsyncClient) -> int:
        n = 0
        while batch := await client.context.take(NS, 5):
            working.set()
            n += len(await client.context.ack(NS, [e.id for e in batch]))
        return n

    async def purge() -> int:
        await working.wait()  # mid-drain: takes and acks in flight
        return (await ops.admin.purge_namespace(NS, reason="race")).removed["context"]

    # No deadlock between the purge (entries, then namespace) and takers/acks (the same order):
    # everything answers well inside the deadline, and each entry is acked or purged.
    done = await asyncio.wait_for(asyncio.gather(purge(), *(work(c) for c in takers)), 30)
    purged, acks = done[0], sum(done[1:])
    assert purged + acks >= 80 and acks <= 80
