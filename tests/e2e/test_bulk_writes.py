"""Bulk writes: PutMemories (all or nothing, in order) and batched context take-and-ack."""

from __future__ import annotations

import asyncio

import pytest

from coordd_client import (
    InvalidArgumentError,
    MemoryPut,
    RevisionMismatchError,
)

NS = "acme/bulk"


async def test_put_many_writes_every_entry_in_order_and_feeds_search(aclient) -> None:
    writes = [
        MemoryPut(
            namespace=NS,
            key=f"k{i}",
            value={"i": i},
            embedding=[1.0, float(i), 0.5],
            tags=[f"t{j}" for j in range(i % 3)],  # of different lengths in one batch
        )
        for i in range(50)
    ]
    entries = await aclient.memory.put_many(writes)
    assert [e.key for e in entries] == [w.key for w in writes]
    revisions = [e.revision for e in entries]
    assert revisions == sorted(revisions) and len(set(revisions)) == 50
    assert aclient.session.revision(NS) == revisions[-1]
    got = await aclient.memory.get(NS, "k7")
    assert got is not None and got.value == {"i": 7} and got.revision == revisions[7]
    assert got.tags == ["t0"] and [e.tags for e in entries[:3]] == [[], ["t0"], ["t0", "t1"]]
    hits = await aclient.memory.search([1.0, 7.0, 0.5], 1, NS)  # read-your-writes: indexed
    assert hits[0].entry.key == "k7"


async def test_put_many_is_all_or_nothing(aclient) -> None:
    first = await aclient.memory.put(NS, "taken", {"v": 1})
    before = aclient.session.revision(NS)
    batch = [
        MemoryPut(namespace=NS, key="a", value=1),
        MemoryPut(namespace=f"{NS}/other", key="b", value=2),
        # Must not exist, but does: the whole batch is refused.
        MemoryPut(namespace=NS, key="taken", value=3, expected_revision=0),
        MemoryPut(namespace=NS, key="c", value=4),
    ]
    with pytest.raises(RevisionMismatchError) as err:
        await aclient.memory.put_many(batch)
    assert err.value.key == "taken" and err.value.current_revision == first.revision
    for w in batch:
        current = await aclient.memory.get(w.namespace, w.key)
        assert current is None or (w.key == "taken" and current.value == {"v": 1})
    # The failed batch left no revision behind: the next write follows the last one.
    after = await aclient.memory.put(NS, "next", 0)
    assert after.revision == before + 1


async def test_put_many_reports_the_entry_at_fault_and_the_limit(aclient) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        await aclient.memory.put_many(
            [MemoryPut(namespace=NS, key="ok", value=1), MemoryPut(namespace=NS, key="", value=1)]
        )
    assert [v.field for v in bad.value.violations] == ["entries[1].key"]
    with pytest.raises(InvalidArgumentError) as too_many:
        await aclient.memory.put_many(
            [MemoryPut(namespace=NS, key=f"x{i}", value=i) for i in range(1001)]
        )
    assert too_many.value.violations[0].field == "entries"
    assert "1000" in too_many.value.violations[0].description
    assert await aclient.memory.get(NS, "ok") is None


async def test_concurrent_batches_over_the_same_namespaces_neither_deadlock_nor_interleave(
    connect,
) -> None:
    a, b = await connect("agent-a"), await connect("agent-b")
    one, two = f"{NS}/one", f"{NS}/two"

    def batch(tag: str, order: list[str]) -> list[MemoryPut]:
        # Opposite namespace orders in the two batches; both create the same "winner" key.
        return [
            *(MemoryPut(namespace=ns, key=f"{tag}{i}", value=i) for ns in order for i in range(20)),
            MemoryPut(namespace=one, key="winner", value=tag, expected_revision=0),
        ]

    results = await asyncio.gather(
        a.memory.put_many(batch("a", [one, two])),
        b.memory.put_many(batch("b", [two, one])),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, list)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], RevisionMismatchError)
    winner = await a.memory.get(one, "winner")
    assert winner is not None
    loser = "b" if winner.value == "a" else "a"
    assert await a.memory.get(two, f"{loser}0") is None  # nothing of the losing batch
    assert len({e.revision for e in won[0] if e.namespace == one}) == 21


async def test_take_n_splits_a_role_queue_between_takers_then_one_ack_each(connect) -> None:
    poster = await connect("planner", role="planner")
    w1, w2 = await connect("w1", role="worker"), await connect("w2", role="worker")
    posted = [
        (
            await poster.context.post(
                NS, {"job": i}, to_role="worker", context_type="job", delivery="any"
            )
        ).id
        for i in range(7)
    ]
    got1, got2 = await asyncio.gather(w1.context.take(NS, 4), w2.context.take(NS, 4))
    ids1, ids2 = [e.id for e in got1], [e.id for e in got2]
    assert not set(ids1) & set(ids2) and sorted(ids1 + ids2) == posted
    assert sorted(await w1.context.ack(NS, ids1)) == sorted(ids1)
    assert sorted(await w2.context.ack(NS, ids2)) == sorted(ids2)
    assert await w1.context.take(NS, 10) == []
    with pytest.raises(ValueError, match="between 1 and 1000"):
        await w1.context.take(NS, 0)
