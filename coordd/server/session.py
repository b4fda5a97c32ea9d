"""The session stream: tagged unary calls on one bidirectional stream per connection.

A Python gRPC unary call costs the server several times what one message on an open stream
costs (bench claims prints both). ``SessionService.Session`` carries many unary calls on one
stream: each ``SessionRequest`` names its method and carries the serialized request; it is
dispatched to the very handler that serves the unary RPC, wrapped by the same interceptor
(authentication from the stream's metadata, errors as google.rpc.Status), under its own
deadline and trace context, and answered with a ``SessionResponse`` of the same id, in
whatever order the handlers finish. Requests that arrive together in one message's ``batch``
are served one by one as if each had come alone; answers ready together leave in one message
when the client announced it reads batches (``coordd.session_batch``).

The dispatcher knows nothing of coordd's services: it takes a table of unary handlers, so the
sidecar serves the same stream with its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from coordd import errors, rpc_status, session_batch
from coordd.server.interceptors import Undecodable
from coordd.v1 import session_service_pb2 as pb
from coordd.v1 import session_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SESSION_METHOD = "/coordd.v1.SessionService/Session"
# Identity travels on the stream's metadata only: a request cannot speak for someone else.
_IDENTITY_KEYS = frozenset({"authorization", "coordd-agent-id", "coordd-agent-role"})
MAX_IN_FLIGHT = 256
"""Requests one stream may have in flight; past it the server stops reading (backpressure)."""

Behavior = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class UnaryHandler:
    """How to serve one unary method: decode, handle (request, context), encode."""

    deserialize: Callable[[bytes], Any]
    behavior: Behavior
    serialize: Callable[[Any], bytes]


def servicer_handlers(
    servicer: object, service: ServiceDescriptor, wrap: Callable[[str, Behavior], Behavior]
) -> dict[str, UnaryHandler]:
    """The unary methods of *servicer* (implementing *service*), each wrapped by *wrap*
    (method name, behavior) as the server's interceptor wraps them."""
    out = {}
    for m in service.methods:
        if m.client_streaming or m.server_streaming:
            continue
        name = f"/{service.full_name}/{m.name}"
        request_cls = message_factory.GetMessageClass(m.input_type)
        out[name] = UnaryHandler(
            deserialize=request_cls.FromString,
            behavior=wrap(name, getattr(servicer, m.name)),
            serialize=lambda msg: msg.SerializeToString(),
        )
    return out


class SessionAbort(grpc.aio.AbortError):
    """A handler aborted its call: the status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str, details: bytes) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class RequestContext:
    """What a handler sees as its ``grpc.aio.ServicerContext`` for one request on the stream:
    the stream's identity metadata plus the request's own, the stream's peer and auth
    context, and an ``abort`` that answers this request alone."""

    def __init__(
        self,
        stream: grpc.aio.ServicerContext[Any, Any],
        metadata: tuple[tuple[str, str], ...],
        deadline: float | None,
    ) -> None:
        self._stream = stream
        self._metadata = metadata
        self._deadline = deadline

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._stream.auth_context()

    def peer(self) -> str:
        return self._stream.peer()

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        status = b""
        for key, value in trailing_metadata:
            if key == rpc_status.STATUS_DETAILS_KEY and isinstance(value, bytes):
                status = value
        raise SessionAbort(code, details, status)

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Accepted and dropped: a session response has no trailers of its own."""

    def cancelled(self) -> bool:
        return self._stream.cancelled()


