"""Every gRPC service of the daemon, wired from one table.

An entry names the service, how its servicer is added to a ``grpc.aio`` server, and how it is
built from the daemon's shared parts (pool, write batcher, notifier, vector index, policy),
with the housekeeping sweeps it owns. ``Daemon.start`` walks :data:`SERVICES`; a new service is
one entry here, a new RPC touches none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from coordd.config import Settings
from coordd.domain.access import Policy
from coordd.domain.admin import AdminService
from coordd.domain.agreements import AgreementService
from coordd.domain.claims import ClaimService
from coordd.domain.context import ContextService
from coordd.domain.gate import GateService
from coordd.domain.idempotency import IdempotencyService
from coordd.domain.memory import MemorySearch, MemoryService
from coordd.domain.watch import WatchService
from coordd.server.admin_servicer import AdminServicer
from coordd.server.agreement_servicer import AgreementServicer
from coordd.server.claim_servicer import ClaimServicer
from coordd.server.context_servicer import ContextServicer
from coordd.server.gate_servicer import GateServicer
from coordd.server.idempotency_servicer import IdempotencyServicer
from coordd.server.memory_servicer import MemoryServicer
from coordd.server.watch_servicer import WatchServicer
from coordd.storage.admin import AdminStore
from coordd.storage.agreements import AgreementStore
from coordd.storage.batching import WriteBatcher
from coordd.storage.changes import ChangeStore
from coordd.storage.claims import ClaimStore
from coordd.storage.context import ContextStore
from coordd.storage.db import Database
from coordd.storage.gate import GateStore
from coordd.storage.idempotency import IdempotencyStore
from coordd.storage.memory import MemoryStore
from coordd.storage.memory_index import MemoryIndexer
from coordd.storage.notify import ChangeNotifier
from coordd.v1 import (
    admin_service_pb2_grpc,
    agreement_service_pb2_grpc,
    claim_service_pb2_grpc,
    context_service_pb2_grpc,
    gate_service_pb2_grpc,
    idempotency_service_pb2_grpc,
    memory_service_pb2_grpc,
    watch_service_pb2_grpc,
)

Sweep = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Parts:
    """What the services of one daemon share."""

    settings: Settings
    policy: Policy
    db: Database
    writes: WriteBatcher
    notifier: ChangeNotifier
    indexer: MemoryIndexer


@dataclass(frozen=True, slots=True)
class Wired:
    """A service built for one daemon.

    Attributes:
        servicer: The gRPC servicer.
        domain: Its domain service, for the daemon's callers (tests reach claims through it).
        sweeps: Housekeeping it owns: name -> coroutine returning the rows it affected.
    """

    servicer: Any
    domain: Any = None
    sweeps: Mapping[str, Sweep] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    """One service: its full name, how it joins a server, how it is built."""

    name: str
    add_to_server: Callable[[Any, Any], None]
    """The generated ``add_<Service>Servicer_to_server`` (the daemon passes a MethodTable)."""
    wire: Callable[[Parts], Wired]
    unary: bool = True
    """Whether every RPC is unary (so the session stream serves it too)."""


def _claims(p: Parts) -> Wired:
    store = ClaimStore(p.db, p.writes)
    service = ClaimService(store)

    async def expire() -> int:
        expired = await store.sweep()
        if expired:
            p.notifier.wake_all()  # expiries are changes Watch streams report
        return expired

    return Wired(
        ClaimServicer(service, p.policy, p.settings.server_id),
        service,
        {"claims_expired": expire},
    )


def _idempotency(p: Parts) -> Wired:
    store = IdempotencyStore(p.db, p.writes)
    servicer = IdempotencyServicer(IdempotencyService(store), p.policy, p.settings.server_id)
    return Wired(servicer, sweeps={"idempotency_purged": store.purge})


def _context(p: Parts) -> Wired:
    store = ContextStore(p.db, p.writes)
    service = ContextService(store, p.notifier)
    servicer = ContextServicer(service, p.policy, p.settings.server_id)
    return Wired(servicer, service, {"context_purged": store.purge})


def _memory(p: Parts) -> Wired:
    store = MemoryStore(p.db, p.writes)
    service = MemoryService(store, MemorySearch(p.indexer, store, p.policy))
    servicer = MemoryServicer(service, p.policy, p.settings.server_id)
    return Wired(servicer, service, {"memory_swept": store.sweep})


def _agreements(p: Parts) -> Wired:
    store = AgreementStore(p.db, p.writes)
    service = AgreementService(store, p.notifier)
    servicer = AgreementServicer(service, p.policy, p.settings.server_id)
    return Wired(
        servicer, service, {"agreements_expired": store.sweep, "agreements_purged": store.purge}
    )


def _admin(p: Parts) -> Wired:
    service = AdminService(AdminStore(p.db, p.writes))
    return Wired(AdminServicer(service, p.policy, p.settings.server_id), service)


def _watch(p: Parts) -> Wired:
    store = ChangeStore(p.db)
    retention = timedelta(seconds=p.settings.changelog_retention_s)

    async def compact() -> int:
        return await store.compact(retention)

    service = WatchService(store, p.notifier)
    servicer = WatchServicer(service, p.policy, p.settings.server_id)
    return Wired(servicer, service, {"changes_compacted": compact})


def _gate(p: Parts) -> Wired:
    service = GateService(GateStore(p.db))
    return Wired(GateServicer(service, p.policy, p.settings.server_id), service)


SERVICES: tuple[Entry, ...] = (
    Entry(
        "coordd.v1.ClaimService",
        claim_service_pb2_grpc.add_ClaimServiceServicer_to_server,
        _claims,
    ),
    Entry(
        "coordd.v1.IdempotencyService",
        idempotency_service_pb2_grpc.add_IdempotencyServiceServicer_to_server,
        _idempotency,
    ),
    Entry(
        "coordd.v1.ContextService",
        context_service_pb2_grpc.add_ContextServiceServicer_to_server,
        _context,
    ),
    Entry(
        "coordd.v1.MemoryService",
        memory_service_pb2_grpc.add_MemoryServiceServicer_to_server,
        _memory,
    ),
    Entry(
        "coordd.v1.WatchService",
        watch_service_pb2_grpc.add_WatchServiceServicer_to_server,
        _watch,
        unary=False,
    ),
    Entry(
        "coordd.v1.AgreementService",
        agreement_service_pb2_grpc.add_AgreementServiceServicer_to_server,
        _agreements,
    ),
    Entry(
        "coordd.v1.GateService",
        gate_service_pb2_grpc.add_GateServiceServicer_to_server,
        _gate,
    ),
    Entry(
        "coordd.v1.AdminService",
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
        _admin,
    ),
)
"""The daemon's services, in the order health and reflection list them."""
