"""Unary calls carried on one session stream per connection (``SessionService.Session``).

A Python gRPC unary call costs both ends several times what one message on an open stream
does. ``SessionChannel`` wraps a ``grpc.aio.Channel`` so that generated stubs built on it send
every unary call as a tagged ``SessionRequest`` on one long-lived bidirectional stream, and
match the ``SessionResponse`` by id. Errors come back as the same status and google.rpc.Status
details a unary call would carry, raised as the same ``grpc.aio.AioRpcError``, so everything
above the stub is unchanged. Streaming methods go straight to the channel. A server without the
session service answers UNIMPLEMENTED: the channel then falls back to plain unary calls for
good.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import grpc

from coordd import rpc_status, telemetry
from coordd.v1 import session_service_pb2 as pb

SESSION_METHOD = "/coordd.v1.SessionService/Session"
_IDENTITY_KEYS = frozenset({"authorization", "coordd-agent-id", "coordd-agent-role"})
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# grpc.health.v1 HealthCheckRequest{service: "coordd.v1.SessionService"} and the answer
# HealthCheckResponse{status: SERVING}, encoded by hand: the client needs no health package.
_SESSION_SERVICE = SESSION_METHOD.split("/")[1].encode()
_HEALTH_CHECK = b"\n" + bytes([len(_SESSION_SERVICE)]) + _SESSION_SERVICE
_SERVING = b"\x08\x01"


def _expire(future: asyncio.Future[pb.SessionResponse]) -> None:
    """The request's deadline passed before its answer came."""
    if not future.done():
        future.set_exception(TimeoutError())


class _Fallback(Exception):
    """The server does not offer the session stream: use the unary call."""


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
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.channel = channel
        self._metadata = metadata
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.SessionResponse]] = {}
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._cancels: set[asyncio.Future[None]] = set()
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
        await self._reset(_rpc_error(grpc.StatusCode.CANCELLED, "channel closed"))
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
        if self._call is None:
            self._open()
        call = self._call
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.SessionResponse] = loop.create_future()
        self._pending[rid] = future
        expiry = None
        try:
            try:
                async with self._write_lock:
                    await call.write(req)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                # The stream ended before this request left: it was not sent.
                await self._reset(exc)
                if retry:  # once, on a fresh stream (the server may have restarted)
                    self._pending.pop(rid, None)
                    return await self._exchange(req, timeout, retry=False)
                raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "session stream ended") from exc
            # The deadline fails the answer's future: cheaper than a Timeout context per call.
            if timeout is not None:
                expiry = loop.call_later(timeout, _expire, future)
            resp = await future
        except TimeoutError:
            self._cancel(call, rid)
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            self._cancel(call, rid)
            raise
        finally:
            self._pending.pop(rid, None)
            if expiry is not None:
                expiry.cancel()
        if resp.code == 0:
            return resp.payload
        code = _CODES.get(resp.code, grpc.StatusCode.UNKNOWN)
        raise _rpc_error(code, resp.message, resp.status_details)

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

    def _open(self) -> None:
        self._call = self.channel.stream_stream(
            SESSION_METHOD,
            request_serializer=pb.SessionRequest.SerializeToString,
            response_deserializer=pb.SessionResponse.FromString,
        )(metadata=self._metadata)  # type: ignore[call-arg]  # requests are written
        self._reader = asyncio.ensure_future(self._read(self._call))

    async def _read(self, call: Any) -> None:
        try:
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
                    raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "session stream ended")
                if self.offered is None:
                    self.offered = True
                future = self._pending.get(resp.id)
                if future is not None and not future.done():
                    future.set_result(resp)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.offered = False
                self._fail_all(call, _Fallback())
            else:
                self._fail_all(call, exc)

    def _fail_all(self, call: Any, exc: BaseException) -> None:
        if self._call is call:  # the next call opens a fresh stream
            self._call = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)

    def _cancel(self, call: Any, rid: int) -> None:
        """Tell the server to stop working on *rid* (best effort, not awaited)."""
        if call is self._call and not call.done():

            async def send() -> None:
                with contextlib.suppress(Exception):
                    async with self._write_lock:
                        await call.write(pb.SessionRequest(id=rid, cancel=True))

            task = asyncio.ensure_future(send())
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)

    async def _reset(self, exc: BaseException) -> None:
        call, reader = self._call, self._reader
        self._call, self._reader = None, None
        if call is not None:
            call.cancel()
            self._fail_all(call, exc)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


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
