"""The channel, identity metadata, error translation and session bookkeeping of a client."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import grpc

from coordd import rpc_status, telemetry
from coordd.errors import StorageUnavailableError, UnavailableError
from coordd.v1 import watch_service_pb2_grpc

from . import _grpc_wakeups
from ._cache import CACHED_METHODS, CacheConfig, SessionCache
from ._convert import seconds
from ._methods import method_of
from ._models import TLSConfig
from ._session import Session, stamp_min_revision
from ._session_stream import SessionChannel

DEFAULT_TARGET = "127.0.0.1:7420"
DEFAULT_TIMEOUT = timedelta(seconds=10)

Resp = TypeVar("Resp")
T = TypeVar("T")


class Core:
    """What every service wrapper of one client shares."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        agent_id: str,
        role: str,
        token: str | None,
        timeout: timedelta,
        cache: CacheConfig | None = None,
        session_stream: bool = True,
    ) -> None:
        self.agent_id = agent_id
        self.role = role
        self.timeout = timeout
        self.session = Session()
        # No agent id with a token or a certificate: the daemon takes it from the credential.
        md: list[tuple[str, str]] = [("coordd-agent-id", agent_id)] if agent_id else []
        if role:
            md.append(("coordd-agent-role", role))
        if token:
            md.append(("authorization", f"Bearer {token}"))
        self.metadata = tuple(md)
        self.cache: SessionCache | None = None
        if cache is not None:
            watch = watch_service_pb2_grpc.WatchServiceStub(channel).Watch
            self.cache = SessionCache(
                cache, self.session, lambda req: watch(req, metadata=self.metadata)
            )
        # Unary calls ride one session stream when the server offers it (several times
        # cheaper per call on both ends); streams and servers without it use the channel.
        self.channel: grpc.aio.Channel = (
            SessionChannel(channel, self.metadata)  # type: ignore[assignment]
            if session_stream
            else channel
        )

    async def call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        timeout: timedelta | float | None = None,
    ) -> Resp:
        """Call *method*, translate errors to ``CoorddError``, fold the header into the session.

        Reads that take ``min_revision`` carry at least the session's revision (read your
        writes and monotonic reads from any replica, sidecar or cache).
        """
        stamp_min_revision(request, self.session)
        if self.cache is not None and (m := method_of(request)) and m.path in CACHED_METHODS:
            return await self._cached(m.path, method, request, timeout)
        return await self._send(method, request, timeout)

    def decoded(self, response: Any, decode: Callable[[Any], T]) -> T:
        """``decode(response)``, done once per cached answer (the embedded cache's hits then
        return the same decoded object: treat it as read-only)."""
        if self.cache is None:
            return decode(response)
        return cast(T, self.cache.decoded(response, decode))

    async def _cached(
        self,
        path: str,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        timeout: timedelta | float | None,
    ) -> Resp:
        """The embedded session cache's read path (see ``_cache``)."""
        assert self.cache is not None
        hit = self.cache.lookup(path, request)
        if hit is not None:
            return hit  # type: ignore[return-value]
        floors = self.cache.floors(path, request)
        started = time.perf_counter()
        try:
            response = await self._send(method, request, timeout)
        except (UnavailableError, StorageUnavailableError):
            tolerated = self.cache.config.max_staleness
            if tolerated is not None:
                stale = self.cache.stale(path, request, tolerated.total_seconds())
                if stale is not None:
                    return stale.response  # type: ignore[return-value]
            raise
        self.cache.record_upstream(started, path)
        self.cache.store(path, request, response, floors=floors)  # type: ignore[arg-type]
        return response

    async def _send(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        timeout: timedelta | float | None = None,
    ) -> Resp:
        try:
            response = await method(
                request,
                metadata=self.metadata,
                timeout=seconds(timeout if timeout is not None else self.timeout),
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_status.from_rpc_error(exc) from exc
        header = getattr(response, "header", None)
        if header is not None:
            self.session.observe(header.namespace, header.revision)
        return response

    async def stream(self, method: Callable[..., Any], request: Any) -> AsyncGenerator[Any, None]:
        """Iterate a server stream, translating errors and folding headers into the session."""
        call = method(request, metadata=self.metadata)
        try:
            async for response in call:
                header = getattr(response, "header", None)
                if header is not None:
                    self.session.observe(header.namespace, header.revision)
                yield response
        except grpc.aio.AioRpcError as exc:
            raise rpc_status.from_rpc_error(exc) from exc
        finally:
            call.cancel()


class Service:
    """What every ``client.<service>`` wrapper shares: the core, and its gRPC service's stub."""

    stub_class: ClassVar[type[Any]]
    """The generated stub of the service (``ClaimServiceStub``, ...); a subclass annotates
    ``_stub`` with its typed face (``ClaimServiceAsyncStub``)."""
    _stub: Any

    def __init__(self, core: Core) -> None:
        self._core = core
        self._stub = self.stub_class(core.channel)


def read_token(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    """The bearer token: *token*, or the content of *token_file* (whitespace stripped).

    The token is never logged, and errors name the file, never its content.
    """
    if token_file is None:
        return token
    if token is not None:
        raise ValueError("pass token or token_file, not both")
    try:
        text = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read token_file {os.fspath(token_file)!r}: {exc}") from None
    if not text:
        raise ValueError(f"token_file {os.fspath(token_file)!r} is empty")
    return text


def resolve_target(target: str | None) -> str:
    """The gRPC target for *target*, ``$COORDD_ADDR`` or ``127.0.0.1:7420``, in that order.

    A Unix socket may be given as a path (``/var/run/coordd/sidecar.sock``, as sidecar
    injection sets ``COORDD_ADDR``) or as ``unix:///path``; anything else is ``host:port``.
    """
    target = target or os.environ.get("COORDD_ADDR") or DEFAULT_TARGET
    if target.startswith(("/", "./", "~")):
        return f"unix:{os.path.abspath(os.path.expanduser(target))}"
    return target


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


async def open_channel(
    target: str | None, connect_timeout: timedelta, tls: TLSConfig | None = None
) -> grpc.aio.Channel:
    """Open a channel to *target* (default: $COORDD_ADDR or 127.0.0.1:7420), TLS if given."""
    target = resolve_target(target)
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 4 << 20),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    interceptors = telemetry.client_interceptors()
    if tls is None:
        channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca_file),
            private_key=_read(tls.key_file),
            certificate_chain=_read(tls.cert_file),
        )
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=interceptors
        )
    # gRPC has bound this loop to its completion queue now: one loop iteration per batch
    # of completions instead of one per completion (see _grpc_wakeups).
    _grpc_wakeups.install()
    try:
        await _wait_ready(channel, connect_timeout)
    except BaseException:
        await channel.close(None)
        raise
    return channel


async def _wait_ready(channel: grpc.aio.Channel, timeout: timedelta) -> None:
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout.total_seconds())
    except TimeoutError:
        raise UnavailableError(
            f"could not reach coordd within {timeout.total_seconds():g}s"
        ) from None
