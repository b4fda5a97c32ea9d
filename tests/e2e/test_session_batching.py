"""Batching on the session stream: requests ready together travel in one message, answers
ready together come back in one, and neither side batches for a peer that did not announce it.

Served by a real gRPC server running ``SessionServicer`` over a small table of handlers (no
database needed: what is under test is the stream), and by the daemon through the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordd import session_batch
from coordd.server.session import SESSION_METHOD, SessionServicer, UnaryHandler
from coordd.v1 import session_service_pb2 as pb
from coordd.v1 import session_service_pb2_grpc as pb_grpc
from coordd_client import AsyncClient
from coordd_client._session_stream import SessionChannel

ECHO = "/coordd.test.Echo/Echo"
SERVICE = SESSION_METHOD.split("/")[1]
# gRPC's default receive limit; a side that announces a small batch limit reads little more.
DEFAULT_RECEIVE = 4 << 20
SMALL_RECEIVE = 3000
SMALL_BATCH = 2000


class Gate:
    """Holds every request until *n* have arrived (or until opened), so that their answers are
    all ready at the same moment; b"hello" passes at once, requests starting with b"fail" are
    refused."""

    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.arrived = 0
        self.open = asyncio.Event()
        self.cancelled: list[bytes] = []

    async def echo(self, request: bytes, ctx: Any) -> bytes:
        if request == b"hello":
            return request
        self.arrived += 1
        if self.arrived == self.n:
            self.open.set()
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request)
            raise
        if request.startswith(b"fail"):
            await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused {request.decode()}")
        return request


async def _serve(handler: grpc.RpcMethodHandler[Any, Any], **options: int) -> tuple[Any, str]:
    server = grpc.aio.server(options=[(f"grpc.{k}", v) for k, v in options.items()])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Session": handler})]
    )
    checks = health.HealthServicer()
    checks.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _session_server(gate: Gate, small: bool = False) -> AsyncIterator[str]:
    """A server whose session stream serves ECHO through *gate*; *small*: it reads messages of
    at most SMALL_RECEIVE bytes and announces batches of SMALL_BATCH."""
    max_batch_bytes = SMALL_BATCH if small else session_batch.MAX_BATCH_BYTES
    servicer = SessionServicer(
        {ECHO: UnaryHandler(bytes, gate.echo, bytes)}, max_batch_bytes=max_batch_bytes
    )
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Session,
        request_deserializer=pb.SessionRequest.FromString,
        response_serializer=pb.SessionResponse.SerializeToString,
    )
    receive = SMALL_RECEIVE if small else DEFAULT_RECEIVE
    server, address = await _serve(handler, max_receive_message_length=receive)
    try:
        yield address
    finally:
        servicer.close()
        await server.stop(None)


@contextlib.asynccontextmanager
async def _old_session_server(seen: list[int]) -> AsyncIterator[str]:
    """A session stream as served before batching: reads each message's own fields only,
    announces nothing, answers each request by echoing its payload. Records the ids it saw."""

    async def session(requests: AsyncIterator[pb.SessionRequest], ctx: Any) -> Any:
        async for req in requests:
            seen.append(req.id)
            yield pb.SessionResponse(id=req.id, payload=req.payload)

    handler = grpc.stream_stream_rpc_method_handler(
        session,
        request_deserializer=pb.SessionRequest.FromString,
        response_serializer=pb.SessionResponse.SerializeToString,
    )
    server, address = await _serve(handler)
    try:
        yield address
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def _session_channel(address: str, small: bool = False) -> AsyncIterator[SessionChannel]:
    """A client's session channel; *small* as for ``_session_server``."""
    receive = SMALL_RECEIVE if small else DEFAULT_RECEIVE
    channel = SessionChannel(
        grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", receive)]),
        (("coordd-agent-id", "agent-a"),),
        max_batch_bytes=SMALL_BATCH if small else session_batch.MAX_BATCH_BYTES,
    )
    try:
        # One call first: the stream is open and the server's announcement (if any) is in.
        assert await channel.call(ECHO, b"hello", None, None) == b"hello"
        yield channel
    finally:
        await channel.close(None)


async def _outcome(call: Awaitable[bytes]) -> bytes | tuple[grpc.StatusCode, str]:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


async def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_calls_ready_together_share_messages_both_ways_with_mixed_outcomes() -> None:
    n = 40
    gate = Gate(n)
    async with _session_server(gate) as address, _session_channel(address) as channel:
        sent, received = channel.stats.messages_sent, channel.stats.messages_received
        payloads = [(b"fail-%d" if i % 3 == 0 else b"ok-%d") % i for i in range(n)]
        got = await asyncio.gather(*(_outcome(channel.call(ECHO, p, 30, None)) for p in payloads))
        for p, outcome in zip(payloads, got, strict=True):
            if p.startswith(b"fail"):
                assert outcome == (grpc.StatusCode.FAILED_PRECONDITION, f"refused {p.decode()}")
            else:
                assert outcome == p
        # The first request left alone; the rest queued behind its write and left together.
        # All answers were ready at once (the gate) and came back together.
        assert channel.stats.messages_sent - sent == 2
        assert channel.stats.messages_received - received == 1
        assert channel.stats.requests_sent == channel.stats.answers_received == n + 1


