"""The sidecar's request path: identity, session, cache, forwarding as bytes.

Every coordd method is served by one generic handler, so an RPC added to the daemon works
through the sidecar unchanged: methods it does not cache travel upstream as bytes (parsed only
where the session needs a field: ``min_revision`` stamped on reads, the sender's vector on
posts, headers and context senders' vectors folded in from answers). Errors pass through
unchanged, ``grpc-status-details-bin`` included, so the agent's client raises what it would
have raised talking to the daemon.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace

from coordd import rpc_status
from coordd.errors import CoorddError, InvalidArgumentError, UnauthenticatedError
from coordd.server.session import SESSION_METHOD, SessionServicer, UnaryHandler
from coordd.v1 import session_service_pb2 as session_pb
from coordd_client._cache import CACHED_METHODS, SessionCache
from coordd_client._methods import Method, header_of, methods
from coordd_client._session import Session, stamp_min_revision

Ctx = grpc.aio.ServicerContext[Any, Any]

AGENT_ID_KEY = "coordd-agent-id"
STALENESS_KEY = "coordd-max-staleness"
"""Request metadata: seconds of staleness the caller tolerates when upstream is unreachable."""
CACHE_AGE_KEY = "coordd-cache-age"
"""Response metadata on an answer served stale: its age in seconds."""

_IDENTITY_KEYS = frozenset({AGENT_ID_KEY, "coordd-agent-role", "authorization"})
_TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
_OWN_KEYS = frozenset({STALENESS_KEY, "user-agent"})
_POST_CONTEXT = "/coordd.v1.ContextService/PostContext"
_SEARCH_MEMORY = "/coordd.v1.MemoryService/SearchMemory"
_CONTEXT_READS = frozenset(
    {"/coordd.v1.ContextService/ReadContext", "/coordd.v1.ContextService/SubscribeContext"}
)
_LOCAL_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _passable(trailing: Any) -> tuple[tuple[str, str | bytes], ...]:
    """Trailing metadata to hand back to the agent (status details included)."""
    return tuple((k, v) for k, v in (trailing or ()) if not k.startswith(":"))


def _unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """Upstream (or its database) could not be reached, as opposed to an answer."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    reason = getattr(rpc_status.from_rpc_error(exc), "reason", "")
    return reason in ("UNAVAILABLE", "STORAGE_UNAVAILABLE")


class Upstream:
    """The channel to the daemon and the agent identity every call carries."""

    def __init__(self, channel: grpc.aio.Channel, identity: tuple[tuple[str, str], ...]) -> None:
        self.channel = channel
        self.identity = identity
        self._unary: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}

    def unary(self, path: str) -> Any:
        if (call := self._unary.get(path)) is None:
            call = self._unary[path] = self.channel.unary_unary(path, None, None)
        return call

    def server_stream(self, path: str) -> Any:
        key = "s" + path
        if (call := self._streams.get(key)) is None:
            call = self._streams[key] = self.channel.unary_stream(path, None, None)
        return call

    def bidi(self, path: str) -> Any:
        key = "b" + path
        if (call := self._streams.get(key)) is None:
            call = self._streams[key] = self.channel.stream_stream(path, None, None)
        return call


