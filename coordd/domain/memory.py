"""Memory rules: writes with provenance, semantic history, tasks, and filtered search."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np

from coordd.domain.access import Operation, Policy
from coordd.domain.consistency import at_least
from coordd.domain.models import (
    Fence,
    Identity,
    MemoryEntry,
    MemoryWrite,
    NamespacePolicy,
    SearchFilter,
    Tier,
)
from coordd.errors import InvalidArgumentError
from coordd.vocabulary import TaskOutcome


class IndexHit(NamedTuple):
    """One nearest neighbour as the index knows it."""

    namespace: str
    key: str
    distance: float
    revision: int
    """The revision of the entry's version the index holds."""
    timed: bool
    """It expires or goes stale at some time: the clock decides whether it may be returned."""


class SearchIndex(Protocol):
    cursors: dict[str, int]
    epoch: int

    def namespaces_under(self, prefixes: Iterable[str]) -> set[str]: ...

    def holds_dimension(self, dim: int) -> bool: ...

    def search(self, query: Any, k: int, f: SearchFilter, ef: int = 0) -> list[IndexHit]: ...

    def try_search(
        self, query: Any, k: int, f: SearchFilter, ef: int = 0
    ) -> list[IndexHit] | None: ...


class Indexer(Protocol):
    @property
    def index(self) -> SearchIndex: ...

    clock_offset_s: float

    async def ensure(self, minimum: dict[str, int], wait_s: float) -> None: ...


class EntryReader(Protocol):
    async def hits(
        self, refs: list[tuple[str, str]]
    ) -> tuple[float, dict[tuple[str, str], MemoryEntry]]: ...


class HitCache:
    """Search hits as hydrated from PostgreSQL, by (namespace, key), each good for one revision.

    A version of an entry never changes once written (a write makes a new revision), so a
    cached hit is exact while the index holds the same revision for its key; any other revision
    is a miss. Entries whose fate depends on the clock (an expiry or a review time) are not
    kept: they are hydrated with the database clock every time. Bounded by the bytes of values
    and texts held, least recently used out first.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, str], MemoryEntry] = OrderedDict()
        self._epoch = 0

    def follow(self, epoch: int) -> None:
        """Forget everything when the index was emptied or rebuilt since (*epoch* moved): a
        database emptied under the daemon starts its revisions again."""
        if epoch != self._epoch:
            self._entries.clear()
            self._bytes = 0
            self._epoch = epoch

    def get(self, hit: IndexHit) -> MemoryEntry | None:
        """The entry of *hit* at the revision the index holds, if kept."""
        if hit.timed:
            return None
        ref = (hit.namespace, hit.key)
        entry = self._entries.get(ref)
        if entry is None or entry.revision != hit.revision:
            return None
        self._entries.move_to_end(ref)
        return entry

    def put(self, entry: MemoryEntry) -> None:
        if entry.expire_time is not None or entry.review_time is not None:
            return
        ref = (entry.namespace, entry.key)
        old = self._entries.pop(ref, None)
        if old is not None:
            self._bytes -= _size(old)
        self._entries[ref] = entry
        self._bytes += _size(entry)
        while self._bytes > self._max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= _size(dropped)


def _size(entry: MemoryEntry) -> int:
    return len(entry.value_json) + len(entry.text) + 512


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    embedding: bytes
    dim: int
    k: int
    namespace_prefixes: list[str]
    tier: Tier | None
    tags: list[str]
    task_id: str
    include_stale: bool
    min_revisions: dict[str, int]
    ef: int = 0
    refs_only: bool = False
    """The caller asked for each hit's namespace, key and revision only (SEARCH_VIEW_REF)."""


def under(prefix: str, namespace: str) -> bool:
    return namespace == prefix or namespace.startswith(prefix + "/")


