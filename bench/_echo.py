"""The gRPC floor: a bare grpc.aio server whose methods echo their bytes.

No protobuf, no interceptors, no database: what one Python gRPC unary call, and one message on
an already open bidirectional stream, cost the server's CPU on this machine. Scenarios measure
it in the same run as the daemon, with the same load generator and concurrency, so each figure
has its floor beside it. The floor is bare grpc.aio as shipped; ``wake_drain`` runs the same
echo as coordd runs gRPC: the completion-queue wake drain (``coordd_client._grpc_wakeups``) on
both ends, and the server on the gRPC I/O engine ``coordd serve`` picks (``COORDD_GRPC_IO``:
gRPC core's poller unless set otherwise; the client keeps grpcio's default, as the Python
client does).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from bench._cpu import CpuWindow
from coordd.commands._server import grpc_io_environment
from coordd_client import _grpc_wakeups

UNARY = "/bench.Echo/Unary"
STREAM = "/bench.Echo/Stream"
PAYLOAD = b"x" * 96  # about the size of a claim request


def _serve(port_q: mp.Queue[int], wake_drain: bool) -> None:
    async def main() -> None:
        async def unary(req: bytes, ctx: object) -> bytes:
            return req

        async def stream(requests: AsyncIterator[bytes], ctx: object) -> AsyncIterator[bytes]:
            async for req in requests:
                yield req

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Echo",
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(unary),
                        "Stream": grpc.stream_stream_rpc_method_handler(stream),
                    },
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        if wake_drain and not _grpc_wakeups.install():
            raise RuntimeError("the wake drain did not install (see the debug log)")
        port_q.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


@dataclass(frozen=True)
class EchoServer:
    address: str
    pid: int


@contextmanager
def echo_server(wake_drain: bool = False) -> Iterator[EchoServer]:
    """A bare grpc.aio echo server in its own process; with *wake_drain*, gRPC as coordd runs
    it (the drain, and ``coordd serve``'s I/O engine)."""
    ctx = mp.get_context("spawn")
    port_q: mp.Queue[int] = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(port_q, wake_drain), daemon=True)
    # The child reads GRPC_EXPERIMENTS when it imports gRPC: it starts with this environment.
    extra = grpc_io_environment(os.environ) if wake_drain else {}
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        proc.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        port = port_q.get(timeout=60)
        assert proc.pid is not None
        yield EchoServer(f"127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.join(10)


@dataclass(frozen=True)
class EchoRun:
    calls: int
    window: CpuWindow

    @property
    def rate(self) -> float:
        return self.calls / self.window.seconds

    @property
    def server_us(self) -> float:
        return self.window.per_call_us("server", self.calls)

    @property
    def client_us(self) -> float:
        return self.window.per_call_us("client", self.calls)


async def run_echo(
    server: EchoServer,
    clients: int,
    seconds: float,
    streamed: bool,
    rate: float | None = None,
    wake_drain: bool = False,
) -> EchoRun:
    """*clients* concurrent callers (one channel each) for *seconds*: unary calls, or messages
    on one open bidirectional stream per client; with the wake drain on this loop if asked.

    With *rate* (unary calls per second, all clients together) each client paces its calls to its
    share of it instead of calling again as soon as an answer arrives: the echo then serves
    calls as often as a slower server does, and its CPU per call is what the floor costs at
    that rate (gRPC's per-call cost grows as fewer calls share each wake-up)."""
    channels = [grpc.aio.insecure_channel(server.address) for _ in range(clients)]
    if wake_drain and not _grpc_wakeups.install():
        raise RuntimeError("the wake drain did not install (see the debug log)")
    for ch in channels:
        await ch.channel_ready()
    calls = 0
    interval = clients / rate if rate else 0.0

    async def paced(start: float) -> float:
        """Sleep until *start*; the start of the next call (no catching up after a delay)."""
        now = time.perf_counter()
        if start > now:
            await asyncio.sleep(start - now)
            now = start
        return max(start + interval, now)

    async def unary(ch: grpc.aio.Channel, stop: float, i: int) -> None:
        nonlocal calls
        call = ch.unary_unary(UNARY)
        # Paced clients start spread over one interval, so that calls do not arrive in waves.
        start = time.perf_counter() + interval * i / clients
        while time.perf_counter() < stop:
            if interval:
                start = await paced(start)
            await call(PAYLOAD)
            calls += 1

    async def stream(ch: grpc.aio.Channel, stop: float, i: int) -> None:
        nonlocal calls
        call = ch.stream_stream(STREAM)()
        while time.perf_counter() < stop:
            await call.write(PAYLOAD)
            await call.read()
            calls += 1
        await call.done_writing()
        # Wait for the call's status: closing the channel with the call still open leaves its
        # last completions in gRPC's process-wide queue, and the next side's event loop then
        # runs them against this closed one ("Event loop is closed" in the log).
        await call.code()

    worker = stream if streamed else unary
    with CpuWindow({"server": server.pid}) as window:
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(worker(ch, stop, i) for i, ch in enumerate(channels)))
    for ch in channels:
        await ch.close(None)
    return EchoRun(calls, window)
