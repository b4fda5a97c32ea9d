"""The embedded session cache: hits, read-your-writes, invalidation, causality, staleness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from coordd_client import AsyncClient, CacheConfig, UnavailableError

NS = "acme/cache"


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


@pytest.fixture
async def cached(daemon: Any) -> Any:
    clients: list[AsyncClient] = []

    async def make(agent_id: str, **config: Any) -> AsyncClient:
        c = await AsyncClient.connect(
            daemon.address, agent_id=agent_id, role="worker", cache=CacheConfig(**config)
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_repeated_reads_hit_and_own_writes_are_never_hidden(cached: Any) -> None:
    a = await cached("agent-a")
    stats = a._core.cache.stats
    await a.memory.put(NS, "k", {"v": 1}, tier="episodic")
    assert (await a.memory.get(NS, "k")).value == {"v": 1}
    for _ in range(5):
        assert (await a.memory.get(NS, "k")).value == {"v": 1}
    assert stats.hits == 5 and stats.misses == 1
    # Read-your-writes: the very next read after a write reflects it, watch or no watch.
    for i in range(2, 30):
        await a.memory.put(NS, "k", {"v": i}, tier="episodic")
        assert (await a.memory.get(NS, "k")).value == {"v": i}
    assert stats.session_forced + stats.invalidations > 0


async def test_another_agents_write_invalidates_and_context_carries_causality(
    cached: Any, connect: Any
) -> None:
    a = await cached("agent-a")
    b = await connect("agent-b", role="planner")
    await b.memory.put(NS, "k", {"v": 1}, tier="episodic")
    assert (await a.memory.get(NS, "k")).value == {"v": 1}
    stats = a._core.cache.stats
    await b.memory.put(NS, "k", {"v": 2}, tier="episodic")
    # B announces its write; once A has read the announcement, A's read must reflect it.
    await b.context.post(NS, {"wrote": "k"}, to_agent_id="agent-a", context_type="handoff")
    [entry] = await a.context.inbox(NS)
    assert entry.content == {"wrote": "k"}
    assert (await a.memory.get(NS, "k")).value == {"v": 2}
    # And the watch drops the old answer even without a hand-off.
    before = stats.invalidations
    await b.memory.put(NS, "k", {"v": 3}, tier="episodic")
    await eventually(lambda: stats.invalidations > before)
    assert (await a.memory.get(NS, "k")).value == {"v": 3}


async def test_lists_history_and_completed_idempotency_are_cached(cached: Any) -> None:
    a = await cached("agent-a")
    stats = a._core.cache.stats
    await a.memory.put(NS, "x", 1, tier="semantic")
    await a.memory.put(NS, "x", 2, tier="semantic")
    for _ in range(2):
        assert [e.key for e in (await a.memory.list(NS)).entries] == ["x"]
        assert [e.value for e in await a.memory.history(NS, "x")] == [2, 1]
    begin = await a.idempotency.begin(NS, "job", b"fp")
    await a.idempotency.complete(NS, "job", begin.attempt, b"done")
    for _ in range(2):
        record = await a.idempotency.get(NS, "job")
        assert record is not None and record.result == b"done"
    assert stats.hits == 3
    await a.memory.put(NS, "y", 3, tier="semantic")
    assert [e.key for e in (await a.memory.list(NS)).entries] == ["x", "y"]


async def test_bytes_bound_evicts_least_recently_used(cached: Any) -> None:
    a = await cached("agent-a", max_bytes=4000)
    stats = a._core.cache.stats
    for i in range(20):
        await a.memory.put(NS, f"k{i}", "x" * 200, tier="episodic")
        await a.memory.get(NS, f"k{i}")
    assert 0 < stats.bytes <= 4000
    assert stats.evictions > 0


async def test_unreachable_upstream_fails_unless_staleness_is_tolerated(
    start_daemon: Any,
) -> None:
    d = start_daemon()
    strict = await AsyncClient.connect(d.address, agent_id="s", cache=CacheConfig())
    tolerant = await AsyncClient.connect(
        d.address,
        agent_id="t",
        cache=CacheConfig(max_staleness=timedelta(minutes=5)),
        timeout=2,
    )
    try:
        await strict.memory.put(NS, "k", {"v": 1}, tier="episodic")
        for c in (strict, tolerant):
            assert (await c.memory.get(NS, "k")).value == {"v": 1}
            assert (await c.memory.get(NS, "k")).value == {"v": 1}
        d.stop()
        # The watches break: nothing is served as fresh any more.
        for c in (strict, tolerant):
            await eventually(lambda c=c: c._core.cache.stats.invalidations > 0)
        with pytest.raises(UnavailableError):
            await strict.memory.get(NS, "k")
        assert (await tolerant.memory.get(NS, "k")).value == {"v": 1}
        assert tolerant._core.cache.stats.stale_served == 1
    finally:
        await strict.close()
        await tolerant.close()
