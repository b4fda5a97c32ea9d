"""Every read that takes min_revision reflects at least it, waits for it, or refuses (never older).

Two daemon replicas share one PostgreSQL: what one writes, a read through the other that carries
the writer's revision must see, including a vector search (the other replica's index catches up
from the change log on demand).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from coordd import rpc_status
from coordd.errors import RevisionNotReachedError
from coordd.v1 import common_pb2
from coordd.v1 import context_service_pb2 as ctx_pb
from coordd.v1 import context_service_pb2_grpc as ctx_grpc
from coordd.v1 import idempotency_service_pb2 as idem_pb
from coordd.v1 import idempotency_service_pb2_grpc as idem_grpc
from coordd.v1 import memory_service_pb2 as mem_pb
from coordd.v1 import memory_service_pb2_grpc as mem_grpc
from coordd_client import AsyncClient

NS = "acme/rev"
MD = (("coordd-agent-id", "agent-r"), ("coordd-agent-role", "worker"))


@pytest.fixture
async def channel(daemon: Any) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(daemon.address) as ch:
        yield ch


def reads(ch: grpc.aio.Channel, rev: int) -> dict[str, Callable[[float], Any]]:
    """Every read RPC with a min_revision field, asking for *rev* in NS."""
    mem = mem_grpc.MemoryServiceStub(ch)
    ctx = ctx_grpc.ContextServiceStub(ch)
    idem = idem_grpc.IdempotencyServiceStub(ch)
    return {
        "GetMemory": lambda t: mem.GetMemory(
            mem_pb.GetMemoryRequest(namespace=NS, key="k", min_revision=rev), metadata=MD, timeout=t
        ),
        "ListMemory": lambda t: mem.ListMemory(
            mem_pb.ListMemoryRequest(namespace_prefix=NS, min_revision=rev), metadata=MD, timeout=t
        ),
        "MemoryHistory": lambda t: mem.MemoryHistory(
            mem_pb.MemoryHistoryRequest(namespace=NS, key="k", min_revision=rev),
            metadata=MD,
            timeout=t,
        ),
        "SearchMemory": lambda t: mem.SearchMemory(
            mem_pb.SearchMemoryRequest(
                embedding=[1.0, 0.0],
                k=1,
                namespace_prefixes=[NS],
                min_revisions=common_pb2.VersionVector(revisions={NS: rev}),
            ),
            metadata=MD,
            timeout=t,
        ),
        "ReadContext": lambda t: ctx.ReadContext(
            ctx_pb.ReadContextRequest(namespace=NS, min_revision=rev), metadata=MD, timeout=t
        ),
        "GetIdempotency": lambda t: idem.GetIdempotency(
            idem_pb.GetIdempotencyRequest(namespace=NS, key="k", min_revision=rev),
            metadata=MD,
            timeout=t,
        ),
    }


async def test_every_read_refuses_a_revision_not_reached(
    channel: grpc.aio.Channel, aclient: AsyncClient
) -> None:
    await aclient.memory.put(NS, "k", {"v": 1}, tier="episodic")
    ahead = aclient.session.revision(NS) + 5
    for name, call in reads(channel, ahead).items():
        # The wait is bounded by half the call's deadline, so the refusal arrives in time; the
        # other half (1.5 s) is the margin a loaded machine needs to deliver it.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(3.0)
        err = rpc_status.from_rpc_error(info.value)
        assert isinstance(err, RevisionNotReachedError), (name, err)
        assert (err.namespace, err.min_revision) == (NS, ahead), name
        assert err.revision == ahead - 5, name
        assert err.retry_after.total_seconds() > 0


async def test_reads_at_a_reached_revision_answer_with_a_header_at_least_it(
    channel: grpc.aio.Channel, aclient: AsyncClient
) -> None:
    await aclient.memory.put(NS, "k", {"v": 1}, tier="episodic", embedding=[1.0, 0.0])
    rev = aclient.session.revision(NS)
    for name, call in reads(channel, rev).items():
        resp = await call(10.0)
        assert resp.header.revision >= rev, name
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reads(channel, -1)["GetMemory"](10.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "min_revision" in (info.value.details() or "")


async def test_a_waiting_read_answers_once_another_replica_commits(
    daemon: Any, start_daemon: Any
) -> None:
    other = start_daemon()
    writer = await AsyncClient.connect(other.address, agent_id="writer", role="worker")
    try:
        await writer.memory.put(NS, "k", {"v": 1}, tier="episodic")
        rev = writer.session.revision(NS)
        async with grpc.aio.insecure_channel(daemon.address) as ch:
            waiting = asyncio.ensure_future(reads(ch, rev + 1)["GetMemory"](10.0))
            await writer.memory.put(NS, "k", {"v": 2}, tier="episodic")
            resp = await waiting
        assert resp.header.revision >= rev + 1
        assert resp.entry.value_json == '{"v": 2}'
    finally:
        await writer.close()


async def test_search_on_another_replica_reflects_the_writers_vector(
    daemon: Any, start_daemon: Any
) -> None:
    other = start_daemon()
    writer = await AsyncClient.connect(other.address, agent_id="writer", role="worker")
    reader = await AsyncClient.connect(daemon.address, agent_id="reader", role="worker")
    try:
        for i in range(5):
            await writer.memory.put(
                NS, f"doc-{i}", {"i": i}, tier="semantic", embedding=[1.0, float(i), 0.5]
            )
        # The reader learns the writer's vector (as a context hand-off would carry it); its
        # search goes to the other replica, whose index must catch up before answering.
        reader.session.merge(writer.session.vector)
        hits = await reader.memory.search([1.0, 4.0, 0.5], 5, NS)
        assert {h.entry.key for h in hits} == {f"doc-{i}" for i in range(5)}
        assert hits[0].entry.key == "doc-4"
    finally:
        await writer.close()
        await reader.close()
