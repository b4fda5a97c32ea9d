"""The session cache: a byte-bounded read cache that never answers below the session's vector.

One core serves two hosts: the sidecar (``coordd-sidecar``, one per agent) and the embedded mode
(``Client.connect(..., cache=CacheConfig())``). It caches the answers of GetMemory, ListMemory,
MemoryHistory and completed GetIdempotency records, keeps them current from Watch streams on the
namespaces it holds, and serves one only if it has applied at least the session's revision of
that namespace (DESIGN.md §2): the session's own writes, everything it has read, and everything
the senders of the context entries it has read had written. Otherwise the read goes upstream,
carrying ``min_revision``. Writes and claims never come from here.

Invariant behind "applied": each watched namespace has ``applied`` = W, meaning every change up
to W has been applied to the cache (events arrive in revision order, gapless). An entry read at
revision R stays valid as of max(R, W) until an event after R touches it. An answer older than
W when it arrives is not cached (changes between it and W went by before it was stored). A
broken or compacted Watch quarantines its namespace: nothing there is served as fresh again,
only, if the request says it tolerates staleness and upstream is unreachable, with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message
from opentelemetry import metrics

from coordd.v1 import common_pb2, watch_service_pb2

from ._session import Session, request_namespace

logger = logging.getLogger(__name__)

GET_MEMORY = "/coordd.v1.MemoryService/GetMemory"
LIST_MEMORY = "/coordd.v1.MemoryService/ListMemory"
MEMORY_HISTORY = "/coordd.v1.MemoryService/MemoryHistory"
GET_IDEMPOTENCY = "/coordd.v1.IdempotencyService/GetIdempotency"
CACHED_METHODS = frozenset({GET_MEMORY, LIST_MEMORY, MEMORY_HISTORY, GET_IDEMPOTENCY})
"""The reads this cache answers; every other method always goes upstream."""

# Change kinds that never alter what a cached read returns (they still advance `applied`).
_HARMLESS = frozenset({"claim", "context", "agreement", "policy"})
_IDEMPOTENCY_COMPLETED = 2  # IDEMPOTENCY_STATE_COMPLETED
_ENTRY_OVERHEAD = 256  # bookkeeping bytes per entry, counted against max_bytes
_RESTART_BACKOFF_S = 1.0
_UNSET: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """How much an agent's session cache holds and how it may answer.

    Attributes:
        max_bytes: Upper bound on cached answers (serialized size plus bookkeeping); the least
            recently used are evicted beyond it.
        max_watched: Namespaces (and list prefixes) watched at once; the least recently used
            is dropped beyond it.
        max_staleness: Embedded mode only: when upstream is unreachable, answer from the cache
            if what it holds was known current at most this long ago (default: never; reads
            fail UNAVAILABLE). The sidecar takes this per request instead, from the
            ``coordd-max-staleness`` metadata key.
    """

    max_bytes: int = 64 << 20
    max_watched: int = 256
    max_staleness: timedelta | None = None
    _skip_version_checks: bool = field(default=False, repr=False)
    """Test-only negative control: serve whatever is cached, ignoring the session's vector."""

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_watched < 1:
            raise ValueError("CacheConfig needs max_bytes >= 0 and max_watched >= 1")


@dataclass(slots=True, eq=False)
class _Entry:
    key: tuple[str, bytes]
    scope: tuple[str, bool]
    item: str  # the memory or idempotency key it depends on; "" = any change in scope
    kind: str  # "memory" or "idempotency"
    response: Message
    raw: bytes | None
    revision: int
    floors: dict[str, int] | None  # lists: the session's vector below the prefix when asked
    size: int
    stored: float
    until: float
    verified: bool = True
    decoded: Any = None  # what the host made of the response (_UNSET until asked)