def namespaces_under(ordered: Sequence[str], prefixes: Iterable[str]) -> set[str]:
    """The namespaces of *ordered* (sorted) that are :func:`under` any of *prefixes*, found by
    bisection: the cost grows with the namespaces found, not with the others.

    Below ``p`` are exactly the strings from ``p/`` up to, not including, ``p0`` (``0`` is
    the character after ``/``): ``p-x`` and ``p.x`` sort before that range, ``pc`` after it.
    """
    found: set[str] = set()
    for p in prefixes:
        at = bisect.bisect_left(ordered, p)
        if at < len(ordered) and ordered[at] == p:
            found.add(p)
        start = bisect.bisect_left(ordered, p + "/", at)
        found.update(ordered[start : bisect.bisect_left(ordered, p + "0", start)])
    return found


class MemorySearch:
    """k-NN over embeddings, filtered before ranking by scope, grants, tier, tags, task,
    expiry and staleness: the caller never sees, and never loses places to, what it may not
    read."""

    def __init__(
        self,
        indexer: Indexer,
        entries: EntryReader,
        policy: Policy,
        cache: HitCache | None = None,
    ) -> None:
        self._indexer = indexer
        self._entries = entries
        self._policy = policy
        self._cache = cache or HitCache()

    def readable(self, who: Identity, prefixes: list[str]) -> frozenset[str]:
        """The namespaces the index holds under *prefixes* that *who* may read: found in the
        index's ordered namespaces, so the work follows what is under the prefixes, not how
        many namespaces the daemon holds elsewhere."""
        out = set()
        for ns in self._indexer.index.namespaces_under(prefixes):
            try:
                self._policy.check(who, Operation.READ, ns)
            except Exception:
                continue
            out.add(ns)
        return frozenset(out)

    async def search(
        self, who: Identity, q: SearchQuery, wait_s: float
    ) -> tuple[int, list[tuple[MemoryEntry, float]]]:
        """The hits with their entries, and the revision of the first prefix's namespace the
        index reflects (for the header).

        The index first reflects ``q.min_revisions`` (waiting up to *wait_s* for this
        replica's index to catch up from the change log), or the search is refused. Hits are
        answered from the index's revision of each entry: from the hit cache when it holds
        that revision, else from PostgreSQL in one query for all the others.
        """
        revision, found = await self._found(who, q, wait_s, hydrate_all=True)
        return revision, [(e, hit.distance) for hit, e in found if e is not None]

    async def search_refs(
        self, who: Identity, q: SearchQuery, wait_s: float
    ) -> tuple[int, list[IndexHit]]:
        """:meth:`search`'s hits as the index knows them (namespace, key, revision, distance),
        without their entries: only hits with an expiry or a review time are read from
        PostgreSQL (the database clock decides whether they may be returned), the others are
        answered by the index alone."""
        revision, found = await self._found(who, q, wait_s, hydrate_all=False)
        return revision, [
            hit if e is None else hit._replace(revision=e.revision) for hit, e in found
        ]

    async def _found(
        self, who: Identity, q: SearchQuery, wait_s: float, *, hydrate_all: bool
    ) -> tuple[int, list[tuple[IndexHit, MemoryEntry | None]]]:
        """The hits, each with its entry if hydrated (every hit if *hydrate_all*, else only
        timed ones), and the header's revision."""
        await self._indexer.ensure(
            {
                ns: rev
                for ns, rev in q.min_revisions.items()
                if any(under(p, ns) for p in q.namespace_prefixes)
            },
            wait_s,
        )
        index = self._indexer.index
        self._cache.follow(index.epoch)
        # Read before searching: the index may move on meanwhile, never back.
        revision = index.cursors.get(q.namespace_prefixes[0], 0)
        vector = np.frombuffer(q.embedding, dtype="<f4")
        readable = self.readable(who, q.namespace_prefixes)
        # Expiry and staleness filter before ranking, by the database clock. The mask uses the
        # clock as last read by the indexer; every hit that has an expiry or a review time is
        # hydrated with the database's own clock, and if that drops a hit the search runs again
        # with it, so the result never holds an expired or stale entry nor loses a place to
        # one. Hits with neither do not depend on the clock.
        now = time.time() + self._indexer.clock_offset_s
        for attempt in (1, 2):
            f = SearchFilter(
                namespaces=readable,
                tier=int(q.tier) if q.tier else 0,
                tags=frozenset(q.tags),
                task_id=q.task_id,
                include_stale=q.include_stale,
                now=now,
            )
            found = await self._nearest(vector, q.k, f, q.ef) if readable else []
            if not found and not index.holds_dimension(q.dim):
                # An empty answer would hide a caller bug (the wrong embedding model).
                raise InvalidArgumentError.single(
                    "embedding",
                    f"has {q.dim} dimensions, and no stored entry has embeddings of that "
                    "dimension (they have others): was it made by another model?",
                )
            # The cache never holds timed entries: they are always read, with the clock.
            wanted = [hydrate_all or hit.timed for hit in found]
            cached = [
                self._cache.get(hit) if w else None for hit, w in zip(found, wanted, strict=True)
            ]
            missing = [
                (h.namespace, h.key)
                for h, w, e in zip(found, wanted, cached, strict=True)
                if w and e is None
            ]
            if not missing:
                return revision, list(zip(found, cached, strict=True))
            db_now, entries = await self._entries.hits(missing)
            for entry in entries.values():
                self._cache.put(entry)
            kept: list[tuple[IndexHit, MemoryEntry | None]] = []
            for hit, w, c in zip(found, wanted, cached, strict=True):
                if not w:
                    kept.append((hit, None))
                elif (e := c or entries.get((hit.namespace, hit.key))) is not None and (
                    q.include_stale or not e.stale
                ):
                    kept.append((hit, e))
            if len(kept) == len(found) or now >= db_now or attempt == 2:
                return revision, kept
            now = db_now  # the cached clock was behind: once more, exactly
        raise AssertionError("unreachable")

    async def _nearest(self, vector: Any, k: int, f: SearchFilter, ef: int) -> list[IndexHit]:
        index = self._indexer.index
        found = index.try_search(vector, k, f, ef)
        if found is None:  # the index is being written: wait for it off the event loop
            found = await asyncio.to_thread(index.search, vector, k, f, ef)
        return found


