"""grpc.aio's completion-queue reader, wrapped so that one loop iteration runs every gRPC
completion that arrived together (clients/coordd_client/_grpc_wakeups.py)."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing as mp
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from coordd_client import AsyncClient, Client
from coordd_client import _grpc_wakeups as wakeups
from tests.fix_daemon import DaemonThread

ECHO = "/test.Echo/Unary"
ECHO_STREAM = "/test.Echo/Stream"


async def _wrapped() -> wakeups.WakeDrain | None:
    return wakeups.installed()


def test_installed_in_daemon_client_blocking_client(daemon: DaemonThread) -> None:
    assert daemon.run(_wrapped()) is not None, "the daemon's loop"
    with Client.connect(daemon.address, agent_id="agent-w") as client:
        assert client._loop.run(_wrapped()) is not None, "the blocking client's loop thread"
        assert client.claims.acquire("wake/ns", "r1", ttl=30).acquired


async def test_installed_in_async_client_and_sidecar(
    aclient: AsyncClient, start_sidecar: Any
) -> None:
    wrapped = wakeups.installed()
    assert wrapped is not None
    # The session daemon's loop (its own thread) is bound too: with readers on two threads
    # the wrapper leaves every byte to gRPC's own reader.
    assert not wrapped._alone()
    sidecar = await start_sidecar(agent_id="agent-s")
    async with await AsyncClient.connect(sidecar.address, agent_id="agent-s") as via:
        assert (await via.claims.acquire("wake/ns", "r2", ttl=30)).acquired
    assert wakeups.installed() is not None


def test_switched_off(
    start_daemon: Any, daemon: DaemonThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = start_daemon(grpc_wake_drain=False)
    assert off.run(_wrapped()) is None
    monkeypatch.setenv(wakeups.ENV_SWITCH, "0")
    with Client.connect(daemon.address, agent_id="agent-w") as client:
        assert client._loop.run(_wrapped()) is None
        assert client.claims.acquire("wake/ns", "r3", ttl=30).acquired


def test_unknown_shapes_leave_the_loop_untouched() -> None:
    loop = asyncio.new_event_loop()
    read, write = socket.socketpair()
    try:
        # No gRPC on this loop at all.
        assert not wakeups.install(loop)
        before = dict(loop._selector.get_map())  # type: ignore[attr-defined]

        # A reader that looks like gRPC's by name but belongs to something else.
        def _handle_events(owner: object) -> None:
            read.recv(1)

        look_alike = functools.partial(_handle_events, loop)
        read.setblocking(False)
        loop.add_reader(read, look_alike)
        assert not wakeups.install(loop)
        key = loop._selector.get_key(read)  # type: ignore[attr-defined]
        assert key.data[0]._callback is look_alike
        assert len(loop._selector.get_map()) == len(before) + 1  # type: ignore[attr-defined]
        assert wakeups.installed(loop) is None
        loop.remove_reader(read)
    finally:
        read.close()
        write.close()
        loop.close()


def test_a_byte_taken_by_another_loop_is_given_back() -> None:
    """Two loops bound to one completion queue: the other loop's reader takes the byte left
    for gRPC's ``recv(1)`` after the wrapper took the rest. gRPC's reader then raises before
    running the queue, so the wrapper writes a byte back: a reader call still follows for the
    events whose bytes it took."""
    read, write = socket.socketpair()
    read.setblocking(False)
    runs: list[int] = []

    def grpc_reader() -> None:  # what PollerCompletionQueue._handle_events does first
        read.recv(1)
        runs.append(1)

    def other_loop_first() -> None:
        read.recv(1)  # the other loop's reader, between the wrapper's two steps
        grpc_reader()

    try:
        write.send(b"111")
        drain = wakeups.WakeDrain(other_loop_first, read, write)
        drain()
        assert drain.drained == 2 and not runs
        assert read.recv(16, socket.MSG_PEEK) == b"1", "one byte back: a reader will run"
        # Nothing taken here, the same race: gRPC's own error, as without the wrapper.
        drain = wakeups.WakeDrain(other_loop_first, read, write)
        with pytest.raises(BlockingIOError):
            drain()
        assert drain.drained == 0
    finally:
        read.close()
        write.close()


# The counting tests run in a child process: there, one event loop is the only one bound to
# gRPC's completion queue, as in the daemon (this process has the session daemon's too).


class _HeldEcho:
    """A thread-pool gRPC server (its own completion queue, not grpc.aio's) whose unary
    method answers only once released, so that the answers complete together."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = threading.Event()
        self.gates: dict[bytes, threading.Event] = {}
        """Requests whose payload names a gate wait for it instead of ``release``."""
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=80))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.Echo",
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
                        "Stream": grpc.stream_stream_rpc_method_handler(self._stream),
                    },
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

        self.gates: dict[bytes, threading.Event] = {}
        """Requests whose payload names a gate wait for it instead of ``release``."""

    def _unary(self, request: bytes, context: object) -> bytes:
        with self._lock:
            self.arrived += 1
        self.gates.get(request, self.release).wait(60)
        return request

    def _stream(self, requests: Iterator[bytes], context: object) -> Iterator[bytes]:
        yield from requests