class Proxy(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Serves every coordd method (and any other) for one agent."""

    def __init__(
        self,
        upstream: Upstream,
        session: Session,
        cache: SessionCache | None,
        *,
        agent_id: str,
        tracing: bool,
    ) -> None:
        self._upstream = upstream
        self._session = session
        self._cache = cache
        self._agent_id = agent_id
        self._tracing = tracing
        self._strip = _IDENTITY_KEYS | _OWN_KEYS | (_TRACE_KEYS if tracing else frozenset())
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}
        self._rewrites: dict[str, Callable[[bytes], bytes]] = {}

    # --------------------------------------------------------------- dispatch

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        path: str = handler_call_details.method
        if path.startswith(_LOCAL_PREFIXES):
            return None
        if path not in self._handlers:
            self._handlers[path] = self._handler(path)
        return self._handlers[path]

    def _handler(self, path: str) -> grpc.RpcMethodHandler[Any, Any]:
        m = methods().get(path)
        if path == SESSION_METHOD:
            return self._session_stream()
        if m is not None and m.unary:
            if self._cache is not None and path in CACHED_METHODS:
                return grpc.unary_unary_rpc_method_handler(partial(self._cached, m))
            return grpc.unary_unary_rpc_method_handler(partial(self._unary, m))
        if m is not None and m.server_streaming and not m.client_streaming:
            return grpc.unary_stream_rpc_method_handler(partial(self._server_stream, m))
        # Anything else (client or bidi streams, methods newer than this sidecar): every gRPC
        # cardinality is the same on the wire, so a bidirectional byte pipe carries them all.
        return grpc.stream_stream_rpc_method_handler(partial(self._pipe, path))

    def _session_stream(self) -> grpc.RpcMethodHandler[Any, Any]:
        """The session stream served here: each tagged request runs the same handler as its
        unary call (cache included), so agents on the stream lose nothing."""
        handlers = {}
        for path, m in methods().items():
            if m.unary:
                unary = self._handler(path).unary_unary
                handlers[path] = UnaryHandler(bytes, unary, bytes)  # type: ignore[arg-type]
        # Traced, each tagged request gets its server span from its own traceparent, so an
        # agent call on the stream is still one trace through the sidecar.
        servicer = SessionServicer(handlers, traced=self._tracing)
        return grpc.stream_stream_rpc_method_handler(
            servicer.Session,
            request_deserializer=session_pb.SessionRequest.FromString,
            response_serializer=session_pb.SessionResponse.SerializeToString,
        )

    # --------------------------------------------------------------- identity

    async def _outgoing(self, ctx: Ctx) -> tuple[tuple[str, str | bytes], ...]:
        """The agent's metadata without identity keys, plus the sidecar's identity.

        An agent naming another agent id is refused: the sidecar acts for one agent only.
        """
        kept: list[tuple[str, str | bytes]] = []
        for key, value in ctx.invocation_metadata() or ():
            if key == AGENT_ID_KEY and value and self._agent_id and value != self._agent_id:
                err = UnauthenticatedError(
                    f"this sidecar acts for agent {self._agent_id!r} only; "
                    f"it does not forward calls as {value!r}"
                )
                await _abort(ctx, err)
            if key in self._strip or key.startswith(("grpc-", ":")):
                continue
            kept.append((key, value))
        return (*kept, *self._upstream.identity)

    # --------------------------------------------------------------- unary

    async def _unary(self, m: Method, raw: bytes, ctx: Ctx) -> bytes:
        metadata = await self._outgoing(ctx)
        response = await self._forward(m.path, self._rewrite(m, raw), metadata, ctx)
        self._observe(m, response)
        return response

    async def _forward(
        self, path: str, raw: bytes, metadata: Any, ctx: Ctx, *, passthrough: bool = True
    ) -> bytes:
        started = time.perf_counter()
        try:
            response: bytes = await self._upstream.unary(path)(
                raw, metadata=metadata, timeout=ctx.time_remaining()
            )
            return response
        except grpc.aio.AioRpcError as exc:
            if not passthrough:
                raise
            await ctx.abort(exc.code(), exc.details() or "", _passable(exc.trailing_metadata()))
            raise  # unreachable: abort raises
        finally:
            if self._cache is not None:
                self._cache.record_upstream(started, path)

    async def _cached(self, m: Method, raw: bytes, ctx: Ctx) -> bytes:
        assert self._cache is not None
        metadata = await self._outgoing(ctx)
        try:
            tolerated = _tolerated_staleness(ctx)
        except InvalidArgumentError as err:
            await _abort(ctx, err)
        request = m.request.FromString(raw)
        stamp_min_revision(request, self._session)
        hit = self._cache.lookup(m.path, request)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("coordd.cache.hit", hit is not None)
        if hit is not None:
            header = hit.header  # type: ignore[attr-defined]
            self._session.observe(header.namespace, header.revision)
            return self._cache.raw(m.path, request) or hit.SerializeToString()
        floors = self._cache.floors(m.path, request)
        try:
            answer = await self._forward(
                m.path, request.SerializeToString(), metadata, ctx, passthrough=False
            )
        except grpc.aio.AioRpcError as exc:
            if tolerated is not None and _unreachable(exc):
                stale = self._cache.stale(m.path, request, tolerated)
                if stale is not None:
                    await ctx.send_initial_metadata(((CACHE_AGE_KEY, f"{stale.age_s:.3f}"),))
                    return stale.raw or stale.response.SerializeToString()
            await ctx.abort(exc.code(), exc.details() or "", _passable(exc.trailing_metadata()))
            raise
        response = m.response.FromString(answer)
        header = response.header  # type: ignore[attr-defined]
        self._session.observe(header.namespace, header.revision)
        self._cache.store(m.path, request, response, raw=answer, floors=floors)
        return answer

    # --------------------------------------------------------------- streams

    async def _server_stream(self, m: Method, raw: bytes, ctx: Ctx) -> AsyncIterator[bytes]:
        metadata = await self._outgoing(ctx)
        call = self._upstream.server_stream(m.path)(
            self._rewrite(m, raw), metadata=metadata, timeout=ctx.time_remaining()
        )
        try:
            async for message in call:
                self._observe(m, message)
                yield message
        except grpc.aio.AioRpcError as exc:
            await ctx.abort(exc.code(), exc.details() or "", _passable(exc.trailing_metadata()))
        finally:
            call.cancel()

    async def _pipe(
        self, path: str, requests: AsyncIterator[bytes], ctx: Ctx
    ) -> AsyncIterator[bytes]:
        metadata = await self._outgoing(ctx)
        call = self._upstream.bidi(path)(requests, metadata=metadata, timeout=ctx.time_remaining())
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            await ctx.abort(exc.code(), exc.details() or "", _passable(exc.trailing_metadata()))
        finally:
            call.cancel()

    # --------------------------------------------------------------- session

    def _rewrite(self, m: Method, raw: bytes) -> bytes:
        """Stamp the session onto a request where it has a field for it; else the same bytes."""
        fields = m.request.DESCRIPTOR.fields_by_name
        if "min_revision" in fields:
            request = m.request.FromString(raw)
            before = request.min_revision  # type: ignore[attr-defined]
            if stamp_min_revision(request, self._session) != before:
                return request.SerializeToString()
        elif m.path == _POST_CONTEXT:
            request = m.request.FromString(raw)
            vector = request.sender_vector.revisions  # type: ignore[attr-defined]
            for ns, rev in self._session.vector.items():
                if rev > vector.get(ns, 0):
                    vector[ns] = rev
            return request.SerializeToString()
        elif m.path == _SEARCH_MEMORY:
            request = m.request.FromString(raw)
            prefixes = list(request.namespace_prefixes)  # type: ignore[attr-defined]
            vector = request.min_revisions.revisions  # type: ignore[attr-defined]
            for ns, rev in self._session.vector.items():
                under = any(ns == p or ns.startswith(p + "/") for p in prefixes)
                if under and rev > vector.get(ns, 0):
                    vector[ns] = rev
            return request.SerializeToString()
        return raw

    def _observe(self, m: Method, raw: bytes) -> None:
        """Fold an answer into the session: its header, and context senders' vectors."""
        if m.path in _CONTEXT_READS:
            response: Message = m.response.FromString(raw)
            entries = getattr(response, "entries", None)
            if entries is None:
                entries = [response.entry]  # type: ignore[attr-defined]
            for entry in entries:
                self._session.merge(dict(entry.sender_vector.revisions))
            header = response.header  # type: ignore[attr-defined]
            self._session.observe(header.namespace, header.revision)
            return
        with contextlib.suppress(DecodeError):  # not a coordd response: nothing to fold in
            self._session.observe(*header_of(raw))


def _tolerated_staleness(ctx: Ctx) -> float | None:
    """Seconds of staleness the request tolerates (``coordd-max-staleness``), or None.

    Raises InvalidArgumentError for a value that is not a number of seconds >= 0.
    """
    for key, value in ctx.invocation_metadata() or ():
        if key == STALENESS_KEY:
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < math.inf:
                raise InvalidArgumentError.single(
                    STALENESS_KEY, f"must be a number of seconds >= 0, got {str(value)[:40]!r}"
                )
            return seconds
    return None


async def _abort(ctx: Ctx, err: CoorddError) -> None:
    status = rpc_status.to_status(err)
    await ctx.abort(
        err.code,
        err.message,
        trailing_metadata=((rpc_status.STATUS_DETAILS_KEY, status.SerializeToString()),),
    )
