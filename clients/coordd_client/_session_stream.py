"""Unary calls carried on one session stream per connection (``SessionService.Session``).

A Python gRPC unary call costs both ends several times what one message on an open stream
does. ``SessionChannel`` wraps a ``grpc.aio.Channel`` so that generated stubs built on it send
every unary call as a tagged ``SessionRequest`` on one long-lived bidirectional stream, and
match the ``SessionResponse`` by id. Errors come back as the same status and google.rpc.Status
details a unary call would carry, raised as the same ``grpc.aio.AioRpcError``, so everything
above the stub is unchanged. Streaming methods go straight to the channel. A server without the
session service answers UNIMPLEMENTED: the channel then falls back to plain unary calls for
good.

Requests made while another is being written go out together in the next message (and the
server answers those ready together in one message): the per-message cost is shared by
concurrent callers, and nothing waits to fill a batch. Batching starts only once the server
announced it (``coordd.session_batch``): an older server would drop a batch unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from coordd import rpc_status, session_batch, telemetry
from coordd.v1 import session_service_pb2 as pb

SESSION_METHOD = "/coordd.v1.SessionService/Session"
_IDENTITY_KEYS = frozenset({"authorization", "coordd-agent-id", "coordd-agent-role"})
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# grpc.health.v1 HealthCheckRequest{service: "coordd.v1.SessionService"} and the answer
# HealthCheckResponse{status: SERVING}, encoded by hand: the client needs no health package.
_SESSION_SERVICE = SESSION_METHOD.split("/")[1].encode()
_HEALTH_CHECK = b"\n" + bytes([len(_SESSION_SERVICE)]) + _SESSION_SERVICE
_SERVING = b"\x08\x01"
_CALLER_CANCELLED = grpc.aio.AioRpcError(
    grpc.StatusCode.CANCELLED,
    grpc.aio.Metadata(),
    grpc.aio.Metadata(),
    "session stream cancelled: a caller was cancelled while writing to it",
    None,
)


def _expire(future: asyncio.Future[pb.SessionResponse]) -> None:
    """The request's deadline passed before its answer came."""
    if not future.done():
        future.set_exception(TimeoutError())


class _Fallback(Exception):
    """The server does not offer the session stream: use the unary call."""


class _Unsent(Exception):
    """The stream ended before this request was written: safe to send again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(slots=True)
class SessionStats:
    """What the session stream carried since the channel opened: messages and the requests or
    answers in them (``requests / messages`` is the batching achieved)."""

    messages_sent: int = 0
    requests_sent: int = 0
    messages_received: int = 0
    answers_received: int = 0


class _Stream:
    """One open session stream: its call, its reader, and the requests not yet written."""

    __slots__ = ("batch_bytes", "call", "outbox", "reader", "writing")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.reader: asyncio.Task[None] | None = None
        self.outbox: list[pb.SessionRequest] = []
        self.writing = False
        """Whether a caller is writing: it takes what others queue meanwhile."""
        self.batch_bytes = 0
        """The largest batch to send: the server's announced limit and ours (0: none)."""


def _rpc_error(code: grpc.StatusCode, message: str, details: bytes = b"") -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if details:
        trailing.add(rpc_status.STATUS_DETAILS_KEY, details)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, message, None)


