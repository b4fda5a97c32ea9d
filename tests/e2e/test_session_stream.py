"""The session stream: unary calls tagged on one stream, answered like the unary RPCs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2_grpc

from coordd import rpc_status
from coordd.v1 import claim_service_pb2 as claim_pb
from coordd.v1 import session_service_pb2 as pb
from coordd.v1 import session_service_pb2_grpc as pb_grpc
from coordd_client import AsyncClient, ClaimNotHeldError, CoorddError, InvalidArgumentError

NS = "acme/session"
ACQUIRE = "/coordd.v1.ClaimService/AcquireClaim"


async def _both(address: str, agent: str) -> tuple[AsyncClient, AsyncClient]:
    streamed = await AsyncClient.connect(address, agent_id=agent)
    unary = await AsyncClient.connect(address, agent_id=agent, session_stream=False)
    return streamed, unary


async def test_answers_and_errors_match_the_unary_rpcs(daemon) -> None:
    streamed, unary = await _both(daemon.address, "agent-a")
    try:
        got = await streamed.claims.acquire(NS, "r1", ttl=30)
        assert got.acquired and got.claim is not None and got.claim.holder_agent_id == "agent-a"
        assert streamed._core.channel.offered is True  # it did ride the stream
        again = await unary.claims.acquire(NS, "r1", ttl=30)
        assert again.claim is not None and again.claim.fencing_token == got.claim.fencing_token
        # The same refusals, with the same details, whichever way they travel.
        for failing, kind in (
            (lambda c: c.claims.release(NS, "r1", got.claim.fencing_token + 5), ClaimNotHeldError),
            (lambda c: c.claims.acquire("", "r3", ttl=30), InvalidArgumentError),
        ):
            raised: list[CoorddError] = []
            for client in (streamed, unary):
                with pytest.raises(kind) as err:
                    await failing(client)
                raised.append(err.value)
            s, u = (e.__cause__ for e in raised)
            assert isinstance(s, grpc.aio.AioRpcError) and isinstance(u, grpc.aio.AioRpcError)
            assert (s.code(), s.details()) == (u.code(), u.details())
            assert rpc_status.from_rpc_error(s).reason == rpc_status.from_rpc_error(u).reason
            assert str(raised[0]) == str(raised[1])
    finally:
        await streamed.close()
        await unary.close()


async def test_concurrent_calls_on_one_stream_get_their_own_answers(aclient) -> None:
    resources = [f"c{i}" for i in range(40)]
    got = await asyncio.gather(*(aclient.claims.acquire(NS, r, ttl=30) for r in resources))
    assert [g.claim.resource for g in got if g.claim] == resources
    assert aclient._core.channel.offered is True


async def _raw_session(address: str, agent: str, *requests: pb.SessionRequest) -> list[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.SessionServiceStub(channel).Session(metadata=(("coordd-agent-id", agent),))
        for req in requests:
            await call.write(req)
        answers = [await call.read() for _ in requests]
        await call.done_writing()
        return sorted(answers, key=lambda a: a.id)


async def test_identity_is_the_streams_and_unknown_methods_are_refused(daemon) -> None:
    acquire = claim_pb.AcquireClaimRequest(namespace=NS, resource="who")
    acquire.ttl.seconds = 30
    answers = await _raw_session(
        daemon.address,
        "agent-a",
        # A request cannot speak for another agent: the stream's identity holds the claim.
        pb.SessionRequest(
            id=1,
            method=ACQUIRE,
            payload=acquire.SerializeToString(),
            metadata={"coordd-agent-id": "agent-z"},
        ),
        pb.SessionRequest(id=2, method="/coordd.v1.NoSuchService/Nothing", payload=b""),
        # A streaming method is not a unary call.
        pb.SessionRequest(id=3, method="/coordd.v1.WatchService/Watch", payload=b""),
        # No method at all is a malformed request, named as such.
        pb.SessionRequest(id=4, payload=acquire.SerializeToString()),
    )
    assert answers[0].code == 0
    claim = claim_pb.AcquireClaimResponse.FromString(answers[0].payload)
    assert claim.claim.holder_agent_id == "agent-a"
    assert [a.code for a in answers[1:3]] == [grpc.StatusCode.UNIMPLEMENTED.value[0]] * 2
    assert answers[3].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    err = rpc_status.from_status(status_pb2.Status.FromString(answers[3].status_details))
    assert isinstance(err, InvalidArgumentError)
    assert [v.field for v in err.violations] == ["method"]


async def test_a_request_past_its_deadline_is_answered_deadline_exceeded(daemon) -> None:
    acquire = claim_pb.AcquireClaimRequest(namespace=NS, resource="late")
    acquire.ttl.seconds = 30
    [answer] = await _raw_session(
        daemon.address,
        "agent-a",
        pb.SessionRequest(
            id=7,
            method=ACQUIRE,
            payload=acquire.SerializeToString(),
            timeout=duration_pb2.Duration(nanos=1),
        ),
    )
    assert (answer.id, answer.code) == (7, grpc.StatusCode.DEADLINE_EXCEEDED.value[0])


@contextlib.asynccontextmanager
async def _server_without_the_stream(upstream: str) -> AsyncIterator[str]:
    """A server as older daemons were: coordd's unary RPCs (relayed as bytes to *upstream*,
    metadata included), health, and no SessionService."""
    channel = grpc.aio.insecure_channel(upstream)

    def relay(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        if not method.startswith("/coordd.v1.") or method.startswith("/coordd.v1.Session"):
            return None
        call = channel.unary_unary(method)

        async def forward(raw: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            answer: bytes = await call(raw, metadata=ctx.invocation_metadata())
            return answer

        return grpc.unary_unary_rpc_method_handler(forward)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_Relay(relay)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await channel.close(None)


class _Relay(grpc.GenericRpcHandler):
    def __init__(self, find: Any) -> None:
        self._find = find

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return self._find(details)


async def test_client_falls_back_to_unary_when_the_server_lacks_the_stream(daemon) -> None:
    async with _server_without_the_stream(daemon.address) as old:
        client = await AsyncClient.connect(old, agent_id="agent-a")
        try:
            got = await client.claims.acquire(NS, "fallback", ttl=30)
            assert got.acquired and got.claim is not None
            assert got.claim.holder_agent_id == "agent-a"
            assert client._core.channel.offered is False
            # Later calls go straight to unary and keep working.
            assert (await client.claims.acquire(NS, "fallback-2", ttl=30)).acquired
        finally:
            await client.close()


async def test_a_message_that_does_not_decode_ends_the_stream_invalid_argument(daemon) -> None:
    acquire = claim_pb.AcquireClaimRequest(namespace=NS, resource="before-garbage")
    acquire.ttl.seconds = 30
    request = pb.SessionRequest(id=1, method=ACQUIRE, payload=acquire.SerializeToString())
    async with grpc.aio.insecure_channel(daemon.address) as channel:
        call = channel.stream_stream(
            "/coordd.v1.SessionService/Session",
            request_serializer=None,
            response_deserializer=pb.SessionResponse.FromString,
        )(metadata=(("coordd-agent-id", "agent-g"),))
        await call.write(request.SerializeToString())
        answer = await call.read()
        assert (answer.id, answer.code) == (1, 0)  # served before the bad message came
        await call.write(b"\x0a\xff\xff")  # field 1 (id) as a length-delimited run: truncated
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refusal = rpc_status.from_rpc_error(err.value)
    assert isinstance(refusal, InvalidArgumentError)
    assert [v.field for v in refusal.violations] == ["(request body)"]
