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
from datetime import timedelta

import grpc
from google.protobuf.descriptor_pool import Default as default_descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordd import audit, telemetry
from coordd.config import ConfigError, Settings, StartupError
from coordd.domain.access import OPEN_POLICY, Policy, load_policy
from coordd.domain.admin import AdminService
from coordd.domain.agreements import AgreementService
from coordd.domain.claims import ClaimService
from coordd.domain.context import ContextService
from coordd.domain.gate import GateService
from coordd.domain.idempotency import IdempotencyService
from coordd.domain.memory import MemorySearch
from coordd.domain.watch import WatchService
from coordd.errors import CoorddError
from coordd.server.admin_servicer import AdminServicer
from coordd.server.agreement_servicer import AgreementServicer
from coordd.server.binding import bind, ensure_can_listen
from coordd.server.claim_servicer import ClaimServicer
from coordd.server.context_servicer import ContextServicer
from coordd.server.gate_servicer import GateServicer
from coordd.server.idempotency_servicer import IdempotencyServicer
from coordd.server.interceptors import Authenticator, CoorddServerInterceptor
from coordd.server.memory_servicer import MemoryServicer
from coordd.server.session import SessionServicer, UnaryHandler, servicer_handlers
from coordd.server.watch_servicer import WatchServicer
from coordd.storage.admin import AdminStore
from coordd.storage.agreements import AgreementStore
from coordd.storage.batching import WriteBatcher
from coordd.storage.changes import ChangeStore
from coordd.storage.claims import ClaimStore
from coordd.storage.context import ContextStore
from coordd.storage.db import Database
from coordd.storage.embedded import EmbeddedPostgres
from coordd.storage.gate import GateStore
from coordd.storage.idempotency import IdempotencyStore
from coordd.storage.memory import MemoryStore
from coordd.storage.memory_index import MemoryIndexer
from coordd.storage.migrate import migrate
from coordd.storage.notify import ChangeNotifier
from coordd.storage.vector_index import VectorIndex
from coordd.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    agreement_service_pb2,
    agreement_service_pb2_grpc,
    claim_service_pb2,
    claim_service_pb2_grpc,
    context_service_pb2,
    context_service_pb2_grpc,
    gate_service_pb2,
    gate_service_pb2_grpc,
    idempotency_service_pb2,
    idempotency_service_pb2_grpc,
    memory_service_pb2,
    memory_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    watch_service_pb2,
    watch_service_pb2_grpc,
)

logger = logging.getLogger(__name__)
DESCRIPTOR_POOL = default_descriptor_pool()

