"""Memory rules: writes with provenance, semantic history, tasks, and filtered search."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from coordd.domain.access import Operation, Policy
from coordd.domain.models import Identity, MemoryEntry, SearchFilter, Tier
from coordd.errors import InvalidArgumentError


class SearchIndex(Protocol):
    def namespaces(self) -> set[str]: ...

    def holds_dimension(self, dim: int) -> bool: ...

    def search(
        self, query: Any, k: int, f: SearchFilter, ef: int = 0
    ) -> list[tuple[str, str, float]]: ...

    def try_search(
        self, query: Any, k: int, f: SearchFilter, ef: int = 0
    ) -> list[tuple[str, str, float]] | None: ...


class Indexer(Protocol):
    @property
    def index(self) -> SearchIndex: ...

    clock_offset_s: float

    async def ensure(self, minimum: dict[str, int], wait_s: float) -> None: ...


class EntryReader(Protocol):
    async def hits(
        self, refs: list[tuple[str, str]], namespace: str
    ) -> tuple[float, int, dict[tuple[str, str], MemoryEntry]]: ...


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


def under(prefix: str, namespace: str) -> bool:
    return namespace == prefix or namespace.startswith(prefix + "/")


class MemorySearch:
    """k-NN over embeddings, filtered before ranking by scope, grants, tier, tags, task,
    expiry and staleness: the caller never sees, and never loses places to, what it may not
    read."""

    def __init__(self, indexer: Indexer, entries: EntryReader, policy: Policy) -> None:
        self._indexer = indexer
        self._entries = entries
        self._policy = policy

    def readable(self, who: Identity, prefixes: list[str]) -> frozenset[str]:
        out = set()
        for ns in self._indexer.index.namespaces():
            if any(under(p, ns) for p in prefixes):
                try:
                    self._policy.check(who, Operation.READ, ns)
                except Exception:
                    continue
                out.add(ns)
        return frozenset(out)

    async def search(
        self, who: Identity, q: SearchQuery, wait_s: float
    ) -> tuple[int, list[tuple[MemoryEntry, float]]]:
        """The hits, and the revision of the first prefix's namespace (for the header).

        The index first reflects ``q.min_revisions`` (waiting up to *wait_s* for this
        replica's index to catch up from the change log), or the search is refused.
        """
        await self._indexer.ensure(
            {
                ns: rev
                for ns, rev in q.min_revisions.items()
                if any(under(p, ns) for p in q.namespace_prefixes)
            },
            wait_s,
        )
        vector = np.frombuffer(q.embedding, dtype="<f4").astype(np.float32)
        readable = self.readable(who, q.namespace_prefixes)
        # Expiry and staleness filter before ranking, by the database clock. The mask uses the
        # clock as last read by the indexer; the hydrating query re-checks each hit against the
        # database's own clock, and if that drops a hit the search runs again with it, so the
        # result never holds an expired or stale entry nor loses a place to one.
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
            if not found and not self._indexer.index.holds_dimension(q.dim):
                # An empty answer would hide a caller bug (the wrong embedding model).
                raise InvalidArgumentError.single(
                    "embedding",
                    f"has {q.dim} dimensions, and no stored entry has embeddings of that "
                    "dimension (they have others): was it made by another model?",
                )
            db_now, revision, entries = await self._entries.hits(
                [(ns, key) for ns, key, _ in found], q.namespace_prefixes[0]
            )
            kept = [
                (entries[(ns, key)], distance)
                for ns, key, distance in found
                if (ns, key) in entries and (q.include_stale or not entries[(ns, key)].stale)
            ]
            if len(kept) == len(found) or now >= db_now or attempt == 2:
                return revision, kept
            now = db_now  # the cached clock was behind: once more, exactly
        raise AssertionError("unreachable")

    async def _nearest(
        self, vector: Any, k: int, f: SearchFilter, ef: int
    ) -> list[tuple[str, str, float]]:
        index = self._indexer.index
        found = index.try_search(vector, k, f, ef)
        if found is None:  # the index is being written: wait for it off the event loop
            found = await asyncio.to_thread(index.search, vector, k, f, ef)
        return found
