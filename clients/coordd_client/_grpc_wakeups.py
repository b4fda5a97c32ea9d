"""One event-loop iteration per batch of gRPC completions, not one per completion.

grpc.aio (grpcio's "poller" engine) runs a thread that waits on gRPC's completion queue.
For every completion it takes (a message read, a write done, a call ended) it appends the
event to a queue and writes ONE byte to a socketpair; the event loop watches the other end
with ``add_reader``, and the reader (``PollerCompletionQueue._handle_events``) receives one
byte and then runs every event in the queue. So when k events arrive while the loop is busy,
the first reader call handles all of them, and the k - 1 bytes left behind still make the
loop come back k - 1 times (epoll_wait, recv, a callback) to find the queue empty. Under
load that is most of the reader's calls: two per stream message in the bare echo at 32
clients (bench/RESULTS.md, session 18).

:func:`install` wraps that reader, for one running selector loop, so that one call first
takes all pending bytes but one, then calls gRPC's reader, which takes the last byte and
runs the queue. Why no event is lost: gRPC queues an event before writing its byte, so every
byte taken belongs to an event already queued, and the reader called right after runs it.
The last byte is left to gRPC's own ``recv(1)`` (the socket is non-blocking: taken, that
recv would raise before running the queue).

Readers of several event loops (a loop per thread, each bound to gRPC's one queue) would race
for those bytes, so the wrapper takes bytes only while its loop is the only open one bound
(a daemon, a client on one loop); with several it leaves every byte to gRPC, as shipped.
Should gRPC's reader still raise after bytes were taken here (another loop bound meanwhile
took the last byte: ``BlockingIOError``; or an event for a loop closed since, one
``asyncio.run`` after another: "Event loop is closed", part way through the queue), the
wrapper writes one byte back into the socketpair, so that a reader call follows and runs the
events behind.

This reaches into grpcio's internals, so it is guarded like the pool hook in
``coordd.storage.db``: when the loop is not a selector loop, or gRPC's reader, its socket or
its completion queue do not have the shape described above (another grpcio version, another
engine), :func:`install` changes nothing and says so once in the debug log. Setting
``COORDD_GRPC_WAKE_DRAIN=0`` turns it off in the daemon, the client and the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any

logger = logging.getLogger(__name__)

ENV_SWITCH = "COORDD_GRPC_WAKE_DRAIN"
"""Environment variable: ``0``/``false``/``no``/``off`` leaves grpc.aio's reader as it is."""

_PEEK_BYTES = 4096
"""At most this many pending wake bytes are looked at (and all but one taken) per call;
more pending simply take another call."""

