"""Runaway agents: a retry storm spends only its own budget, streams are capped per agent, and a
client that hangs up mid-stream or mid-wait leaves nothing held in the daemon."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from coordd.v1 import claim_service_pb2 as claim_pb
from coordd.v1 import watch_service_pb2 as watch_pb
from coordd_client import AsyncClient, RateLimitedError, TooManyStreamsError
from tests.fix_daemon import write_policy

POLICY = """
[[grants]]
role = "worker"
namespaces = ["**"]
operations = ["read", "write", "claim"]

[[limits]]
role = "worker"
rate = 5
burst = 10
streams = 2
"""


@pytest.fixture
def limited(start_daemon, tmp_path: Path):
    return start_daemon(policy_file=write_policy(tmp_path, POLICY))


async def test_a_retry_storm_from_one_agent_does_not_starve_the_others(limited, pg_conn) -> None:
    stormy = await AsyncClient.connect(limited.address, agent_id="stormy", role="worker")
    calm = await AsyncClient.connect(limited.address, agent_id="calm", role="worker")
    try:

        async def put(client: AsyncClient, i: int) -> str:
            try:
                await client.memory.put("storm/ns", f"{client.agent_id}-{i}", {"i": i})
            except RateLimitedError as err:
                assert err.reason == "RATE_LIMITED" and err.retry_after.total_seconds() > 0
                return "limited"
            return "ok"

        storm = [asyncio.ensure_future(put(stormy, i)) for i in range(200)]
        calm_calls = [put(calm, i) for i in range(8)]  # within calm's own burst
        calm_outcomes = Counter(await asyncio.gather(*calm_calls))
        storm_outcomes = Counter(await asyncio.gather(*storm))
    finally:
        await stormy.close()
        await calm.close()
    assert calm_outcomes == {"ok": 8}, "the other agent of the same role was not starved"
    assert storm_outcomes["limited"] > 0 and storm_outcomes["ok"] >= 10, storm_outcomes
    cur = await pg_conn.execute(
        "SELECT agent_id, count(*) FROM coordd.memory GROUP BY 1 ORDER BY 1"
    )
    # Refused calls wrote nothing: exactly the admitted puts are stored.
    assert await cur.fetchall() == [("calm", 8), ("stormy", storm_outcomes["ok"])]


async def test_streams_are_capped_per_agent(limited) -> None:
    client = await AsyncClient.connect(limited.address, agent_id="watcher", role="worker")
    other = await AsyncClient.connect(limited.address, agent_id="other", role="worker")
    limiter = limited.daemon.interceptor.limiter
    try:
        first = client.watch("cap/a", reconnect_for=0).__aiter__()
        second = client.watch("cap/b", reconnect_for=0).__aiter__()
        waiting = [asyncio.ensure_future(anext(s)) for s in (first, second)]
        deadline = time.monotonic() + 30
        while limiter.open_streams("watcher") < 2:
            assert time.monotonic() < deadline, "the two streams never opened"
            await asyncio.sleep(0.02)
        with pytest.raises(TooManyStreamsError) as err:
            async for _ in client.watch("cap/c", reconnect_for=0):
                pass
        assert err.value.limit == 2
        # Another agent has its own cap.
        # From the namespace's first revision: a watch of new changes only could start after
        # the put below and wait forever.
        third = other.watch("cap/c", start_revision=1, reconnect_for=0).__aiter__()
        other_wait = asyncio.ensure_future(anext(third))
        await other.memory.put("cap/c", "k", {"v": 1})
        assert (await asyncio.wait_for(other_wait, 30)).key == "k"
        for w in waiting:
            w.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await first.aclose()  # type: ignore[attr-defined]
        await second.aclose()  # type: ignore[attr-defined]
        while limiter.open_streams("watcher") > 0:  # closed streams no longer count
            assert time.monotonic() < deadline, "closed streams still counted"
            await asyncio.sleep(0.02)
    finally:
        await client.close()
        await other.close()


async def test_hanging_up_mid_stream_and_mid_wait_leaves_nothing_held(start_daemon) -> None:
    daemon = start_daemon()  # its own: the pool's other borrowers are only this test's
    aclient = await AsyncClient.connect(daemon.address, agent_id="holder")
    held = await aclient.claims.acquire("hang/ns", "r", ttl=60)
    assert held.acquired
    d = daemon.daemon
    pool = d._db.pool  # type: ignore[union-attr]
    available = pool.get_stats()["pool_available"]
    channel = grpc.aio.insecure_channel(daemon.address)
    md = (("coordd-agent-id", "leaver"),)
    watch = channel.unary_stream("/coordd.v1.WatchService/Watch")(
        watch_pb.WatchRequest(namespace="hang/ns").SerializeToString(), metadata=md
    )
    wait = channel.unary_unary("/coordd.v1.ClaimService/AcquireClaim")(
        claim_pb.AcquireClaimRequest(
            namespace="hang/ns", resource="r", ttl={"seconds": 5}, wait={"seconds": 120}
        ).SerializeToString(),
        metadata=md,
    )
    deadline = time.monotonic() + 30
    while (
        d.claim_service.waiting("hang/ns", "r") < 1
        or d.interceptor.limiter.open_streams("leaver") < 1
    ):
        assert time.monotonic() < deadline, "the wait and the stream never started"
        await asyncio.sleep(0.02)
    await channel.close(None)  # the client hangs up mid-wait and mid-stream
    for call in (watch, wait):
        call.cancel()
    while (
        d.claim_service.waiting("hang/ns", "r") > 0
        or d.interceptor.limiter.open_streams("leaver") > 0
        or pool.get_stats().get("requests_waiting", 0) > 0
        or pool.get_stats()["pool_available"] < available
    ):
        assert time.monotonic() < deadline, (
            d.claim_service.waiting("hang/ns", "r"),
            d.interceptor.limiter.open_streams("leaver"),
            pool.get_stats(),
        )
        await asyncio.sleep(0.02)
    # The holder is untouched and the claim can be released and taken again.
    assert held.claim is not None
    await aclient.claims.release("hang/ns", "r", held.claim.fencing_token)
    assert (await aclient.claims.acquire("hang/ns", "r", ttl=5)).acquired
    await aclient.close()