class SessionChannel:
    """A ``grpc.aio.Channel`` whose unary calls ride one session stream (opened on first use,
    reopened after a failure); everything else is the wrapped channel's.

    Args:
        channel: The channel to the daemon or sidecar.
        metadata: The stream's metadata: the caller's identity, sent once per stream.
        max_batch_bytes: Largest batched message sent, and read (announced to the server; at
            most the channel's receive limit).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: tuple[tuple[str, str], ...],
        max_batch_bytes: int = session_batch.MAX_BATCH_BYTES,
    ) -> None:
        self.channel = channel
        self._metadata = (*metadata, *session_batch.announce(max_batch_bytes))
        self._max_batch_bytes = max_batch_bytes
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.SessionResponse]] = {}
        self._stream: _Stream | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        """Background writes: cancel requests, and batches a task took over from a caller."""
        self.stats = SessionStats()
        self._probing: asyncio.Future[bool] | None = None
        self.offered: bool | None = None
        """Whether the server offers the session stream (None: not known yet)."""

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _SessionUnary:
        unary = self.channel.unary_unary(  # type: ignore[call-arg]  # not in the stubs
            method,
            request_serializer=request_serializer,
            response_deserializer=response_deserializer,
            _registered_method=_registered_method,
        )
        return _SessionUnary(self, method, request_serializer, response_deserializer, unary)

    def __getattr__(self, name: str) -> Any:
        # unary_stream, stream_stream, channel_ready, get_state ...: the channel's own.
        return getattr(self.channel, name)

    async def close(self, grace: float | None = None) -> None:
        await self._reset(self._stream, _rpc_error(grpc.StatusCode.CANCELLED, "channel closed"))
        await self.channel.close(grace)

    async def call(
        self,
        method: str,
        payload: bytes,
        timeout: float | None,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
    ) -> bytes:
        """Send one request on the stream and wait for its answer's payload.

        Raises:
            grpc.aio.AioRpcError: The request failed (as the unary call would have).
            _Fallback: The server does not offer the session stream.
        """
        if self.offered is None:
            await self._probe()
            if not self.offered:
                raise _Fallback()
        rid = next(self._ids)
        req = pb.SessionRequest(id=rid, method=method, payload=payload)
        if timeout is not None:
            deadline = req.timeout
            deadline.seconds = int(timeout)
            deadline.nanos = int(timeout % 1 * 1e9)
        for key, value in metadata or ():
            if key not in _IDENTITY_KEYS and isinstance(value, str):
                req.metadata[key] = value
        if not telemetry.tracing_configured():
            return await self._exchange(req, timeout)
        from opentelemetry import propagate, trace

        # The client span the unary path's OpenTelemetry interceptor would start.
        service, _, name = method.lstrip("/").partition("/")
        with trace.get_tracer("coordd_client.session").start_as_current_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        ):
            propagate.inject(req.metadata)
            return await self._exchange(req, timeout)

    async def _exchange(
        self, req: pb.SessionRequest, timeout: float | None, retry: bool = True
    ) -> bytes:
        rid = req.id
        stream = self._stream or self._open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.SessionResponse] = loop.create_future()
        self._pending[rid] = future
        # The deadline fails the answer's future: cheaper than a Timeout context per call.
        expiry = None if timeout is None else loop.call_later(timeout, _expire, future)
        try:
            try:
                await self._send(stream, req)
                resp = await future
            except _Unsent as unsent:
                # The stream ended before this request left: it was not sent.
                await self._reset(stream, unsent.cause)
                if retry:  # once, on a fresh stream (the server may have restarted)
                    self._pending.pop(rid, None)
                    if expiry is not None:
                        expiry.cancel()
                    return await self._exchange(req, timeout, retry=False)
                raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "session stream ended") from (
                    unsent.cause
                )
        except TimeoutError:
            self._cancel(stream, req)
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            self._cancel(stream, req)
            raise
        finally:
            self._pending.pop(rid, None)
            if expiry is not None:
                expiry.cancel()
        if resp.code == 0:
            return resp.payload
        code = _CODES.get(resp.code, grpc.StatusCode.UNKNOWN)
        raise _rpc_error(code, resp.message, resp.status_details)

    async def _send(self, stream: _Stream, req: pb.SessionRequest) -> None:
        """Write *req* now, or leave it to whoever is writing, who sends everything queued
        meanwhile in its next message (batched if the server reads batches).

        The caller that finds the stream idle writes what is queued (its request, and any that
        came since); if more came while it wrote, a task takes over the writing so that this
        caller goes on to wait for its own answer. A request that cannot be written fails its
        answer's future with ``_Unsent``.
        """
        stream.outbox.append(req)
        if stream.writing:
            return
        stream.writing = True
        handed_over = False
        try:
            if await self._write_queued(stream) and stream.outbox:
                task = asyncio.ensure_future(self._flush(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                handed_over = True
        finally:
            if not handed_over:
                stream.writing = False

    async def _flush(self, stream: _Stream) -> None:
        try:
            while stream.outbox and await self._write_queued(stream):
                pass
        finally:
            stream.writing = False

    async def _write_queued(self, stream: _Stream) -> bool:
        """Write every request queued now; False if the stream failed."""
        taken, stream.outbox = stream.outbox, []
        if stream.batch_bytes and len(taken) > 1:
            messages = session_batch.pack(taken, stream.batch_bytes, pb.SessionRequest)
        else:
            messages = taken
        for i, message in enumerate(messages):
            try:
                await stream.call.write(message)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                self._unsent(stream, messages[i:], exc)
                return False
            except asyncio.CancelledError:
                # Cancelling a write cancels the whole call; what was not written yet may
                # go again on a fresh stream.
                self._unsent(stream, messages[i + 1 :], _CALLER_CANCELLED)
                raise
            self.stats.messages_sent += 1
            self.stats.requests_sent += len(message.batch) or 1
        return True

    def _unsent(
        self, stream: _Stream, messages: list[pb.SessionRequest], exc: BaseException
    ) -> None:
        """Fail the answers of requests that were never written (and all still queued)."""
        requests = [r for m in messages for r in (m.batch or (m,))] + stream.outbox
        stream.outbox = []
        for r in requests:
            future = self._pending.get(r.id)
            if future is not None and not future.done():
                future.set_exception(_Unsent(exc))

    async def _probe(self) -> None:
        """Ask the server's health service whether it serves the session stream.

        Opening the stream and waiting for UNIMPLEMENTED races the first write (which then
        fails with a generic INTERNAL); a health check answers plainly. Concurrent first calls
        share one probe.
        """
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._check_health())
        self.offered = await asyncio.shield(self._probing)

    async def _check_health(self) -> bool:
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            answer = await check(_HEALTH_CHECK, timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer == _SERVING)

    def _open(self) -> _Stream:
        call = self.channel.stream_stream(
            SESSION_METHOD,
            request_serializer=pb.SessionRequest.SerializeToString,
            response_deserializer=pb.SessionResponse.FromString,
        )(metadata=self._metadata)  # type: ignore[call-arg]  # requests are written
        stream = self._stream = _Stream(call)
        stream.reader = asyncio.ensure_future(self._read(stream))
        return stream

    async def _read(self, stream: _Stream) -> None:
        call = stream.call
        stats = self.stats
        try:
            # A server that reads batches says so when the stream opens (an older one sends
            # its headers with its first answer, and no announcement).
            announced = session_batch.announced(await call.initial_metadata())
            stream.batch_bytes = min(announced, self._max_batch_bytes)
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
                    raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "session stream ended")
                if self.offered is None:
                    self.offered = True
                stats.messages_received += 1
                for answer in resp.batch or (resp,):
                    stats.answers_received += 1
                    future = self._pending.get(answer.id)
                    if future is not None and not future.done():
                        future.set_result(answer)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.offered = False
                self._fail_all(stream, _Fallback())
            else:
                self._fail_all(stream, exc)

    def _fail_all(self, stream: _Stream, exc: BaseException) -> None:
        if self._stream is stream:  # the next call opens a fresh stream
            self._stream = None
        if isinstance(exc, _Fallback):
            stream.outbox = []
        else:
            self._unsent(stream, [], exc)  # those still queued were never sent: send again
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)

    def _cancel(self, stream: _Stream, req: pb.SessionRequest) -> None:
        """Tell the server to stop working on *req* (best effort, not awaited); one still
        queued is simply not sent."""
        for i, queued in enumerate(stream.outbox):
            if queued is req:
                del stream.outbox[i]
                return
        if stream is self._stream and not stream.call.done():
            task = asyncio.ensure_future(
                self._send(stream, pb.SessionRequest(id=req.id, cancel=True))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reset(self, stream: _Stream | None, exc: BaseException) -> None:
        if stream is None or stream is not self._stream:
            return  # already reset: the next call opens a fresh stream
        self._stream = None
        stream.call.cancel()
        self._fail_all(stream, exc)
        if stream.reader is not None:
            stream.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream.reader


class _SessionUnary:
    """A unary multi-callable: on the session stream while the server offers it."""

    def __init__(
        self,
        session: SessionChannel,
        method: str,
        serialize: Callable[[Any], bytes] | None,
        deserialize: Callable[[bytes], Any] | None,
        unary: Any,
    ) -> None:
        self._session = session
        self._method = method
        self._serialize = serialize or (lambda m: m)
        self._deserialize = deserialize or (lambda b: b)
        self._unary = unary
        # Only coordd's own services travel on the session stream (not health, reflection).
        self._on_stream = method.startswith("/coordd.")

    async def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str | bytes], ...] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self._session.offered is not False and self._on_stream and not kwargs:
            try:
                payload = await self._session.call(
                    self._method, self._serialize(request), timeout, metadata
                )
                return self._deserialize(payload)
            except _Fallback:
                pass
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # The stream does not serve this method (a service it does not carry):
                # unary from now on, which answers for itself.
                self._on_stream = False
        return await self._unary(request, timeout=timeout, metadata=metadata, **kwargs)
