"""The sidecar looks like the daemon, acts only as its agent, caches safely, fails clearly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coordd.config import ConfigError
from coordd_client import (
    AsyncClient,
    CacheConfig,
    ClaimNotHeldError,
    RevisionMismatchError,
    UnauthenticatedError,
    UnavailableError,
)
from coordd_sidecar import Sidecar, SidecarConfig

NS = "acme/sidecar"


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_agent_sees_the_daemons_api_errors_and_services(start_sidecar: Any) -> None:
    sc = await start_sidecar("agent-a")
    async with await AsyncClient.connect(sc.address, agent_id="agent-a", role="worker") as a:
        held = await a.claims.acquire(NS, "job", ttl=30)
        assert held.acquired and held.claim is not None
        assert held.claim.holder_agent_id == "agent-a"
        with pytest.raises(ClaimNotHeldError) as info:
            await a.claims.release(NS, "job", held.claim.fencing_token + 1)
        assert info.value.holder_agent_id == "agent-a"  # typed details passed through
        await a.memory.put(NS, "k", 1, tier="episodic")
        with pytest.raises(RevisionMismatchError):
            await a.memory.put(NS, "k", 2, tier="episodic", expected_revision=0)
        # Streams go through too: the change log of what was just done.
        events = []
        async for ev in a.watch(NS, start_revision=1):
            events.append(ev)
            if len(events) == 2:
                break
        assert [e.kind for e in events] == ["claim", "memory"]
    async with grpc.aio.insecure_channel(sc.address) as ch:
        ok = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="coordd.v1.MemoryService")
        )
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for answer in stream:
            listed = {s.name for s in answer.list_services_response.service}
            break
        assert {"coordd.v1.ClaimService", "coordd.v1.MemoryService"} <= listed


async def test_an_agent_cannot_act_as_another_agent(start_sidecar: Any, connect: Any) -> None:
    sc = await start_sidecar("agent-a")
    async with await AsyncClient.connect(sc.address, agent_id="agent-b", role="admin") as liar:
        with pytest.raises(UnauthenticatedError, match="acts for agent 'agent-a' only"):
            await liar.memory.put(NS, "k", 1, tier="episodic")
    # A token the agent sends is dropped, the role it claims is ignored: writes are stamped
    # with the sidecar's identity.
    async with grpc.aio.insecure_channel(sc.address) as ch:
        from coordd.v1 import memory_service_pb2 as pb
        from coordd.v1 import memory_service_pb2_grpc as pb_grpc

        resp = await pb_grpc.MemoryServiceStub(ch).PutMemory(
            pb.PutMemoryRequest(
                namespace=NS, key="k", tier=pb.MEMORY_TIER_EPISODIC, value_json="1"
            ),
            metadata=(("coordd-agent-role", "admin"), ("authorization", "Bearer stolen")),
        )
        assert resp.entry.provenance.agent_id == "agent-a"
        assert resp.entry.provenance.role == "worker"


async def test_cache_hits_and_read_your_writes_through_the_sidecar(
    start_sidecar: Any, connect: Any
) -> None:
    sc = await start_sidecar("agent-a")
    stats = sc.cache.stats
    b = await connect("agent-b")
    async with await AsyncClient.connect(sc.address, agent_id="agent-a", role="worker") as a:
        await a.memory.put(NS, "k", 0, tier="episodic")
        for i in range(1, 20):
            assert (await a.memory.get(NS, "k")).value == i - 1
            assert (await a.memory.get(NS, "k")).value == i - 1
            await a.memory.put(NS, "k", i, tier="episodic")
            assert (await a.memory.get(NS, "k")).value == i  # never the cached i - 1
        assert stats.hits >= 19
        # Another agent's write reaches the cache through the watch.
        before = stats.invalidations
        await b.memory.put(NS, "k", "from-b", tier="episodic")
        await eventually(lambda: stats.invalidations > before)
        assert (await a.memory.get(NS, "k")).value == "from-b"


async def test_upstream_down_is_unavailable_unless_staleness_is_tolerated(
    start_daemon: Any, start_sidecar: Any
) -> None:
    d = start_daemon()
    sc = await start_sidecar("agent-a", upstream=d.address)
    from coordd.v1 import memory_service_pb2 as pb
    from coordd.v1 import memory_service_pb2_grpc as pb_grpc

    async with await AsyncClient.connect(sc.address, agent_id="agent-a") as a:
        await a.memory.put(NS, "k", "v", tier="episodic")
        await a.memory.get(NS, "k")
        d.stop()
        await eventually(lambda: sc.cache.stats.invalidations > 0)  # the watch broke
        with pytest.raises(UnavailableError):
            await a.memory.get(NS, "k")
    async with grpc.aio.insecure_channel(sc.address) as ch:
        call = pb_grpc.MemoryServiceStub(ch).GetMemory(
            pb.GetMemoryRequest(namespace=NS, key="k"),
            metadata=(("coordd-max-staleness", "300"),),
        )
        resp = await call
        assert resp.entry.value_json == '"v"'
        age = dict(await call.initial_metadata())["coordd-cache-age"]
        assert 0 <= float(age) < 300
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.MemoryServiceStub(ch).GetMemory(
                pb.GetMemoryRequest(namespace=NS, key="k"),
                metadata=(("coordd-max-staleness", "a while"),),
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "coordd-max-staleness" in (info.value.details() or "")


def test_refuses_to_listen_beyond_loopback_or_without_identity(tmp_path: Any) -> None:
    for listen in ("0.0.0.0:7420", "10.1.2.3:7420", "[::]:1"):
        with pytest.raises(ConfigError, match="loopback"):
            Sidecar(SidecarConfig(upstream="d:7420", listen=listen, agent_id="a"))
    with pytest.raises(ConfigError, match="identity"):
        Sidecar(SidecarConfig(upstream="d:7420", listen="127.0.0.1:0"))
    Sidecar(SidecarConfig(upstream="d:7420", listen=f"unix://{tmp_path}/s.sock", agent_id="a"))


async def test_unix_socket_and_coordd_addr_discovery(
    start_sidecar: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    sock = tmp_path / "run" / "sidecar.sock"
    await start_sidecar("agent-a", listen=f"unix://{sock}", cache=CacheConfig(max_bytes=0))
    assert sock.stat().st_mode & 0o777 == 0o666
    monkeypatch.setenv("COORDD_ADDR", str(sock))  # a plain path, as sidecar injection sets it
    async with await AsyncClient.connect(agent_id="agent-a") as a:
        await a.memory.put(NS, "k", "over a socket", tier="episodic")
        assert (await a.memory.get(NS, "k")).value == "over a socket"


async def test_daemon_restarted_under_the_sidecar_serves_nothing_stale(
    start_daemon: Any, start_sidecar: Any, connect: Any
) -> None:
    d = start_daemon()
    address = d.address
    sc = await start_sidecar("agent-a", upstream=address)
    stats = sc.cache.stats
    b = await connect("agent-b")  # on the other replica, which stays up
    async with await AsyncClient.connect(sc.address, agent_id="agent-a", timeout=5) as a:
        await a.memory.put(NS, "k", 1, tier="episodic")
        assert (await a.memory.get(NS, "k")).value == 1
        assert (await a.memory.get(NS, "k")).value == 1
        hits = stats.hits
        assert hits >= 1
        d.stop()
        await eventually(lambda: stats.invalidations > 0)  # the watch broke
        # Written while the sidecar's daemon is down, on a replica the sidecar never watched:
        # A's session knows nothing of it, so only dropping the namespace keeps it visible.
        await b.memory.put(NS, "k", 2, tier="episodic")
        start_daemon(listen=address)
        assert (await a.memory.get(NS, "k")).value == 2
        # Recovered: caching again (after a short back-off) under a new watch, which sees
        # the next change.
        deadline = time.monotonic() + 10
        while stats.hits == hits:
            assert (await a.memory.get(NS, "k")).value == 2
            assert time.monotonic() < deadline, "the sidecar never cached again"
            await asyncio.sleep(0.05)
        before = stats.invalidations
        await b.memory.put(NS, "k", 3, tier="episodic")
        await eventually(lambda: stats.invalidations > before)
        assert (await a.memory.get(NS, "k")).value == 3
