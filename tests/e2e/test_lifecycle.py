"""Daemon lifecycle: graceful stop lets in-flight calls finish; health reports serving state."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordd_client import AsyncClient, ShuttingDownError, UnavailableError
from tests.fix_daemon import serve_process


async def test_stop_lets_in_flight_calls_finish(start_daemon) -> None:
    d = start_daemon(grace_s=10.0)
    async with (
        await AsyncClient.connect(d.address, agent_id="holder") as holder,
        await AsyncClient.connect(d.address, agent_id="waiter") as waiter,
    ):
        assert (await holder.claims.acquire("ns", "r", ttl=60)).acquired
        in_flight = asyncio.create_task(waiter.claims.acquire("ns", "r", ttl=60, wait=1.5))
        service = d.daemon.claim_service
        assert service is not None
        deadline = asyncio.get_running_loop().time() + 10
        while service.waiting("ns", "r") < 1:  # the call is inside the daemon now
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        stopping = asyncio.get_running_loop().run_in_executor(None, d.stop, 10.0)
        result = await asyncio.wait_for(in_flight, 15)
        assert not result.acquired and result.claim and result.claim.holder_agent_id == "holder"
        await stopping
        with pytest.raises(UnavailableError):
            await holder.claims.get("ns", "r")


async def test_health_and_reflection_answer_without_credentials(daemon) -> None:
    async with grpc.aio.insecure_channel(daemon.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "coordd.v1.ClaimService", "coordd.v1.IdempotencyService"):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for resp in refl.ServerReflectionInfo(requests()):
            names |= {s.name for s in resp.list_services_response.service}
        assert {"coordd.v1.ClaimService", "coordd.v1.IdempotencyService"} <= names


async def test_health_listener_serves_health_only_and_follows_shutdown(start_daemon) -> None:
    # COORDD_HEALTH_LISTEN is what the kubelet's plaintext gRPC probes reach in Kubernetes.
    d = start_daemon(health_listen="127.0.0.1:0")
    health_address = f"127.0.0.1:{d.daemon.health_port}"
    assert d.daemon.health_port not in (0, d.daemon.port)
    async with grpc.aio.insecure_channel(health_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        from coordd.v1 import claim_service_pb2, claim_service_pb2_grpc

        claims = claim_service_pb2_grpc.ClaimServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await claims.GetClaim(claim_service_pb2.GetClaimRequest(namespace="ns", resource="r"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await asyncio.get_running_loop().run_in_executor(None, d.stop, 0.0)
    async with grpc.aio.insecure_channel(health_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_ends_open_streams_at_once_with_shutting_down(start_daemon) -> None:
    """Open streams do not hold the shutdown grace; they end with UNAVAILABLE."""
    d = start_daemon(grace_s=600.0)  # far longer than the test's timeout: waiting would fail
    async with (
        await AsyncClient.connect(d.address, agent_id="watcher", role="reviewer") as watcher,
        await AsyncClient.connect(d.address, agent_id="poster", role="planner") as poster,
    ):
        # reconnect_for=0: the clients give up at once instead of resuming, so the end shows.
        watch = watcher.watch("ns", start_revision=1, reconnect_for=0)
        inbox = watcher.context.subscribe("ns", reconnect_for=0)
        await poster.context.post("ns", "hello", to_role="reviewer")
        assert (await asyncio.wait_for(anext(watch), 10)).kind == "context"
        assert (await asyncio.wait_for(anext(inbox), 10)).content == "hello"
        waiting = [asyncio.create_task(anext(s)) for s in (watch, inbox)]  # both now idle
        await asyncio.get_running_loop().run_in_executor(None, d.stop, 600.0)
        for task in waiting:
            with pytest.raises(ShuttingDownError) as exc:
                await asyncio.wait_for(task, 10)
            assert isinstance(exc.value, UnavailableError)
            assert exc.value.code == grpc.StatusCode.UNAVAILABLE


async def test_subscription_resumes_across_a_daemon_restart(start_daemon) -> None:
    first = start_daemon()
    port = first.daemon.port
    planner = await AsyncClient.connect(first.address, agent_id="planner", role="planner")
    reviewer = await AsyncClient.connect(first.address, agent_id="reviewer", role="reviewer")
    inbox = reviewer.context.subscribe("ns", reconnect_for=30)
    for n in range(2):
        await planner.context.post("ns", n, to_role="reviewer")
    got = [(await asyncio.wait_for(anext(inbox), 10)).content for _ in range(2)]
    await planner.close()
    first.stop()
    second = start_daemon(listen=f"127.0.0.1:{port}")  # the same address after a restart
    async with await AsyncClient.connect(second.address, agent_id="planner", role="planner") as p:
        for n in range(2, 4):
            await p.context.post("ns", n, to_role="reviewer")
        got += [(await asyncio.wait_for(anext(inbox), 30)).content for _ in range(2)]
    await inbox.aclose()
    await reviewer.close()
    assert got == [0, 1, 2, 3], "resumed after the last entry: nothing lost, nothing twice"


def test_sigterm_while_starting_stops_gracefully_and_keeps_the_index(
    pg_dsn: str, tmp_path: Path
) -> None:
    """An orchestrator may stop the daemon at any time: a SIGTERM during start-up (here, right
    after the vector index is ready, before "serving on") still shuts down gracefully and
    saves the index snapshot, so the next start does not rebuild the whole index."""
    proc = serve_process(
        "--dsn",
        pg_dsn,
        "--listen",
        "127.0.0.1:0",
        env={"COORDD_INDEX_DIR": str(tmp_path / "index")},
    )
    assert proc.stderr is not None
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        if "vector index ready" in line:
            proc.send_signal(signal.SIGTERM)
            break
    log += proc.stderr.read().splitlines(keepends=True)
    proc.stderr.close()
    assert proc.wait(60) == 0, "".join(log)
    assert "coordd stopped" in "".join(log)
    assert (tmp_path / "index" / "meta.pickle").exists()