_explained = False


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the switch (``COORDD_GRPC_WAKE_DRAIN``, default on) allows :func:`install`."""
    value = (os.environ if environ is None else environ).get(ENV_SWITCH, "")
    return value.strip().lower() not in ("0", "false", "no", "off")


class WakeDrain:
    """The wrapped reader: takes all pending wake bytes but one, then calls gRPC's reader."""

    def __init__(
        self,
        handler: Callable[[], None],
        read: socket.socket,
        write: socket.socket,
        loops: Collection[asyncio.AbstractEventLoop] = (),
    ):
        self.handler = handler
        """gRPC's reader for this loop (``partial(PollerCompletionQueue._handle_events, loop)``)."""
        self._read = read
        self._write = write
        self._loops = loops
        """The event loops gRPC bound to its completion queue (this one among them)."""
        self._buffer = memoryview(bytearray(_PEEK_BYTES))
        self.calls = 0
        """Calls of this reader (one per loop iteration in which the socket was readable)."""
        self.drained = 0
        """Wake bytes taken here, each one a loop iteration saved."""

    def _alone(self) -> bool:
        """Whether this loop is the only open one bound to the queue: only then are wake
        bytes taken here (with readers on several threads, each one gRPC's own)."""
        if len(self._loops) <= 1:
            return True
        return sum(1 for loop in list(self._loops) if not loop.is_closed()) <= 1

    def __call__(self) -> None:
        self.calls += 1
        taken = 0
        if not self._alone():
            self.handler()
            return
        try:
            pending = self._read.recv_into(
                self._buffer, _PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
            if pending > 1:
                taken = self._read.recv_into(self._buffer, pending - 1, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass  # another loop's reader emptied the socket first: gRPC's reader decides
        self.drained += taken
        try:
            self.handler()
        except BlockingIOError:
            if not taken:
                raise  # gRPC's own race between loops, as it is without this wrapper
            # Another loop took the byte left for gRPC's recv, so the events whose bytes
            # were taken here may not have run: one byte back makes a reader run them.
            self._rearm()
        except BaseException:
            # gRPC's reader stopped part way through the queue (an event for a loop that is
            # closed by now raises "Event loop is closed"). Without this wrapper the events
            # still queued would each have their byte left; one byte back makes a reader run
            # them (each stop pops the event that stopped it, so this ends).
            if taken:
                self._rearm()
            raise

    def _rearm(self) -> None:
        # A full socket is full of wake bytes: readers will come anyway.
        with contextlib.suppress(BlockingIOError):
            self._write.send(b"1", socket.MSG_DONTWAIT)


def _explain_once(why: str) -> None:
    global _explained
    if not _explained:
        _explained = True
        logger.debug("grpc.aio wake drain not installed: %s", why)


def _grpc_reader(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any] | str:
    """The selector key of gRPC's completion-queue reader on *loop* and its handler, or why
    there is none of the expected shape."""
    selector = getattr(loop, "_selector", None)
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop) or selector is None:
        return f"{type(loop).__name__} is not a selector event loop"
    if not hasattr(socket, "MSG_DONTWAIT"):
        return "this platform's sockets have no MSG_DONTWAIT"
    for key in list(selector.get_map().values()):
        handle = key.data[0] if isinstance(key.data, tuple) and key.data else None
        callback = getattr(handle, "_callback", None)
        if isinstance(callback, WakeDrain):
            return key, callback
        if (
            isinstance(callback, functools.partial)
            and getattr(callback.func, "__name__", "") == "_handle_events"
            and type(getattr(callback.func, "__self__", None)).__name__ == "PollerCompletionQueue"
        ):
            return key, callback
    return "no grpc.aio completion-queue reader on this loop (another engine or grpcio version)"


def _queue_parts(
    queue: object, read: socket.socket
) -> tuple[socket.socket, dict[asyncio.AbstractEventLoop, object]] | None:
    """The socketpair's other end and the dict of bound loops, which the completion queue
    holds beside the read end (``_write_socket``, ``_loops``)."""
    parts = gc.get_referents(queue)
    sockets = [s for s in parts if isinstance(s, socket.socket)]
    others = [s for s in sockets if s is not read]
    loops = [
        d
        for d in parts
        if isinstance(d, dict) and d and all(isinstance(k, asyncio.AbstractEventLoop) for k in d)
    ]
    if len(sockets) != 2 or len(others) != 1 or others[0].family != read.family:
        return None
    if len(loops) != 1:
        return None
    return others[0], loops[0]


def install(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Wrap grpc.aio's completion-queue reader on *loop* (default: the running loop).

    Call it after creating a grpc.aio channel or server on that loop (gRPC binds the loop
    then). Idempotent; does nothing when switched off (``COORDD_GRPC_WAKE_DRAIN=0``) or when
    gRPC's internals are not the expected shape (logged once at debug).

    Returns:
        Whether the loop's reader is wrapped now.
    """
    if not enabled():
        return False
    loop = loop or asyncio.get_running_loop()
    found = _grpc_reader(loop)
    if isinstance(found, str):
        _explain_once(found)
        return False
    key, callback = found
    if isinstance(callback, WakeDrain):
        return True
    read = key.fileobj
    if not (
        isinstance(read, socket.socket)
        and read.type == socket.SOCK_STREAM
        and not read.getblocking()
        and callback.args == (loop,)
        and not callback.keywords
    ):
        _explain_once(f"gRPC's reader is not the expected shape: {callback!r} on {read!r}")
        return False
    parts = _queue_parts(callback.func.__self__, read)
    if parts is None or loop not in parts[1]:
        _explain_once("cannot tell the completion queue's write socket and bound loops")
        return False
    write, loops = parts
    loop.remove_reader(read)
    loop.add_reader(read, WakeDrain(callback, read, write, loops))
    return True


def installed(loop: asyncio.AbstractEventLoop | None = None) -> WakeDrain | None:
    """The wrapper in place on *loop* (default: the running loop), if any."""
    found = _grpc_reader(loop or asyncio.get_running_loop())
    if isinstance(found, str) or not isinstance(found[1], WakeDrain):
        return None
    return found[1]