class _Expiry:
    """Cancels the task serving a request when its deadline passes: what
    ``asyncio.timeout_at`` does, without a context manager's cost on every request."""

    __slots__ = ("fired", "handle", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.fired = False
        self.task = asyncio.current_task()
        self.handle = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        if self.task is not None:
            self.fired = True
            self.task.cancel()

    def expired(self) -> bool:
        """Whether the cancellation being handled is this deadline's alone (then it is
        withdrawn; any other cancellation of the task still propagates)."""
        return self.fired and self.task is not None and self.task.uncancel() == 0


def _failure(
    rid: int, code: grpc.StatusCode, message: str, details: bytes = b""
) -> pb.SessionResponse:
    return pb.SessionResponse(id=rid, code=code.value[0], message=message, status_details=details)


class _Stream:
    """One session stream's requests in flight and its answers not yet sent.

    A plain list and a future instead of an ``asyncio.Queue`` and ``Semaphore``: the writer
    takes every ready answer at once, and the reader waits only when ``MAX_IN_FLIGHT``
    requests are in flight.
    """

    __slots__ = ("context", "identity", "in_flight", "reading", "ready", "room", "servicer", "wake")

    def __init__(
        self,
        servicer: SessionServicer,
        identity: tuple[tuple[str, str], ...],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.servicer = servicer
        self.identity = identity
        self.context = context
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.ready: list[pb.SessionResponse] = []
        self.reading = True
        self.wake: asyncio.Future[None] | None = None
        """The writer's, while it waits for an answer."""
        self.room: asyncio.Future[None] | None = None
        """The reader's, while MAX_IN_FLIGHT requests are in flight."""

    def answer(self, response: pb.SessionResponse) -> None:
        self.ready.append(response)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    async def serve(self, req: pb.SessionRequest) -> None:
        try:
            self.answer(await self.servicer._dispatch(req, self.identity, self.context))
        except asyncio.CancelledError:
            self.answer(_failure(req.id, grpc.StatusCode.CANCELLED, "cancelled"))
        finally:
            self.in_flight.pop(req.id, None)
            if self.room is not None and not self.room.done():
                self.room.set_result(None)

    async def read(self, requests: AsyncIterator[pb.SessionRequest]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                async for message in requests:
                    # A batch's entries are served one by one, as if each had come alone.
                    for req in message.batch or (message,):
                        if req.cancel:
                            if (task := self.in_flight.get(req.id)) is not None:
                                task.cancel()
                            continue
                        while len(self.in_flight) >= MAX_IN_FLIGHT:
                            self.room = loop.create_future()
                            await self.room
                        self.in_flight[req.id] = loop.create_task(self.serve(req))
            except asyncio.CancelledError:
                if not self.servicer._closing:
                    raise
            # The client half-closed, or the server is stopping: finish what was asked,
            # then end the stream (a stopping server's grace covers it).
            if self.in_flight:
                await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        finally:
            self.reading = False
            if self.wake is not None and not self.wake.done():
                self.wake.set_result(None)


class SessionServicer(pb_grpc.SessionServiceServicer):
    """Serves ``Session`` streams from a table of unary handlers (full method name -> handler).

    Args:
        handlers: The unary methods this stream may call, already wrapped with the server's
            authentication and error translation.
        traced: Start a server span per request, continuing the request's W3C trace context.
        max_batch_bytes: Largest batched message this server sends (at most its send limit) and
            reads (announced to clients; at most its receive limit).
    """

    def __init__(
        self,
        handlers: Mapping[str, UnaryHandler],
        traced: bool = False,
        max_batch_bytes: int = session_batch.MAX_BATCH_BYTES,
    ) -> None:
        self._handlers = dict(handlers)
        self._traced = traced
        self._max_batch_bytes = max_batch_bytes
        self._closing = False
        self._readers: set[asyncio.Future[None]] = set()

    async def Session(
        self,
        request_iterator: AsyncIterator[pb.SessionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.SessionResponse]:
        if self._closing:
            return
        metadata = context.invocation_metadata() or ()
        identity = tuple((k, v) for k, v in metadata if isinstance(v, str) and k in _IDENTITY_KEYS)
        # Announce that this server reads batched requests, before any answer is ready.
        await context.send_initial_metadata(session_batch.announce(self._max_batch_bytes))
        stream = _Stream(self, identity, context)
        reader = asyncio.ensure_future(stream.read(request_iterator))
        self._readers.add(reader)
        # Answers go out as they come; those ready together share one message when the client
        # announced it reads batches. One writer (this generator) sends them all.
        batch_bytes = min(self._max_batch_bytes, session_batch.announced(metadata))
        try:
            while True:
                if not stream.ready:
                    if not stream.reading:
                        break
                    stream.wake = asyncio.get_running_loop().create_future()
                    await stream.wake
                    continue
                ready, stream.ready = stream.ready, []
                if batch_bytes and len(ready) > 1:
                    ready = session_batch.pack(ready, batch_bytes, pb.SessionResponse)
                for answer in ready:
                    yield answer
            await reader  # surfaces a broken request stream
        finally:
            self._readers.discard(reader)
            reader.cancel()
            for task in list(stream.in_flight.values()):
                task.cancel()

    def close(self) -> None:
        """Stop reading requests on every stream; each ends once its requests are answered.

        Call before stopping the gRPC server, so that its grace period lets in-flight session
        requests finish like in-flight unary calls.
        """
        self._closing = True
        for reader in list(self._readers):
            reader.cancel()

    async def _dispatch(
        self,
        req: pb.SessionRequest,
        identity: tuple[tuple[str, str], ...],
        stream: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.SessionResponse:
        handler = self._handlers.get(req.method)
        if handler is None and not req.method:
            err = errors.InvalidArgumentError.single(
                "method", "required: a full method name, e.g. /coordd.v1.ClaimService/AcquireClaim"
            )
            return _failure(
                req.id, err.code, err.message, rpc_status.to_status(err).SerializeToString()
            )
        if handler is None:
            return _failure(
                req.id, grpc.StatusCode.UNIMPLEMENTED, f"method {req.method!r} not served here"
            )
        metadata = identity
        if req.metadata:
            metadata += tuple((k, v) for k, v in req.metadata.items() if k not in _IDENTITY_KEYS)
        deadline = expiry = None
        if req.HasField("timeout"):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + req.timeout.seconds + req.timeout.nanos / 1e9
        ctx = RequestContext(stream, metadata, deadline)
        try:
            request = handler.deserialize(req.payload)
        except Exception as exc:  # answered INVALID_ARGUMENT by the wrapped handler, after auth
            request = Undecodable(type(exc).__name__)
        try:
            if deadline is not None:
                expiry = _Expiry(loop, deadline)
            if self._traced:
                response = await self._traced_call(req.method, handler, request, ctx)
            else:
                response = await handler.behavior(request, ctx)
        except SessionAbort as abort:
            return _failure(req.id, abort.code, abort.message, abort.details)
        except asyncio.CancelledError:
            if expiry is None or not expiry.expired():
                raise
            return _failure(req.id, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        finally:
            if expiry is not None:
                expiry.handle.cancel()
        return pb.SessionResponse(id=req.id, payload=handler.serialize(response))

    async def _traced_call(
        self, method: str, handler: UnaryHandler, request: Any, ctx: RequestContext
    ) -> Any:
        from opentelemetry import propagate, trace

        carrier = dict(ctx.invocation_metadata())
        service, _, name = method.lstrip("/").partition("/")
        with trace.get_tracer("coordd.session").start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        ):
            return await handler.behavior(request, ctx)
