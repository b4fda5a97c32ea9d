"""The effect gate end to end: fences and read revisions checked before an outside effect."""

from __future__ import annotations

import pytest

from coordd_client import AsyncClient, Client, Fence, InvalidArgumentError, PermissionDeniedError
from tests.fix_daemon import write_policy
from tests.fix_db import DbClock

NS = "shop/orders"
CATALOG = "shop/catalog"


async def test_gate_passes_when_nothing_changed(connect) -> None:
    a: AsyncClient = await connect("agent-a")
    held = await a.claims.acquire(NS, "order-1", ttl=30)
    assert held.claim
    await a.memory.get(CATALOG, "price")  # a read of a namespace never written
    await a.memory.put(CATALOG, "price", {"eur": 10})
    read = a.session.vector
    result = await a.gate([held.claim.fence], read=read)
    assert result.passed and bool(result)
    assert result.lost_claims == [] and result.moved_namespaces == []
    assert "gate passed" in result.explain()


async def test_fence_lost_to_another_holder_refuses_and_names_it(
    connect, db_clock: DbClock
) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    mine = await a.claims.acquire(NS, "order-1", ttl=10)
    assert mine.claim
    assert (await a.gate([mine.claim.fence])).passed
    db_clock.advance(11)  # a's lease lapses by the database clock; b takes the order
    theirs = await b.claims.acquire(NS, "order-1", ttl=30)
    assert theirs.acquired and theirs.claim

    result = await a.gate([mine.claim.fence])
    assert not result.passed
    [lost] = result.lost_claims
    assert lost.fence == mine.claim.fence
    assert lost.holder is not None and lost.holder.holder_agent_id == "agent-b"
    assert lost.holder.fencing_token == theirs.claim.fencing_token
    assert "held by agent-b" in result.explain() and "stop" in result.advice


async def test_released_claim_is_lost_with_no_holder(connect) -> None:
    a = await connect("agent-a")
    got = await a.claims.acquire(NS, "order-2", ttl=30)
    assert got.claim
    await a.claims.release(NS, "order-2", got.claim.fencing_token)
    result = await a.gate([got.claim.fence])
    assert not result.passed and result.lost_claims[0].holder is None
    assert "no longer held by anyone" in result.explain()


async def test_namespace_written_after_read_refuses_and_names_the_change(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    await b.memory.put(CATALOG, "price", {"eur": 10})
    seen = await a.memory.get(CATALOG, "price")
    assert seen is not None
    read = {CATALOG: a.session.revision(CATALOG)}
    assert (await a.gate(read=read)).passed

    await b.memory.put(CATALOG, "price", {"eur": 12})
    result = await a.gate(read=read)
    assert not result.passed and result.lost_claims == []
    [moved] = result.moved_namespaces
    assert moved.namespace == CATALOG and moved.read_revision == read[CATALOG]
    assert moved.current_revision == read[CATALOG] + 1
    assert moved.first_change is not None
    assert (moved.first_change.kind, moved.first_change.key, moved.first_change.agent_id) == (
        "memory",
        "price",
        "agent-b",
    )
    assert "re-read" in result.advice


async def test_kinds_limit_what_counts_as_a_move(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    await a.memory.put(NS, "plan", {"step": 1})
    read = {NS: a.session.revision(NS)}
    await b.claims.acquire(NS, "order-9", ttl=30)  # another agent's claim in the same namespace
    assert not (await a.gate(read=read)).passed
    assert (await a.gate(read=read, kinds=["memory"])).passed
    await b.memory.put(NS, "plan", {"step": 2})
    refused = await a.gate(read=read, kinds=["memory"])
    assert not refused.passed
    first = refused.moved_namespaces[0].first_change
    assert first is not None and first.kind == "memory", "the claim before it does not count"


async def test_both_causes_reported_together(connect, db_clock: DbClock) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    mine = await a.claims.acquire(NS, "order-1", ttl=5)
    assert mine.claim
    await a.memory.put(CATALOG, "price", {"eur": 10})
    read = a.session.vector
    db_clock.advance(6)
    await b.claims.acquire(NS, "order-1", ttl=30)
    result = await a.gate([mine.claim.fence], read=read)
    assert not result.passed
    assert len(result.lost_claims) == 1
    assert [m.namespace for m in result.moved_namespaces] == [NS]


def test_blocking_client_gate(client: Client) -> None:
    got = client.claims.acquire(NS, "order-3", ttl=30)
    assert got.claim
    assert client.gate([got.claim.fence], read=client.session.vector).passed


async def test_bad_requests_name_the_field(connect) -> None:
    a = await connect("agent-a")
    with pytest.raises(InvalidArgumentError) as err:
        await a.gate([Fence(namespace=NS, resource="", token=0)], kinds=["memory", "bogus"])
    fields = {v.field for v in err.value.violations}
    assert {"fences[0].resource", "fences[0].token", "kinds[1]"} <= fields
    with pytest.raises(InvalidArgumentError) as err:
        await a.gate(read={"bad namespace!": 1})
    assert err.value.violations[0].field.startswith("read[")
    many = [Fence(namespace=NS, resource=f"r{i}", token=1) for i in range(101)]
    with pytest.raises(InvalidArgumentError):
        await a.gate(many)


async def test_gate_needs_read_access_to_every_namespace(start_daemon, tmp_path) -> None:
    policy = write_policy(
        tmp_path,
        '[[grants]]\nrole = "worker"\nnamespaces = ["shop/orders"]\n'
        'operations = ["read", "write", "claim"]\n',
    )
    d = start_daemon(policy_file=policy)
    c = await AsyncClient.connect(d.address, agent_id="agent-a", role="worker")
    try:
        assert (await c.gate(read={NS: 0})).passed
        with pytest.raises(PermissionDeniedError):
            await c.gate(read={NS: 0, CATALOG: 0})
    finally:
        await c.close()


async def test_gate_and_mcp_through_the_sidecar(start_sidecar) -> None:
    """The sidecar forwards the gate, and `coordd mcp` works behind it as the sidecar's agent."""
    from mcp import Client as MCPClient

    from coordd.mcp_server._server import CoorddMCP

    sc = await start_sidecar("agent-side")
    async with await AsyncClient.connect(sc.address, agent_id="agent-side") as via:
        held = await via.claims.acquire(NS, "order-5", ttl=30)
        assert held.claim is not None and held.claim.holder_agent_id == "agent-side"
        assert (await via.gate([held.claim.fence])).passed
        server = CoorddMCP(via)
        try:
            async with MCPClient(server.server) as session:
                got = await session.call_tool(
                    "memory_put", {"namespace": NS, "key": "k", "value": 1}
                )
                assert got.structured_content is not None
                entry = got.structured_content["entry"]
                assert entry["provenance"]["agent_id"] == "agent-side"
        finally:
            await server.aclose()