async def test_cancelling_one_request_of_a_batch_cancels_it_alone() -> None:
    gate = Gate()
    async with _session_server(gate) as address, _session_channel(address) as channel:
        sent = channel.stats.messages_sent
        calls = [asyncio.ensure_future(channel.call(ECHO, b"r%d" % i, 30, None)) for i in range(5)]
        await _until(lambda: gate.arrived == 5)
        assert channel.stats.messages_sent - sent == 2  # r0 alone, r1..r4 batched
        calls[2].cancel()
        await _until(lambda: gate.cancelled == [b"r2"])  # the server stopped working on it
        gate.open.set()
        assert [await calls[i] for i in (0, 1, 3, 4)] == [b"r0", b"r1", b"r3", b"r4"]
        with pytest.raises(asyncio.CancelledError):
            await calls[2]


@pytest.mark.parametrize("small", ["server", "client"])
async def test_batches_keep_to_the_smaller_announced_limit_and_larger_messages_go_alone(
    small: str,
) -> None:
    # One end reads messages of at most 3000 bytes and announces batches of 2000; the other
    # reads 4 MiB and announces 1 MiB. A batch of the twelve 700-byte requests, or of their
    # answers, over 3000 bytes would break the stream: every call would fail.
    gate = Gate(13)
    async with (
        _session_server(gate, small=small == "server") as address,
        _session_channel(address, small=small == "client") as channel,
    ):
        sent, received = channel.stats.messages_sent, channel.stats.messages_received
        payloads = [bytes([65 + i]) * 700 for i in range(12)] + [b"z" * 2500]
        got = await asyncio.gather(*(channel.call(ECHO, p, 30, None) for p in payloads))
        assert got == payloads
        # At most two 700-byte entries fit in 2000 bytes: the first request went alone, the
        # other eleven took at least six messages, and the 2500-byte one (over the batch
        # limit, under the message limit) went alone; the twelve answers took at least six,
        # the 2500-byte one its own. Fewer messages than calls: they did share.
        assert 1 + 6 + 1 <= channel.stats.messages_sent - sent < 13
        assert 6 + 1 <= channel.stats.messages_received - received < 13


async def test_a_new_client_does_not_batch_for_a_server_that_did_not_announce_it() -> None:
    seen: list[int] = []
    async with _old_session_server(seen) as address, _session_channel(address) as channel:
        got = await asyncio.gather(*(channel.call(ECHO, b"%d" % i, 30, None) for i in range(20)))
        assert got == [b"%d" % i for i in range(20)]
        assert channel.stats.messages_sent == channel.stats.requests_sent == 21
        assert len(seen) == 21

        # Negative control: batching regardless of the announcement loses requests there.
        assert channel._stream is not None
        channel._stream.batch_bytes = 1 << 20
        seen.clear()
        calls = [asyncio.ensure_future(channel.call(ECHO, b"x%d" % i, 30, None)) for i in range(5)]
        await _until(lambda: len(seen) == 2)
        assert seen[1] == 0  # the envelope, read as one request without an id: four are lost
        assert await calls[0] == b"x0"
        assert not any(c.done() for c in calls[1:])
        for c in calls[1:]:
            c.cancel()


async def _old_client(address: str, n: int, announce: bool) -> list[pb.SessionResponse]:
    """A client as written before batching: writes *n* requests, reads messages until it has
    *n* answers or the stream ends, matching each message's own id only."""
    metadata = (
        ("coordd-agent-id", "agent-a"),
        *(session_batch.announce(1 << 20) if announce else ()),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.SessionServiceStub(channel).Session(metadata=metadata)
        for i in range(1, n + 1):
            await call.write(pb.SessionRequest(id=i, method=ECHO, payload=b"%d" % i))
        await call.done_writing()
        return [m async for m in call]


async def test_an_old_client_gets_one_answer_per_message_from_a_new_server() -> None:
    gate = Gate(10)
    async with _session_server(gate) as address:
        answers = await _old_client(address, 10, announce=False)
        assert sorted((a.id, a.payload) for a in answers) == [(i, b"%d" % i) for i in range(1, 11)]

        # Negative control: had the server batched for it, the old client would have seen
        # envelopes without ids (it matches only a message's own id) and lost answers.
        gate.arrived, gate.n = 0, 10
        gate.open.clear()
        answers = await _old_client(address, 10, announce=True)
        assert len(answers) < 10
        assert any(a.id == 0 and len(a.batch) > 1 for a in answers)


async def test_concurrent_calls_of_one_client_share_messages_on_the_daemon(aclient) -> None:
    channel = aclient._core.channel
    await aclient.claims.acquire("acme/batch", "warm", ttl=30)
    sent, requests = channel.stats.messages_sent, channel.stats.requests_sent
    got = await asyncio.gather(
        *(aclient.claims.acquire("acme/batch", f"r{i}", ttl=30) for i in range(30))
    )
    assert [g.claim.resource for g in got if g.claim] == [f"r{i}" for i in range(30)]
    assert channel.stats.requests_sent - requests == 30
    assert channel.stats.messages_sent - sent < 30
    assert channel.stats.answers_received > channel.stats.messages_received


async def test_the_sidecar_batches_both_ways(start_sidecar: Any) -> None:
    sc = await start_sidecar("agent-a")
    async with await AsyncClient.connect(sc.address, agent_id="agent-a") as agent:
        await agent.claims.acquire("acme/batch", "warm", ttl=30)
        got = await asyncio.gather(
            *(agent.claims.acquire("acme/batch", f"s{i}", ttl=30) for i in range(30))
        )
        assert all(g.acquired for g in got)
        # Agent to sidecar: the agent's concurrent calls shared messages.
        to_sidecar = agent._core.channel.stats
        assert to_sidecar.requests_sent == 31 and to_sidecar.messages_sent < 31
        # Sidecar to daemon: the requests it forwarded at once shared messages too.
        assert sc.upstream is not None
        upstream = sc.upstream.stats
        assert upstream.requests_sent >= 31 and upstream.messages_sent < upstream.requests_sent
