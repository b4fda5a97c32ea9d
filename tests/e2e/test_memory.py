"""Memory end to end: write ordering, provenance, tasks, episodes, semantic history."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import grpc
import pytest

from coordd import rpc_status
from coordd_client import (
    AsyncClient,
    EntryRef,
    InvalidArgumentError,
    NamespacePolicy,
    NotFoundError,
    RevisionMismatchError,
    UnconditionalWriteForbiddenError,
)
from tests.fix_daemon import write_policy

NS = "acme/mem"


async def test_cas_race_loses_no_update(connect) -> None:
    writers = [await connect(f"w{i}") for i in range(16)]
    await writers[0].memory.put(NS, "counter", {"n": 0}, expected_revision=0)
    successes = 0

    async def bump(client: AsyncClient) -> None:
        nonlocal successes
        for _ in range(8):
            while True:
                current = await client.memory.get(NS, "counter")
                assert current is not None
                try:
                    await client.memory.put(
                        NS,
                        "counter",
                        {"n": current.value["n"] + 1},
                        expected_revision=current.revision,
                    )
                except RevisionMismatchError:
                    continue
                successes += 1
                break

    await asyncio.gather(*(bump(w) for w in writers))
    final = await writers[0].memory.get(NS, "counter")
    assert final is not None and final.value["n"] == successes == 16 * 8


async def test_revision_mismatch_is_aborted_with_its_detail(connect) -> None:
    a = await connect("a")
    first = await a.memory.put(NS, "k", 1)
    with pytest.raises(RevisionMismatchError) as exc:
        await a.memory.put(NS, "k", 2, expected_revision=first.revision + 5)
    cause = exc.value.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.ABORTED
    assert rpc_status.from_rpc_error(cause).reason == "REVISION_MISMATCH"
    assert (exc.value.expected_revision, exc.value.current_revision) == (
        first.revision + 5,
        first.revision,
    )
    with pytest.raises(RevisionMismatchError):
        await a.memory.put(NS, "k", 3, expected_revision=0)  # 0 = must not exist


async def test_concurrent_merge_patches_on_disjoint_fields_all_survive(connect) -> None:
    writers = [await connect(f"m{i}") for i in range(8)]
    await writers[0].memory.put(NS, "doc", {"title": "t"})
    await asyncio.gather(
        *(
            w.memory.put(
                NS, "doc", {f"field_{i}_{j}": j, "nested": {f"n{i}{j}": True}}, mode="merge"
            )
            for i, w in enumerate(writers)
            for j in range(5)
        )
    )
    doc = await writers[0].memory.get(NS, "doc")
    assert doc is not None
    assert doc.value["title"] == "t"
    assert {k for k in doc.value if k.startswith("field_")} == {
        f"field_{i}_{j}" for i in range(8) for j in range(5)
    }
    assert len(doc.value["nested"]) == 40
    await writers[0].memory.put(NS, "doc", {"title": None}, mode="merge")  # null deletes
    assert "title" not in (await writers[0].memory.get(NS, "doc")).value  # type: ignore[union-attr]


async def test_provenance_is_stamped_by_the_server(start_daemon, tmp_path) -> None:
    digest = hashlib.sha256(b"t").hexdigest()
    policy = write_policy(
        tmp_path,
        f'[[agents]]\nid = "writer-1"\nrole = "writer"\ntoken_sha256 = "{digest}"\n'
        '[[grants]]\nrole = "writer"\nnamespaces = ["**"]\noperations = ["read", "write"]\n',
    )
    d = start_daemon(auth="token", policy_file=policy)
    async with await AsyncClient.connect(
        d.address, agent_id="writer-1", role="admin", token="t"
    ) as c:
        entry = await c.memory.put(
            NS, "fact", {"x": 1}, request_id="req-1", derived_from=[("acme/src", "a")]
        )
        stored = await c.memory.get(NS, "fact")
    assert stored is not None
    for e in (entry, stored):
        assert (e.provenance.agent_id, e.provenance.role) == ("writer-1", "writer")
        assert e.provenance.request_id == "req-1"
        assert e.provenance.derived_from == [EntryRef(namespace="acme/src", key="a")]
    assert stored.provenance.write_time == entry.provenance.write_time


async def test_end_task_removes_exactly_its_working_memory(connect) -> None:
    a = await connect("a")
    await a.memory.start_task(NS, "t1")
    await a.memory.start_task(NS, "t2")
    for i in range(3):
        await a.memory.put(NS, f"t1/step{i}", i, tier="working", task_id="t1")
    await a.memory.put(NS, "t2/step", "other", tier="working", task_id="t2")
    await a.memory.put(NS, "fact", "kept")
    removed, episode = await a.memory.end_task(NS, "t1", archive=True)
    assert removed == 3
    assert episode is not None and episode.tier == "episodic" and episode.key == "task/t1"
    assert sorted(r.key for r in episode.provenance.derived_from) == [
        "t1/step0",
        "t1/step1",
        "t1/step2",
    ]
    assert episode.value["entries"] == {"t1/step0": 0, "t1/step1": 1, "t1/step2": 2}
    assert await a.memory.get(NS, "t1/step0") is None
    assert (await a.memory.get(NS, "t2/step")) is not None
    assert (await a.memory.get(NS, "fact")) is not None
    with pytest.raises(NotFoundError):
        await a.memory.put(NS, "t1/late", 1, tier="working", task_id="t1")


async def test_task_lease_lapse_ends_it(connect, daemon, db_clock) -> None:
    a = await connect("a")
    await a.memory.start_task(NS, "t", lease=30)
    await a.memory.put(NS, "t/x", 1, tier="working", task_id="t")
    db_clock.advance(31)
    assert daemon.sweep()["memory_swept"] >= 1
    assert await a.memory.get(NS, "t/x") is None


async def test_semantic_supersede_as_of_and_staleness(connect, db_clock) -> None:
    a = await connect("a")
    v1 = await a.memory.put(NS, "ceo", "alice", embedding=[1, 0, 0])
    db_clock.advance(10)
    v2 = await a.memory.put(NS, "ceo", "bob", embedding=[1, 0, 0])
    current = await a.memory.get(NS, "ceo")
    assert current is not None and current.value == "bob"
    then = await a.memory.get(NS, "ceo", as_of=v1.provenance.write_time + timedelta(seconds=1))
    assert then is not None and then.value == "alice" and then.valid_to is not None
    history = await a.memory.history(NS, "ceo")
    assert [h.value for h in history] == ["bob", "alice"]
    assert [h.revision for h in history] == [v2.revision, v1.revision]
    await a.memory.put(
        NS,
        "stale-fact",
        "old",
        embedding=[1, 0.1, 0],
        review_time=v2.provenance.write_time + timedelta(seconds=5),
    )
    db_clock.advance(6)
    stale = await a.memory.get(NS, "stale-fact")
    assert stale is not None and stale.stale
    hits = await a.memory.search([1, 0, 0], 10, NS)
    assert [h.entry.key for h in hits] == ["ceo"]
    with_stale = await a.memory.search([1, 0, 0], 10, NS, include_stale=True)
    assert {h.entry.key for h in with_stale} == {"ceo", "stale-fact"}


async def test_episodic_retention_and_compaction(connect, daemon, db_clock) -> None:
    a = await connect("a")
    await a.memory.set_policy(NS, NamespacePolicy(episodic_max_count=3))
    for i in range(5):
        await a.memory.put(NS, f"ep{i}", i, tier="episodic")
        db_clock.advance(1)
    assert daemon.sweep()["memory_swept"] == 2
    page = await a.memory.list(NS, tier="episodic")
    assert [e.key for e in page.entries] == ["ep2", "ep3", "ep4"]
    summary = await a.memory.compact_episodes(NS, ["ep2", "ep3"], "summary-1", {"sum": 5})
    assert sorted(r.key for r in summary.provenance.derived_from) == ["ep2", "ep3"]
    page = await a.memory.list(NS, tier="episodic")
    assert [e.key for e in page.entries] == ["ep4", "summary-1"]


async def test_policy_can_forbid_unconditional_writes(connect) -> None:
    a = await connect("a")
    await a.memory.set_policy(NS, NamespacePolicy(default_mode="cas", forbid_unconditional=True))
    with pytest.raises(UnconditionalWriteForbiddenError):
        await a.memory.put(NS, "k", 1, mode="lww")
    created = await a.memory.put(NS, "k", 1)  # default CAS, no revision: "must not exist"
    with pytest.raises(RevisionMismatchError):
        await a.memory.put(NS, "k", 2)
    await a.memory.put(NS, "k", 2, expected_revision=created.revision)


async def test_bad_vectors_and_values_are_invalid_argument(connect) -> None:
    a = await connect("a")
    await a.memory.put(NS, "v", 1, embedding=[1.0, 2.0])
    for bad in ([0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(InvalidArgumentError) as exc:
            await a.memory.put(NS, "w", 1, embedding=bad)
        assert [v.field for v in exc.value.violations] == ["embedding"]
    with pytest.raises(InvalidArgumentError) as exc:
        await a.memory.search([0.0, 0.0], 5, NS)
    assert [v.field for v in exc.value.violations] == ["embedding"]
    with pytest.raises(InvalidArgumentError, match="3 dimensions"):  # another dimension: said
        await a.memory.search([1.0, 2.0, 3.0], 5, NS)
