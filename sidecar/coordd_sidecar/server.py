"""The sidecar process: a gRPC server in front of one agent, a channel to the daemon behind."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordd import telemetry
from coordd.server.binding import bind, ensure_can_listen
from coordd.v1 import watch_service_pb2_grpc
from coordd_client import Session, _grpc_wakeups
from coordd_client._cache import SessionCache
from coordd_client._methods import service_names
from coordd_client._session_stream import SessionChannel

from .config import SidecarConfig
from .proxy import Proxy, Upstream

logger = logging.getLogger(__name__)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _socket_path(listen: str) -> Path | None:
    if not listen.startswith("unix:"):
        return None
    return Path(listen.removeprefix("unix://").removeprefix("unix:"))


class Sidecar:
    """One agent's sidecar. ``await start()``, then ``address``; ``await stop()``."""

    def __init__(self, config: SidecarConfig) -> None:
        config.validate()
        self.config = config
        self.session = Session()
        self.cache: SessionCache | None = None
        self.upstream: SessionChannel | None = None
        """The session stream to the daemon (its ``stats`` say how calls were carried)."""
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._health = health.HealthServicer(experimental_non_blocking=True)

    def _identity(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = []
        if self.config.agent_id:
            md.append(("coordd-agent-id", self.config.agent_id))
        if self.config.role:
            md.append(("coordd-agent-role", self.config.role))
        if self.config.token_file is not None:
            token = self.config.token_file.read_text().strip()
            md.append(("authorization", f"Bearer {token}"))
        return tuple(md)

    def _open_channel(self) -> grpc.aio.Channel:
        c = self.config
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 4 << 20),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        interceptors = telemetry.client_interceptors()
        if not c.tls:
            return grpc.aio.insecure_channel(c.upstream, options=options, interceptors=interceptors)
        if c.tls_server_name:
            options.append(("grpc.ssl_target_name_override", c.tls_server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(c.tls_ca),
            private_key=_read(c.tls_key),
            certificate_chain=_read(c.tls_cert),
        )
        return grpc.aio.secure_channel(
            c.upstream, credentials, options=options, interceptors=interceptors
        )

    async def start(self) -> None:
        """Bind the listener and start serving (the daemon need not be up yet)."""
        tracing = telemetry.tracing_configured()
        identity = self._identity()
        self._channel = self._open_channel()
        if self.config.cache.max_bytes > 0:
            watch = watch_service_pb2_grpc.WatchServiceStub(self._channel).Watch
            self.cache = SessionCache(
                self.config.cache, self.session, lambda req: watch(req, metadata=identity)
            )
        # Unary calls upstream ride one session stream when the daemon offers it (several
        # times cheaper per call on both ends than unary calls); streams use the channel.
        # Concurrent calls of the agent share its messages both ways when the daemon reads
        # batches (the agent's own session stream to this sidecar batches the same way).
        upstream = self.upstream = SessionChannel(self._channel, identity)
        proxy = Proxy(
            Upstream(upstream, identity),  # type: ignore[arg-type]
            self.session,
            self.cache,
            agent_id=self.config.agent_id,
            tracing=tracing,
        )
        server = grpc.aio.server(
            interceptors=telemetry.server_interceptors(tracing),
            options=[("grpc.max_receive_message_length", 4 << 20)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = service_names()
        for name in ("", *names):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        server.add_generic_rpc_handlers([proxy])
        listen = self.config.listen
        sock = _socket_path(listen)
        if sock is not None:
            sock.parent.mkdir(parents=True, exist_ok=True)
            sock.unlink(missing_ok=True)  # a socket left by a previous run
            bind(server.add_insecure_port, f"unix:{sock}")
        else:
            ensure_can_listen(listen)  # one line naming the reason, not gRPC's bind error
            port = bind(server.add_insecure_port, listen)
            listen = f"{listen.rpartition(':')[0]}:{port}"
        await server.start()
        # One loop iteration per batch of gRPC completions (channel and server share it).
        _grpc_wakeups.install()
        if sock is not None:
            # The agent may run as another user in the pod (the socket's directory is private).
            os.chmod(sock, 0o666)
        self._server = server
        self.address = listen
        logger.info(
            "coordd-sidecar for agent %r listening on %s, upstream %s (cache %s)",
            self.config.agent_id or "(from token/certificate)",
            listen,
            self.config.upstream,
            f"{self.config.cache.max_bytes} bytes" if self.cache else "off",
        )

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: timedelta | None = None) -> None:
        """Stop serving (in-flight calls get *grace*), the cache's watches, the channel."""
        self._health.enter_graceful_shutdown()
        if self._server is not None:
            seconds = (grace or timedelta(seconds=self.config.grace_s)).total_seconds()
            await self._server.stop(seconds)
        if self.cache is not None:
            await self.cache.close()
        if self._channel is not None:
            await self._channel.close(None)
        sock = _socket_path(self.config.listen)
        if sock is not None:
            sock.unlink(missing_ok=True)
