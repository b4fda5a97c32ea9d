"""Watch end to end: order, gaplessness, prefixes, compaction, restarts, other replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from coordd_client import AsyncClient, ChangeEvent, RevisionCompactedError

NS = "acme/watched"


async def take(
    stream: AsyncIterator[ChangeEvent], n: int, timeout: float = 10
) -> list[ChangeEvent]:
    return [await asyncio.wait_for(anext(stream), timeout) for _ in range(n)]


async def test_watch_streams_claim_changes_and_expiries_in_order(connect, daemon, db_clock) -> None:
    a = await connect("agent-a")
    watcher = await connect("watcher")
    first = await a.claims.acquire(NS, "r1", ttl=5)
    assert first.claim
    stream = watcher.watch(NS, start_revision=first.revision)
    await a.claims.renew(NS, "r1", first.claim.fencing_token, ttl=5, progress="half")
    db_clock.advance(6)
    assert daemon.sweep()["claims_expired"] == 1
    events = await take(stream, 3)
    await stream.aclose()
    assert [(e.op, e.key) for e in events] == [("acquire", "r1"), ("renew", "r1"), ("expire", "r1")]
    revisions = [e.revision for e in events]
    assert revisions == list(range(revisions[0], revisions[0] + 3)), "gapless, in order"
    assert events[0].data["fencing_token"] == first.claim.fencing_token
    assert events[2].data["holder_agent_id"] == "agent-a" and events[2].agent_id == ""


async def test_start_revision_replays_and_prefix_covers_children(connect) -> None:
    a = await connect("agent-a")
    watcher = await connect("watcher")
    for ns in (NS, f"{NS}/child", f"{NS}x"):  # "acme/watchedx" is not below the prefix
        await a.claims.acquire(ns, "r", ttl=30)
        await a.idempotency.begin(ns, "k", b"")
    stream = watcher.watch(NS, prefix=True, start_revision=1)
    events = await take(stream, 4)
    await stream.aclose()
    assert sorted((e.namespace, e.revision, e.kind) for e in events) == [
        (NS, 1, "claim"),
        (NS, 2, "idempotency"),
        (f"{NS}/child", 1, "claim"),
        (f"{NS}/child", 2, "idempotency"),
    ]


async def test_compacted_start_is_out_of_range(connect, daemon, db_clock) -> None:
    a = await connect("agent-a")
    for i in range(3):
        await a.claims.acquire(NS, f"r{i}", ttl=3600)
    db_clock.advance(2 * 86400)  # older than the 24 h change-log retention
    await a.claims.acquire(NS, "fresh", ttl=3600)
    assert daemon.sweep()["changes_compacted"] == 3
    stream = a.watch(NS, start_revision=2)
    with pytest.raises(RevisionCompactedError) as exc:
        await anext(stream)
    assert exc.value.compact_revision == 4
    cause = exc.value.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.OUT_OF_RANGE
    resumed = a.watch(NS, start_revision=4)
    assert (await take(resumed, 1))[0].key == "fresh"
    await resumed.aclose()


async def test_watch_resumes_across_a_daemon_restart_without_gap_or_duplicate(start_daemon) -> None:
    first = start_daemon()
    port = first.daemon.port
    writer = await AsyncClient.connect(first.address, agent_id="writer")
    watcher = await AsyncClient.connect(first.address, agent_id="watcher")
    stream = watcher.watch(NS, start_revision=1, reconnect_for=30)
    for i in range(3):
        await writer.claims.acquire(NS, f"before-{i}", ttl=60)
    seen = await take(stream, 3)
    await writer.close()
    first.stop()
    second = start_daemon(listen=f"127.0.0.1:{port}")  # the same address after a restart
    async with await AsyncClient.connect(second.address, agent_id="writer") as w2:
        for i in range(3):
            await w2.claims.acquire(NS, f"after-{i}", ttl=60)
        seen += await take(stream, 3, timeout=30)
    await stream.aclose()
    await watcher.close()
    assert [e.key for e in seen] == [f"before-{i}" for i in range(3)] + [
        f"after-{i}" for i in range(3)
    ]
    assert [e.revision for e in seen] == list(range(1, 7))


async def test_write_through_another_daemon_wakes_the_watcher(start_daemon) -> None:
    here, there = start_daemon(), start_daemon()
    async with (
        await AsyncClient.connect(here.address, agent_id="watcher") as watcher,
        await AsyncClient.connect(there.address, agent_id="writer") as writer,
    ):
        assert here.daemon.notifier is not None
        await asyncio.wait_for(here.daemon.notifier.listening.wait(), 10)
        stream = watcher.watch(NS)
        first = asyncio.create_task(anext(stream))
        # Wait until this daemon's registration is visible to writers, then write elsewhere.
        deadline = asyncio.get_running_loop().time() + 10
        while not here.daemon.notifier.following(NS):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await writer.claims.acquire(NS, "remote", ttl=30)
        event = await asyncio.wait_for(first, 3)  # well under the 5 s safety re-read
        assert event.key == "remote"
        with contextlib.suppress(Exception):
            await stream.aclose()


async def test_until_revision_replays_up_to_it_and_stops(connect) -> None:
    writer = await connect("writer")
    for i in range(5):
        await writer.claims.acquire(NS, f"r{i}", ttl=60)
    seen = writer.session.vector[NS]
    assert seen == 5
    replay = [e async for e in writer.watch(NS, start_revision=2, until_revision=4)]
    assert [e.revision for e in replay] == [2, 3, 4]
    assert [e async for e in writer.watch(NS, start_revision=1, until_revision=0)] == []
    with pytest.raises(ValueError, match="prefix"):
        await anext(writer.watch("acme", prefix=True, until_revision=3))
