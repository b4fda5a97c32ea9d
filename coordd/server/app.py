"""The daemon: storage, services, gRPC server, sweeper, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, cast

import grpc
from google.protobuf.descriptor_pool import Default as default_descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordd import audit, telemetry
from coordd.config import ConfigError, Settings, StartupError
from coordd.domain.access import OPEN_POLICY, Policy, load_policy
from coordd.domain.claims import ClaimService
from coordd.errors import CoorddError
from coordd.server.binding import bind, ensure_can_listen
from coordd.server.interceptors import Authenticator, CoorddServerInterceptor
from coordd.server.method_table import MethodTable
from coordd.server.registry import SERVICES, Parts
from coordd.server.session import SessionServicer, UnaryHandler, servicer_handlers
from coordd.session_batch import MAX_BATCH_BYTES
from coordd.storage.batching import WriteBatcher
from coordd.storage.db import Database
from coordd.storage.embedded import EmbeddedPostgres
from coordd.storage.memory_index import MemoryIndexer
from coordd.storage.migrate import migrate
from coordd.storage.notify import ChangeNotifier
from coordd.storage.quotas import QuotaStore
from coordd.storage.vector_index import VectorIndex
from coordd.v1 import session_service_pb2_grpc
from coordd_client import _grpc_wakeups

logger = logging.getLogger(__name__)
DESCRIPTOR_POOL = default_descriptor_pool()

SERVICE_NAMES = (*(entry.name for entry in SERVICES), "coordd.v1.SessionService")


class Daemon:
    """One coordd process. ``await start()``, then ``await stop()`` (or ``serve_forever()``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.dsn = settings.dsn or ""
        self._embedded: EmbeddedPostgres | None = None
        self._db: Database | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._indexer_ready = False
        self.health_port = 0
        self._session: SessionServicer | None = None
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self._sweeper: asyncio.Task[None] | None = None
        # Housekeeping run every sweep interval: name -> coroutine returning rows affected.
        self._sweeps: dict[str, Callable[[], Awaitable[int]]] = {}
        self.notifier: ChangeNotifier | None = None
        self.indexer: MemoryIndexer | None = None
        # Each service's domain object, by service name (see coordd.server.registry).
        self.domains: dict[str, Any] = {}
        self._audit_handler: logging.Handler | None = None
        self._policy_in_force: Policy | None = None
        self.quota_store: QuotaStore | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def services(self) -> tuple[str, ...]:
        """The coordd services this daemon serves."""
        if self.settings.session_stream:
            return SERVICE_NAMES
        return tuple(n for n in SERVICE_NAMES if not n.endswith(".SessionService"))

    @property
    def claim_service(self) -> ClaimService:
        """The claim domain service (tests drive its waiting queues directly)."""
        service: ClaimService = self.domains["coordd.v1.ClaimService"]
        return service

    @property
    def address(self) -> str:
        host = self.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def _policy(self) -> Policy:
        if self.settings.policy_file is None:
            return OPEN_POLICY
        try:
            return load_policy(self.settings.policy_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc

    async def start(self) -> None:
        """Start storage, services and the listener; on failure, undo what was started.

        Raises:
            ConfigError: settings that cannot work (address in use, data directory taken...).
            StorageUnavailableError: PostgreSQL cannot be reached or started.
        """
        try:
            await self._start()
        except (ConfigError, CoorddError):
            await self._abort_start()
            raise
        except Exception as exc:
            await self._abort_start()
            logger.debug("start failed", exc_info=True)
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise StartupError(
                f"cannot start: {type(exc).__name__}: {reason} "
                "(--log-level debug shows the traceback)"
            ) from exc
        except BaseException:  # Ctrl-C while starting: undo, then let it through
            await self._abort_start()
            raise

    async def _abort_start(self) -> None:
        for server in (self._server, self._health_server):
            if server is not None:
                await server.stop(0)
        self._server = self._health_server = None
        # The indexer saves its index on stop: only one that was loaded in full.
        await self._stop_background(stop_indexer=self._indexer_ready)

    async def _start(self) -> None:
        s = self.settings
        # Before anything slow (PostgreSQL, migrations, the index): a taken port fails at once.
        ensure_can_listen(s.listen)
        if s.health_listen is not None:
            ensure_can_listen(s.health_listen)
        policy = self._policy()
        self._policy_in_force = policy if s.policy_file is not None else None
        # Audit events are kept whatever the log level: they are a record, not diagnostics.
        audit.logger.setLevel(logging.INFO)
        if s.audit_log is not None:
            try:
                self._audit_handler = audit.to_file(s.audit_log)
            except OSError as exc:
                raise ConfigError(f"cannot open audit log {s.audit_log}: {exc}") from exc
        if not self.dsn:
            self._embedded = EmbeddedPostgres(s.data_dir)
            self.dsn = await asyncio.to_thread(self._embedded.start)
        applied = await migrate(self.dsn)
        if applied:
            logger.info("applied migrations: %s", ", ".join(applied))
        self._db = Database(
            self.dsn, min_size=s.pool_min, max_size=s.pool_max, connect_timeout_s=s.pool_timeout_s
        )
        await self._db.open()
        self.quota_store = QuotaStore(self._db)
        if self._policy_in_force is not None:
            await self.quota_store.replace(self._policy_in_force.quotas)
        self.notifier = ChangeNotifier(self._db, s.server_id)
        index_dir = s.index_dir or (s.data_dir / "index" if self._embedded else None)
        self.indexer = MemoryIndexer(self._db, VectorIndex(), index_dir)
        notifier, indexer = self.notifier, self.indexer

        def written(namespace: str, memory: bool) -> None:
            notifier.wake(namespace)
            if memory:  # claims, idempotency and context writes leave the index alone
                indexer.dirty(namespace)

        # One write batcher for the daemon: writes to a namespace group-commit together,
        # whichever service they come from; each write wakes the streams that follow it and
        # the vector index.
        self.writes = WriteBatcher(self._db, on_write=written)
        tracing = telemetry.setup_tracing("coordd", os.environ)
        options = [
            # gRPC itself refuses only past a hard ceiling (bare RESOURCE_EXHAUSTED); up to it
            # the interceptor answers MESSAGE_TOO_LARGE with the limit, after authentication.
            ("grpc.max_receive_message_length", 4 * s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        interceptor = CoorddServerInterceptor(Authenticator(s.auth, policy), s.max_message_bytes)
        self.interceptor = interceptor
        server = grpc.aio.server(
            interceptors=[*telemetry.server_interceptors(tracing), interceptor],
            options=options,
        )
        await self.indexer.start()
        self._indexer_ready = True
        parts = Parts(s, policy, self._db, self.writes, self.notifier, self.indexer)
        # Every service joins one method table, served as one generic handler: registered
        # methods would cost each call an asyncio.wait over all of them (see method_table).
        table = MethodTable()
        unary: list[tuple[object, str]] = []  # also served on the session stream
        for entry in SERVICES:
            wired = entry.wire(parts)
            entry.add_to_server(wired.servicer, table)
            if entry.unary:
                unary.append((wired.servicer, entry.name))
            self._sweeps.update(wired.sweeps)
            self.domains[entry.name] = wired.domain
        if s.session_stream:
            handlers: dict[str, UnaryHandler] = {}
            for servicer, name in unary:
                service = DESCRIPTOR_POOL.FindServiceByName(name)
                handlers.update(servicer_handlers(servicer, service, interceptor.wrap_unary))
            # Batched answers stay within what this server may send in one message.
            batch_bytes = min(MAX_BATCH_BYTES, s.max_message_bytes)
            self._session = SessionServicer(handlers, traced=tracing, max_batch_bytes=batch_bytes)
            # The table takes the two calls generated code makes on a server.
            session_service_pb2_grpc.add_SessionServiceServicer_to_server(
                self._session, cast(grpc.aio.Server, table)
            )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, table)
        server.add_generic_rpc_handlers((table,))
        for name in ("", *self.services):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.reflection:
            reflection.enable_server_reflection(
                (*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        self.port = self._listen(server)
        await server.start()
        self._server = server
        if s.grpc_wake_drain:
            # Completions that arrive together run in one loop iteration, not one each.
            _grpc_wakeups.install()
        if s.health_listen is not None:
            await self._start_health_listener(s.health_listen)
        await self.notifier.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="coordd-sweeper")
        logger.info("coordd serving on %s (server id %s)", self.address, s.server_id)

    async def _start_health_listener(self, address: str) -> None:
        # The kubelet's gRPC probes speak plaintext only; this listener shares the health
        # servicer (so graceful shutdown reads NOT_SERVING here too) and serves nothing else.
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.health_port = bind(server.add_insecure_port, address)
        await server.start()
        self._health_server = server
        logger.info("gRPC health (plaintext, health only) on %s", address)

    def _listen(self, server: grpc.aio.Server) -> int:
        s = self.settings
        if not s.tls:
            return bind(server.add_insecure_port, s.listen)
        assert s.tls_cert_file is not None and s.tls_key_file is not None
        try:
            key = s.tls_key_file.read_bytes()
            chain = s.tls_cert_file.read_bytes()
            client_ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
        except OSError as exc:
            raise ConfigError(f"cannot read TLS files: {exc}") from exc
        credentials = grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=client_ca,
            require_client_auth=s.auth == "mtls",
        )
        return bind(server.add_secure_port, s.listen, credentials)

    async def sweep_once(self) -> dict[str, int]:
        """Run every housekeeping sweep once (expired claims, purged keys, ...).

        Traced only when it did something: one ``coordd.sweep`` span with the counts.
        """
        started = time.time_ns()
        with telemetry.untraced():
            counts = {name: await sweep() for name, sweep in self._sweeps.items()}
        if any(counts.values()):
            telemetry.record_work("sweep", started, counts)
        return counts

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                counts = await self.sweep_once()
                if any(counts.values()):
                    logger.debug("sweep: %s", counts)
            except Exception:  # the sweeper must outlive a database hiccup
                logger.warning("sweep failed; retrying next interval", exc_info=True)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, give in-flight ones *grace* seconds, then close storage."""
        grace = self.settings.grace_s if grace is None else grace
        self._health.enter_graceful_shutdown()
        if self.notifier is not None:
            # Streams (Watch, SubscribeContext) and agreement waits have no natural end: end
            # them now with UNAVAILABLE (clients resume from their cursor) instead of letting
            # each one hold the shutdown for the whole grace.
            self.notifier.close()
        if self._session is not None:
            self._session.close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        await self._stop_background(stop_indexer=True)
        logger.info("coordd stopped")

    async def _stop_background(self, *, stop_indexer: bool) -> None:
        """Once the listeners are down: stop the sweeper, the notifier and (if asked) the
        indexer, close storage and detach the audit log (a stop, and an aborted start)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.notifier is not None:
            await self.notifier.stop()
        if stop_indexer and self.indexer is not None:
            await self.indexer.stop()
        await self._close_storage()
        if self._audit_handler is not None:
            audit.detach(self._audit_handler)
            self._audit_handler = None

    async def _close_storage(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    def reload_policy(self) -> bool:
        """Read the policy file again (SIGHUP) and apply it to every call from now on; open
        connections and streams are kept. A file that does not load keeps the old policy and
        logs one line saying why. Returns whether the new policy took effect."""
        path = self.settings.policy_file
        if path is None or self._policy_in_force is None:
            logger.warning("SIGHUP: no --policy file to reload")
            return False
        try:
            fresh = load_policy(path)
        except (OSError, ValueError) as exc:
            problem = " ".join(str(exc).split())
            logger.error("policy reload failed, keeping the policy in force: %s", problem)
            return False
        self._policy_in_force.adopt(fresh)
        if self.quota_store is not None:
            task = asyncio.get_running_loop().create_task(self._apply_quotas(fresh))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        logger.info(
            "policy reloaded from %s: %d grants, %d agents",
            path,
            len(fresh.grants),
            len(fresh.tokens),
        )
        return True

    async def _apply_quotas(self, policy: Policy) -> None:
        assert self.quota_store is not None
        try:
            await self.quota_store.replace(policy.quotas)
        except Exception:  # the grants are in force; quotas follow on the next reload
            logger.error("policy reload: could not store the quotas", exc_info=True)

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        # Handlers first: a SIGTERM that arrives while starting (or just after "serving on")
        # must still stop gracefully and save the index snapshot, not kill the process (the
        # next start would then rebuild the whole index).
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        loop.add_signal_handler(signal.SIGHUP, self.reload_policy)
        # Per call the daemon allocates many short-lived containers; with the default
        # threshold (700) the collector ran often enough to show in profiles (3.5 % of the
        # daemon's CPU under bench claims). Everything alive after start-up (modules,
        # descriptors, pools) is moved out of the collector's way for good.
        gc.freeze()
        gc.set_threshold(20_000, 50, 50)
        await stopping.wait()
        logger.info("signal received: shutting down (grace %.1fs)", self.settings.grace_s)
        await self.stop()