# The memory service: what a MemoryService RPC asks, once read and checked by its request
# module (coordd/server/requests/memory.py), and the rules applied between it and storage.


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRead:
    """GetMemory: one key, now or *as_of* a past time, reflecting at least *min_revision*."""

    namespace: str
    key: str
    as_of: datetime | None
    min_revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Deletion:
    """DeleteMemory: CAS on *expected_revision* when given, fenced when *fence* is."""

    namespace: str
    key: str
    expected_revision: int | None
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRead:
    """A paged read: after the decoded page token *after* ("" = the first page), at most
    *limit* items, reflecting at least *min_revision*."""

    after: str
    limit: int
    min_revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing(PageRead):
    """ListMemory: current entries under *prefix* (tier 0 = every tier)."""

    prefix: str
    tier: int
    tags: list[str]
    task_id: str
    include_stale: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRead(PageRead):
    """MemoryHistory: the versions of a key, newest first."""

    namespace: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStart:
    namespace: str
    task_id: str
    lease: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEnd:
    """EndTask: remove the task's working memory, optionally archived as one episode."""

    namespace: str
    task_id: str
    outcome: TaskOutcome
    archive: bool
    summary_json: str
    summary_text: str
    embedding: bytes
    dim: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Compaction:
    """CompactEpisodes: replace episodes *keys* with one summary at *summary_key*."""

    namespace: str
    keys: list[str]
    summary_key: str
    summary_json: str
    summary_text: str
    embedding: bytes
    dim: int
    tags: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPage:
    """A page of entries, the revision it reflects, and where the next page starts."""

    revision: int
    entries: list[MemoryEntry]
    next_after: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEnded:
    revision: int
    removed: int
    episode: MemoryEntry | None


_NEWEST = 2**62  # "before" every revision: history from the newest version