@dataclass(slots=True, eq=False)
class _Scope:
    namespace: str
    prefix: bool
    applied: int
    entries: set[_Entry] = field(default_factory=set)
    by_item: dict[tuple[str, str], set[_Entry]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    live: bool = False
    broken_at: float = 0.0


@dataclass(slots=True)
class CacheStats:
    """Counters of one cache (also exported as OpenTelemetry metrics)."""

    hits: int = 0
    misses: int = 0
    session_forced: int = 0
    invalidations: int = 0
    evictions: int = 0
    stale_served: int = 0
    bytes: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter("coordd.cache")
        self.hits = meter.create_counter("coordd.cache.hits", description="reads from cache")
        self.misses = meter.create_counter(
            "coordd.cache.misses", description="cacheable reads that went upstream"
        )
        self.session_forced = meter.create_counter(
            "coordd.cache.session_forced_reads",
            description="reads sent upstream because the session was ahead of the cache",
        )
        self.invalidations = meter.create_counter(
            "coordd.cache.invalidations", description="entries dropped by a change or a break"
        )
        self.evictions = meter.create_counter(
            "coordd.cache.evictions", description="entries dropped for space"
        )
        self.bytes = meter.create_up_down_counter(
            "coordd.cache.bytes", unit="By", description="bytes held by the cache"
        )
        self.upstream = meter.create_histogram(
            "coordd.upstream.duration", unit="ms", description="latency of calls sent upstream"
        )


WatchOpener = Callable[[watch_service_pb2.WatchRequest], Any]
"""Opens a Watch stream upstream: returns an async iterator of WatchResponse (a gRPC call)."""


@dataclass(frozen=True, slots=True)
class StaleAnswer:
    """A cached answer served while upstream is unreachable, and how old it is."""

    response: Message
    raw: bytes | None
    age_s: float


def cache_key(path: str, request: Message) -> tuple[str, bytes]:
    """The request without its min_revision (which selects freshness, not the answer)."""
    floor = getattr(request, "min_revision", 0)
    if floor:
        request.min_revision = 0  # type: ignore[attr-defined]
        try:
            return path, request.SerializeToString(deterministic=True)
        finally:
            request.min_revision = floor  # type: ignore[attr-defined]
    return path, request.SerializeToString(deterministic=True)


def _under(prefix: str, namespace: str) -> bool:
    return namespace == prefix or namespace.startswith(prefix + "/")


def _deadline(response: Message, path: str, now: float) -> float:
    """Until when (monotonic) an answer may be served: never past an expiry or review time
    it carries, which the daemon applies by its own clock without a change-log row."""
    stamps: list[Any] = []
    if path == GET_MEMORY:
        e = response.entry  # type: ignore[attr-defined]
        stamps = [e.expire_time, e.review_time]
    elif path == GET_IDEMPOTENCY:
        stamps = [response.record.expire_time]  # type: ignore[attr-defined]
    else:
        for e in getattr(response, "entries", getattr(response, "versions", ())):
            stamps += [e.expire_time, e.review_time]
    until = math.inf
    wall = time.time()
    for ts in stamps:
        if ts.seconds or ts.nanos:
            until = min(until, now + (ts.seconds + ts.nanos / 1e9 - wall))
    return until


class SessionCache:
    """Version-vector read cache for one agent's session (see the module docstring)."""

    def __init__(self, config: CacheConfig, session: Session, open_watch: WatchOpener) -> None:
        self.config = config
        self.session = session
        self.stats = CacheStats()
        self._open_watch = open_watch
        self._lru: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        self._scopes: OrderedDict[tuple[str, bool], _Scope] = OrderedDict()
        self._metrics = _Instruments()
        self._closed = False
        # id(response) -> its entry: what a host decoded from a cached answer is kept on the
        # entry, so hits skip decoding (the entry holds the response, so the id is unique).
        self._by_response: dict[int, _Entry] = {}

    # ------------------------------------------------------------------ reads

    def lookup(self, path: str, request: Message) -> Message | None:
        """The cached answer to *request* if it may be served now, else None (a miss)."""
        key = cache_key(path, request)
        entry = self._lru.get(key)
        if entry is None or not entry.verified:
            self._miss()
            return None
        if time.monotonic() >= entry.until:
            self._forget(entry, invalidated=True)
            self._miss()
            return None
        if not self.config._skip_version_checks and not self._current(entry):
            self.stats.session_forced += 1
            self._metrics.session_forced.add(1)
            self._miss()
            return None
        self._lru.move_to_end(key)
        self.stats.hits += 1
        self._metrics.hits.add(1)
        return entry.response

    def decoded(self, response: Message, decode: Callable[[Message], Any]) -> Any:
        """``decode(response)``, remembered while *response* is a cached answer."""
        entry = self._by_response.get(id(response))
        if entry is None or entry.response is not response:
            return decode(response)
        if entry.decoded is _UNSET:
            entry.decoded = decode(response)
        return entry.decoded

    def raw(self, request_path: str, request: Message) -> bytes | None:
        """The serialized form of the last answer *lookup* returned for this request."""
        entry = self._lru.get(cache_key(request_path, request))
        if entry is None:
            return None
        if entry.raw is None:
            entry.raw = entry.response.SerializeToString()
        return entry.raw

    def stale(self, path: str, request: Message, max_age_s: float) -> StaleAnswer | None:
        """A cached answer known current at most *max_age_s* ago (upstream being unreachable)."""
        entry = self._lru.get(cache_key(path, request))
        if entry is None:
            return None
        now = time.monotonic()
        scope = self._scopes.get(entry.scope)
        confirmed = now if scope is not None and scope.live and entry.verified else 0.0
        if scope is not None and not entry.verified:
            confirmed = scope.broken_at
        age = now - max(entry.stored, confirmed)
        if age > max_age_s or now >= entry.until:
            return None
        self.stats.stale_served += 1
        return StaleAnswer(entry.response, entry.raw, age)

    def floors(self, path: str, request: Message) -> dict[str, int] | None:
        """What to remember with a list's answer: the session's vector below its prefix when
        the list was asked (the answer reflects at least that)."""
        if path != LIST_MEMORY:
            return None
        prefix = request_namespace(request)
        return {ns: rev for ns, rev in self.session.vector.items() if _under(prefix, ns)}

    def _current(self, entry: _Entry) -> bool:
        scope = self._scopes[entry.scope]
        namespace = scope.namespace
        if self.session.revision(namespace) > max(entry.revision, scope.applied):
            return False
        if entry.floors is not None:
            for ns, rev in self.session.vector.items():
                if ns != namespace and _under(namespace, ns) and rev > entry.floors.get(ns, 0):
                    return False
        return True

    def _miss(self) -> None:
        self.stats.misses += 1
        self._metrics.misses.add(1)

    # ------------------------------------------------------------------ stores

    def store(
        self,
        path: str,
        request: Message,
        response: Message,
        raw: bytes | None = None,
        floors: dict[str, int] | None = None,
    ) -> bool:
        """Remember an upstream answer if it is cacheable and not older than what the cache
        has applied; start watching its namespace. Returns True if stored."""
        if self._closed or path not in CACHED_METHODS:
            return False
        if path == GET_IDEMPOTENCY and (
            not response.found  # type: ignore[attr-defined]
            or response.record.state != _IDEMPOTENCY_COMPLETED  # type: ignore[attr-defined]
        ):
            return False
        namespace, revision = response.header.namespace, response.header.revision  # type: ignore[attr-defined]
        if not namespace:
            return False
        now = time.monotonic()
        until = _deadline(response, path, now)
        if until <= now:
            return False
        scope_key = (namespace, path == LIST_MEMORY)
        scope = self._scopes.get(scope_key)
        if scope is not None and not scope.live and scope.task is None:
            if now - scope.broken_at < _RESTART_BACKOFF_S:
                return False  # the watch just failed: do not cache there for a moment
            self._drop_scope(scope)  # quarantined entries go; a new watch starts below
            scope = None
        if scope is None:
            scope = _Scope(namespace=namespace, prefix=scope_key[1], applied=revision)
            self._scopes[scope_key] = scope
            self._watch(scope)
            self._limit_scopes()
        elif revision < scope.applied:
            return False  # changes after this answer were applied before it arrived
        self._scopes.move_to_end(scope_key)
        key = cache_key(path, request)
        old = self._lru.pop(key, None)
        if old is not None:
            self._unlink(old)
        size = (len(raw) if raw is not None else response.ByteSize()) + len(key[1])
        entry = _Entry(
            key=key,
            scope=scope_key,
            item="" if path == LIST_MEMORY else request.key,  # type: ignore[attr-defined]
            kind="idempotency" if path == GET_IDEMPOTENCY else "memory",
            response=response,
            raw=raw,
            revision=revision,
            floors=floors,
            size=size + _ENTRY_OVERHEAD,
            stored=now,
            until=until,
            decoded=_UNSET,
        )
        self._lru[key] = entry
        self._by_response[id(response)] = entry
        scope.entries.add(entry)
        if entry.item:
            scope.by_item.setdefault((entry.kind, entry.item), set()).add(entry)
        self._account(entry.size)
        while self.stats.bytes > self.config.max_bytes and self._lru:
            _, victim = next(iter(self._lru.items()))
            self._forget(victim)
            self.stats.evictions += 1
            self._metrics.evictions.add(1)
        return key in self._lru

    def _account(self, delta: int) -> None:
        self.stats.bytes += delta
        self._metrics.bytes.add(delta)

    def _unlink(self, entry: _Entry) -> None:
        self._by_response.pop(id(entry.response), None)
        scope = self._scopes.get(entry.scope)
        if scope is not None:
            scope.entries.discard(entry)
            if entry.item:
                same = scope.by_item.get((entry.kind, entry.item))
                if same is not None:
                    same.discard(entry)
                    if not same:
                        del scope.by_item[(entry.kind, entry.item)]
        self._account(-entry.size)

    def _forget(self, entry: _Entry, *, invalidated: bool = False) -> None:
        if self._lru.pop(entry.key, None) is not None:
            self._unlink(entry)
            if invalidated:
                self.stats.invalidations += 1
                self._metrics.invalidations.add(1)

    # ------------------------------------------------------------------ invalidation

    def apply(self, scope_key: tuple[str, bool], events: Iterable[Any]) -> None:
        """Apply change events (in revision order) from the Watch of *scope_key*."""
        scope = self._scopes.get(scope_key)
        if scope is None:
            return
        for ev in events:
            touched: Iterable[_Entry]
            if ev.kind in _HARMLESS:
                touched = ()
            elif scope.prefix:  # lists: any memory change below the prefix may alter them
                touched = () if ev.kind == "idempotency" else list(scope.entries)
            elif ev.kind in ("memory", "idempotency"):
                touched = list(scope.by_item.get((ev.kind, ev.key), ()))
            else:  # tasks ending, and kinds this cache does not know: assume all changed
                touched = list(scope.entries)
            for entry in touched:
                if ev.revision > entry.revision:  # else the answer already reflects it
                    self._forget(entry, invalidated=True)
            if ev.namespace == scope.namespace and ev.revision > scope.applied:
                scope.applied = ev.revision

    def drop(self, namespace: str) -> None:
        """Quarantine every scope covering *namespace* (its watch broke or was compacted)."""
        for scope in list(self._scopes.values()):
            if scope.namespace == namespace or (
                scope.prefix and _under(scope.namespace, namespace)
            ):
                self._quarantine(scope)

    def _quarantine(self, scope: _Scope) -> None:
        scope.live = False
        scope.broken_at = time.monotonic()
        for entry in scope.entries:
            if entry.verified:
                entry.verified = False
                self.stats.invalidations += 1
                self._metrics.invalidations.add(1)

    def _drop_scope(self, scope: _Scope) -> None:
        for entry in list(scope.entries):
            self._forget(entry)
        self._scopes.pop((scope.namespace, scope.prefix), None)
        if scope.task is not None:
            scope.task.cancel()

    def _limit_scopes(self) -> None:
        while len(self._scopes) > self.config.max_watched:
            _, oldest = next(iter(self._scopes.items()))
            self._drop_scope(oldest)

    def _watch(self, scope: _Scope) -> None:
        scope.task = asyncio.get_running_loop().create_task(
            self._follow(scope), name=f"coordd-cache-watch:{scope.namespace}"
        )

    async def _follow(self, scope: _Scope) -> None:
        scope_key = (scope.namespace, scope.prefix)
        # After the revision the first answer reflected, in the scope's own namespace; below a
        # list's prefix, from now on (the lists' floors cover what the session saw before).
        request = watch_service_pb2.WatchRequest(
            namespace=scope.namespace,
            prefix=scope.prefix,
            after=common_pb2.VersionVector(revisions={scope.namespace: scope.applied}),
        )
        call = None
        try:
            call = self._open_watch(request)
            scope.live = True
            stream: AsyncIterator[Any] = call.__aiter__()
            async for response in stream:
                self.apply(scope_key, response.events)
            logger.info("cache watch on %s ended; dropping it", scope.namespace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any end of the stream means: stop trusting the namespace
            logger.info("cache watch on %s broke (%s); dropping it", scope.namespace, exc)
        finally:
            if call is not None and hasattr(call, "cancel"):
                call.cancel()
            scope.task = None
            if self._scopes.get(scope_key) is scope:
                self._quarantine(scope)

    async def close(self) -> None:
        """Stop every watch and forget everything."""
        self._closed = True
        tasks = [s.task for s in self._scopes.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._lru.clear()
        self._scopes.clear()
        self._by_response.clear()
        self._account(-self.stats.bytes)

    def record_upstream(self, started: float, path: str) -> None:
        """Record one upstream call's latency (``started`` from time.perf_counter())."""
        self._metrics.upstream.record(
            (time.perf_counter() - started) * 1000, {"rpc.method": path.rsplit("/", 1)[-1]}
        )