SERVICE_NAMES = (
    claim_service_pb2.DESCRIPTOR.services_by_name["ClaimService"].full_name,
    idempotency_service_pb2.DESCRIPTOR.services_by_name["IdempotencyService"].full_name,
    context_service_pb2.DESCRIPTOR.services_by_name["ContextService"].full_name,
    memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
    watch_service_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name,
    agreement_service_pb2.DESCRIPTOR.services_by_name["AgreementService"].full_name,
    gate_service_pb2.DESCRIPTOR.services_by_name["GateService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
)


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
        self.memory_store: MemoryStore | None = None
        self.context_store: ContextStore | None = None
        self.change_store: ChangeStore | None = None
        self.claim_store: ClaimStore | None = None
        self.claim_service: ClaimService | None = None
        self.agreement_service: AgreementService | None = None
        self.idempotency_store: IdempotencyStore | None = None
        self._audit_handler: logging.Handler | None = None

    @property
    def services(self) -> tuple[str, ...]:
        """The coordd services this daemon serves."""
        if self.settings.session_stream:
            return SERVICE_NAMES
        return tuple(n for n in SERVICE_NAMES if not n.endswith(".SessionService"))

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.notifier is not None:
            await self.notifier.stop()
        if self._indexer_ready and self.indexer is not None:
            await self.indexer.stop()  # saves the index only if it was loaded in full
        await self._close_storage()
        if self._audit_handler is not None:
            audit.detach(self._audit_handler)
            self._audit_handler = None

    async def _start(self) -> None:
        s = self.settings
        # Before anything slow (PostgreSQL, migrations, the index): a taken port fails at once.
        ensure_can_listen(s.listen)
        if s.health_listen is not None:
            ensure_can_listen(s.health_listen)
        policy = self._policy()
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
        self.claim_store = ClaimStore(self._db, self.writes)
        self.idempotency_store = IdempotencyStore(self._db, self.writes)

        tracing = telemetry.setup_tracing("coordd", os.environ)
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        interceptor = CoorddServerInterceptor(Authenticator(s.auth, policy))
        server = grpc.aio.server(
            interceptors=[*telemetry.server_interceptors(tracing), interceptor],
            options=options,
        )
        # The unary servicers, also served on the session stream through the same wrapper.
        unary: list[tuple[object, str]] = []
        self.claim_service = ClaimService(self.claim_store)
        claims = ClaimServicer(self.claim_service, policy, s.server_id)
        claim_service_pb2_grpc.add_ClaimServiceServicer_to_server(claims, server)
        unary.append((claims, "coordd.v1.ClaimService"))
        idempotency = IdempotencyServicer(
            IdempotencyService(self.idempotency_store), policy, s.server_id
        )
        idempotency_service_pb2_grpc.add_IdempotencyServiceServicer_to_server(idempotency, server)
        unary.append((idempotency, "coordd.v1.IdempotencyService"))
        self.context_store = ContextStore(self._db, self.writes)
        contexts = ContextServicer(
            ContextService(self.context_store, self.notifier), policy, s.server_id
        )
        context_service_pb2_grpc.add_ContextServiceServicer_to_server(contexts, server)
        unary.append((contexts, "coordd.v1.ContextService"))
        self.memory_store = MemoryStore(self._db, self.writes)
        await self.indexer.start()
        self._indexer_ready = True
        memory = MemoryServicer(
            self.memory_store,
            MemorySearch(self.indexer, self.memory_store, policy),
            policy,
            s.server_id,
        )
        memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(memory, server)
        unary.append((memory, "coordd.v1.MemoryService"))
        self.agreement_service = AgreementService(
            AgreementStore(self._db, self.writes), self.notifier
        )
        agreements = AgreementServicer(self.agreement_service, policy, s.server_id)
        agreement_service_pb2_grpc.add_AgreementServiceServicer_to_server(agreements, server)
        unary.append((agreements, "coordd.v1.AgreementService"))
        admin = AdminServicer(AdminService(AdminStore(self._db, self.writes)), policy, s.server_id)
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
        unary.append((admin, "coordd.v1.AdminService"))
        self.change_store = ChangeStore(self._db)
        watch_service_pb2_grpc.add_WatchServiceServicer_to_server(
            WatchServicer(WatchService(self.change_store, self.notifier), policy, s.server_id),
            server,
        )
        gate = GateServicer(GateService(GateStore(self._db)), policy, s.server_id)
        gate_service_pb2_grpc.add_GateServiceServicer_to_server(gate, server)
        unary.append((gate, "coordd.v1.GateService"))
        if s.session_stream:
            handlers: dict[str, UnaryHandler] = {}
            for servicer, name in unary:
                service = DESCRIPTOR_POOL.FindServiceByName(name)
                handlers.update(servicer_handlers(servicer, service, interceptor.wrap_unary))
            self._session = SessionServicer(handlers, traced=tracing)
            session_service_pb2_grpc.add_SessionServiceServicer_to_server(self._session, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in ("", *self.services):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.reflection:
            reflection.enable_server_reflection(
                (*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        self.port = self._listen(server)
        await server.start()
        self._server = server
        if s.health_listen is not None:
            await self._start_health_listener(s.health_listen)
        await self.notifier.start()
        self._sweeps["claims_expired"] = self._sweep_claims
        self._sweeps["idempotency_purged"] = self.idempotency_store.purge
        self._sweeps["context_purged"] = self.context_store.purge
        self._sweeps["changes_compacted"] = self._compact_changes
        self._sweeps["agreements_expired"] = self.agreement_service.sweep
        self._sweeps["agreements_purged"] = self.agreement_service.purge
        self._sweeps["memory_swept"] = self.memory_store.sweep
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

    async def _sweep_claims(self) -> int:
        assert self.claim_store is not None and self.notifier is not None
        expired = await self.claim_store.sweep()
        if expired:
            self.notifier.wake_all()  # expiries are changes Watch streams report
        return expired

    async def _compact_changes(self) -> int:
        assert self.change_store is not None
        return await self.change_store.compact(
            timedelta(seconds=self.settings.changelog_retention_s)
        )

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.notifier is not None:
            await self.notifier.stop()
        if self.indexer is not None:
            await self.indexer.stop()
        await self._close_storage()
        if self._audit_handler is not None:
            audit.detach(self._audit_handler)
            self._audit_handler = None
        logger.info("coordd stopped")

    async def _close_storage(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        # Per call the daemon allocates many short-lived containers; with the default
        # threshold (700) the collector ran often enough to show in profiles (3.5 % of the
        # daemon's CPU under bench claims). Everything alive after start-up (modules,
        # descriptors, pools) is moved out of the collector's way for good.
        gc.freeze()
        gc.set_threshold(20_000, 50, 50)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        logger.info("signal received: shutting down (grace %.1fs)", self.settings.grace_s)
        await self.stop()