def _pending(sock: socket.socket) -> int:
    try:
        return len(sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0


def _poll(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _answers_together(calls: int, hook: bool) -> dict[str, int]:
    """In a child process: *calls* unary calls whose answers complete while the loop is
    held; then one call of the completion-queue reader, as one loop iteration makes."""
    echo = _HeldEcho()

    async def main() -> dict[str, int]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{echo.port}")
        await channel.channel_ready()
        if hook:
            assert wakeups.install()
        loop = asyncio.get_running_loop()
        found = wakeups._grpc_reader(loop)
        assert not isinstance(found, str), found
        key, _ = found
        sock = key.fileobj
        unary = channel.unary_unary(ECHO)
        tasks = [asyncio.ensure_future(unary(b"%d" % i)) for i in range(calls)]
        deadline = time.monotonic() + 30
        while echo.arrived < calls:  # the loop runs meanwhile: the requests go out
            assert time.monotonic() < deadline, "requests did not arrive"
            await asyncio.sleep(0.001)
        settled = _pending(sock)
        # Hold the loop (this callback does not return) while every answer completes.
        echo.release.set()
        _poll(lambda: _pending(sock) >= settled + calls, "the answers' completions")
        before = _pending(sock)
        key.data[0]._run()  # the reader, once: what one loop iteration does with it
        after = _pending(sock)
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert answers == [b"%d" % i for i in range(calls)]
        # A burst with the reader as it is now: streams and unary calls all complete.
        stream = channel.stream_stream(ECHO_STREAM)

        async def talk(i: int) -> int:
            call = stream()
            for j in range(20):
                await call.write(b"%d" % j)
                assert await call.read() == b"%d" % j
            await call.done_writing()
            return i

        burst = [talk(i) for i in range(32)] + [unary(b"u") for _ in range(200)]
        done = await asyncio.wait_for(asyncio.gather(*burst), 60)
        wrapped = wakeups.installed()
        await channel.close()
        return {
            "before": before,
            "after": after,
            "burst": len(done),
            "drained": wrapped.drained if wrapped else 0,
        }

    try:
        return asyncio.run(main())
    finally:
        echo.release.set()
        echo.server.stop(None)


@pytest.mark.parametrize("hook", [True, False], ids=["hook", "no hook (control)"])
def test_answers_that_complete_together_take_one_loop_iteration(hook: bool) -> None:
    calls = 40
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_answers_together, (calls, hook))
    assert got["before"] >= calls
    if hook:
        assert got["after"] == 0, "every wake byte taken in one iteration"
        assert got["drained"] >= calls - 1
    else:  # the control: the counting above fails without the hook
        assert got["after"] == got["before"] - 1, "one iteration per completion"
        assert got["drained"] == 0
    assert got["burst"] == 232, "no wake-up lost"


def _after_a_closed_loop(calls: int) -> int:
    """In a child process: an answer completes for an event loop closed since (one
    ``asyncio.run`` after another), queued just before *calls* answers for the loop running
    now. gRPC's reader raises on the first ("Event loop is closed"): the others must run."""
    echo = _HeldEcho()
    first = echo.gates[b"A"] = threading.Event()
    then = echo.gates[b"B"] = threading.Event()
    address = f"127.0.0.1:{echo.port}"

    left: list[asyncio.Future[bytes]] = []

    async def start_and_leave() -> None:
        channel = grpc.aio.insecure_channel(address)
        assert wakeups.install()
        left.append(asyncio.ensure_future(channel.unary_unary(ECHO)(b"A")))
        while echo.arrived < 1:
            await asyncio.sleep(0.001)

    async def next_loop() -> int:
        channel = grpc.aio.insecure_channel(address)
        await channel.channel_ready()
        assert wakeups.install()
        found = wakeups._grpc_reader(asyncio.get_running_loop())
        assert not isinstance(found, str), found
        sock = found[0].fileobj
        tasks = [asyncio.ensure_future(channel.unary_unary(ECHO)(b"B")) for _ in range(calls)]
        while echo.arrived < 1 + calls:
            await asyncio.sleep(0.001)
        # Hold this loop while the closed loop's answer, then ours, complete in that order.
        first.set()
        _poll(lambda: _pending(sock) >= 1, "the closed loop's answer")
        then.set()
        _poll(lambda: _pending(sock) >= 1 + calls, "the answers")
        done = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await channel.close()
        return len(done)

    closed = asyncio.new_event_loop()
    try:
        closed.run_until_complete(start_and_leave())
        closed.close()  # its call still in flight, as a finished asyncio.run leaves it
        return asyncio.run(next_loop())
    finally:
        echo.release.set()
        first.set()
        then.set()
        echo.server.stop(None)


def test_completions_behind_one_for_a_closed_loop_still_run() -> None:
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_after_a_closed_loop, (20,)) == 20