class MemoryStore(EntryReader, Protocol):
    """What the memory service needs of storage (coordd/storage/memory.py)."""

    async def put(self, who: Identity, trace_id: str, w: MemoryWrite) -> MemoryEntry: ...

    async def put_many(
        self, who: Identity, trace_id: str, writes: list[MemoryWrite]
    ) -> list[MemoryEntry]: ...

    async def get(
        self, namespace: str, key: str, as_of: datetime | None
    ) -> tuple[int, MemoryEntry | None]: ...

    async def delete(self, who: Identity, d: Deletion) -> tuple[int, bool]: ...

    async def list_entries(
        self, q: Listing, after: tuple[str, str], limit: int
    ) -> tuple[int, list[MemoryEntry]]: ...

    async def history(
        self, namespace: str, key: str, before: int, limit: int
    ) -> tuple[int, list[MemoryEntry]]: ...

    async def start_task(self, who: Identity, t: TaskStart) -> tuple[int, datetime]: ...

    async def end_task(self, who: Identity, trace_id: str, t: TaskEnd) -> TaskEnded: ...

    async def compact(self, who: Identity, trace_id: str, c: Compaction) -> MemoryEntry: ...

    async def set_policy(self, who: Identity, namespace: str, p: NamespacePolicy) -> int: ...

    async def get_policy(self, namespace: str) -> tuple[int, NamespacePolicy]: ...


class MemoryService:
    """Memory rules: reads at a minimum revision, pages and their tokens, compaction's keys,
    and filtered search (:class:`MemorySearch`).

    A write's own rules (tier, write ordering, task) are checked where the request is read,
    by :func:`coordd.domain.memory_writes.check_write`, which agreement transition writes
    share; the database applies them atomically (CAS, merge patch, fence, quotas). So
    PutMemory(ies), DeleteMemory, StartTask, EndTask and the namespace policy calls have no
    rule here: they go straight to :attr:`store`, with the writer's identity (and trace id)
    as provenance, never the caller's say.

    Attributes:
        store: The memory store, for calls without a rule here.
        search: :meth:`MemorySearch.search` (readable namespaces, filters, ranking).
        search_refs: :meth:`MemorySearch.search_refs` (the same hits, without entries).
    """

    def __init__(self, store: MemoryStore, search: MemorySearch) -> None:
        self.store = store
        self.search = search.search
        self.search_refs = search.search_refs

    async def get(self, read: KeyRead, wait_s: float) -> tuple[int, MemoryEntry | None]:
        """The entry (None if absent) and the revision it reflects: at least
        ``read.min_revision``, waiting up to *wait_s* for it (else REVISION_NOT_REACHED)."""
        return await at_least(
            read.namespace,
            read.min_revision,
            lambda: self.store.get(read.namespace, read.key, read.as_of),
            wait_s,
        )

    async def history(self, q: HistoryRead, wait_s: float) -> MemoryPage:
        """A page of a key's versions, newest first; ``next_after`` resumes after it."""
        before = int(q.after) if q.after.isdigit() else _NEWEST
        revision, versions = await at_least(
            q.namespace,
            q.min_revision,
            lambda: self.store.history(q.namespace, q.key, before, q.limit + 1),
            wait_s,
        )
        page = versions[: q.limit]
        more = len(versions) > q.limit
        return MemoryPage(
            revision=revision,
            entries=page,
            next_after=str(page[-1].revision) if more else None,
        )

    async def compact(self, who: Identity, trace_id: str, c: Compaction) -> MemoryEntry:
        """Replace episodes with a summary whose provenance derives from them."""
        # Each key once: memory_compact counts the episodes it finds against the keys named.
        return await self.store.compact(who, trace_id, replace(c, keys=sorted(set(c.keys))))

    # Last in the class: the name `list` would shadow the builtin in later annotations.
    async def list(self, q: Listing, wait_s: float) -> MemoryPage:
        """A page of entries in (namespace, key) order; ``next_after`` resumes after it."""
        ns, _, key = q.after.partition("\x00")
        revision, entries = await at_least(
            q.prefix,
            q.min_revision,
            lambda: self.store.list_entries(q, (ns, key), q.limit + 1),
            wait_s,
        )
        page = entries[: q.limit]
        more = len(entries) > q.limit
        return MemoryPage(
            revision=revision,
            entries=page,
            next_after=f"{page[-1].namespace}\x00{page[-1].key}" if more else None,
        )
