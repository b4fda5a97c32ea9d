"""``CoorddStore``: LangGraph's ``BaseStore`` on coordd memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from coordd.errors import RevisionMismatchError
from coordd_client import AsyncClient, Client, Fence, MemoryEntry, MemoryPut, Provenance
from coordd_client._closing import Closing

from . import _names
from ._bridge import Bridge, connect
from ._filters import matches

ITEM_TAG = "langgraph:item"
VECTOR_TAG = "langgraph:vector"
_CREATED = "langgraph:created="
_VECTORS = "langgraph:vectors="
_PAGE = 1000
_MAX_K = 1000
_CAS_ATTEMPTS = 8

Vectors = list[tuple[str, str, list[float]]]
"""(path, text, embedding) of one item."""


class _EntryView:
    """coordd's view of an item: the memory entry behind it."""

    __slots__ = ()
    entry: MemoryEntry

    @property
    def revision(self) -> int:
        """Namespace revision of the write that produced this version (use for CAS)."""
        return self.entry.revision

    @property
    def provenance(self) -> Provenance:
        """Who wrote this version, when, under which trace: stamped by the daemon."""
        return self.entry.provenance

    @property
    def expire_time(self) -> datetime | None:
        return self.entry.expire_time


class CoorddItem(_EntryView, Item):
    """A stored item, with the coordd entry behind it (revision, provenance, expiry)."""

    __slots__ = ("entry",)

    def __init__(self, *, namespace: tuple[str, ...], entry: MemoryEntry) -> None:
        super().__init__(
            value=_as_dict(entry.value),
            key=entry.key,
            namespace=namespace,
            created_at=_created_at(entry),
            updated_at=entry.provenance.write_time,
        )
        self.entry = entry


class CoorddSearchItem(_EntryView, SearchItem):
    """A search result (``score``: cosine similarity), with the coordd entry behind it."""

    __slots__ = ("entry",)

    def __init__(
        self, *, namespace: tuple[str, ...], entry: MemoryEntry, score: float | None
    ) -> None:
        super().__init__(
            namespace=namespace,
            key=entry.key,
            value=_as_dict(entry.value),
            created_at=_created_at(entry),
            updated_at=entry.provenance.write_time,
            score=score,
        )
        self.entry = entry


class CoorddStore(Closing, BaseStore):
    """A LangGraph store whose items are coordd memory entries.

    Every item is an entry in the coordd namespace its tuple maps to (see
    ``coordd_client.langgraph._names``: ``("users", "u1")`` under the default root is
    ``langgraph/users/u1``), so coordd's access grants, provenance, history, watch streams and
    gate apply to it. Writes are compare-and-set against the version read just before, so
    concurrent writers never lose each other's created_at or vectors.

    With ``index`` (LangGraph's ``IndexConfig``: ``dims``, ``embed``, ``fields``), each indexed
    text of an item is embedded by the caller and stored as its own vector entry in the item
    namespace's ``.v`` child; search asks coordd's vector index for the nearest vectors, scores
    each item by its best vector (cosine similarity), and then applies ``filter`` to the items.

    Args:
        client: A blocking ``Client`` or an ``AsyncClient`` (its identity writes the items).
        root: The coordd namespace every tuple goes under.
        index: Embedding configuration for semantic search.
        ttl: LangGraph TTL settings (``default_ttl`` in minutes, ``refresh_on_read``).
        tier: The coordd memory tier of items ("semantic" keeps every version as history,
            "episodic" is subject to the namespace's episodic retention).
        fence: A claim's fence to put on every write (writes fail once the claim is lost).
    """

    supports_ttl = True

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        root: str = "langgraph",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        tier: str = "semantic",
        fence: Fence | None = None,
    ) -> None:
        self._bridge = client if isinstance(client, Bridge) else Bridge(client)
        self.root = _names.check_root(root)
        if tier not in ("semantic", "episodic"):
            raise ValueError(f"tier must be 'semantic' or 'episodic', got {tier!r}")
        self.tier = tier
        self.fence = fence
        self.ttl_config = ttl
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        fields = (index or {}).get("fields") or ["$"]
        self._fields = [(p, p if p == "$" else tokenize_path(p)) for p in fields]

    @classmethod
    def from_addr(
        cls,
        addr: str | None = None,
        *,
        root: str = "langgraph",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        tier: str = "semantic",
        **connect_kwargs: Any,
    ) -> CoorddStore:
        """Connect a blocking client (no *addr*: ``$COORDD_ADDR``) and wrap it; ``close()``
        closes it. *connect_kwargs* go to ``Client.connect`` (``agent_id`` defaults to
        ``$COORDD_AGENT_ID`` or ``langgraph-<pid>``; ``role``, ``token``, ``tls``...)."""
        bridge = connect(addr, connect_kwargs)
        return cls(bridge, root=root, index=index, ttl=ttl, tier=tier)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the client if ``from_addr`` opened it."""
        self._bridge.close()

    # -- BaseStore ---------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        vectors, queries = self._embed_sync(ops)
        return self._bridge.run(self._execute(ops, vectors, queries))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        vectors, queries = await self._embed_async(ops)
        return await self._bridge.arun(self._execute(ops, vectors, queries))

    def history(self, namespace: tuple[str, ...], key: str) -> list[CoorddItem]:
        """Every stored version of an item, newest first, each with its provenance."""
        return self._bridge.run(self._history(namespace, key))

    async def ahistory(self, namespace: tuple[str, ...], key: str) -> list[CoorddItem]:
        return await self._bridge.arun(self._history(namespace, key))

    # -- embedding (in the caller's thread or loop, never on the client's loop) -------------

    def _texts(
        self, ops: list[Op]
    ) -> tuple[dict[tuple[tuple[str, ...], str], list[tuple[str, str]]], set[str]]:
        texts: dict[tuple[tuple[str, ...], str], list[tuple[str, str]]] = {}
        queries: set[str] = set()
        if self.embeddings is None:
            return texts, queries
        for op in ops:
            if isinstance(op, PutOp) and op.value is not None and op.index is not False:
                paths = (
                    self._fields
                    if op.index is None
                    else [(p, p if p == "$" else tokenize_path(p)) for p in op.index]
                )
                found: list[tuple[str, str]] = []
                for path, tokens in paths:
                    got = get_text_at_path(op.value, tokens)
                    if len(got) == 1:
                        found.append((path, got[0]))
                    else:
                        found.extend((f"{path}.{i}", t) for i, t in enumerate(got))
                texts[(op.namespace, op.key)] = found
            elif isinstance(op, SearchOp) and op.query:
                queries.add(op.query)
        return texts, queries

    def _embed_sync(self, ops: list[Op]) -> tuple[dict[Any, Vectors], dict[str, list[float]]]:
        texts, queries = self._texts(ops)
        if self.embeddings is None:
            return {}, {}
        flat = [t for found in texts.values() for _, t in found]
        docs = self.embeddings.embed_documents(flat) if flat else []
        qs = {q: self.embeddings.embed_query(q) for q in queries}
        return _assemble(texts, docs), qs

    async def _embed_async(
        self, ops: list[Op]
    ) -> tuple[dict[Any, Vectors], dict[str, list[float]]]:
        texts, queries = self._texts(ops)
        if self.embeddings is None:
            return {}, {}
        flat = [t for found in texts.values() for _, t in found]
        docs = await self.embeddings.aembed_documents(flat) if flat else []
        ordered = sorted(queries)
        vecs = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in ordered))
        return _assemble(texts, docs), dict(zip(ordered, vecs, strict=True))

    # -- the work, as coroutines on the client's loop ------------------------------------

    async def _execute(
        self, ops: list[Op], vectors: dict[Any, Vectors], queries: dict[str, list[float]]
    ) -> list[Result]:
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}

        async def read(i: int, op: Op) -> None:
            if isinstance(op, GetOp):
                results[i] = await self._get(op)
            elif isinstance(op, SearchOp):
                results[i] = await self._search(op, queries.get(op.query or ""))
            elif isinstance(op, ListNamespacesOp):
                results[i] = await self._list_namespaces(op)

        for op in ops:
            if isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op  # the last put of a key wins
            elif not isinstance(op, GetOp | SearchOp | ListNamespacesOp):
                raise ValueError(f"unknown operation type {type(op).__name__}")
        await asyncio.gather(*(read(i, op) for i, op in enumerate(ops)))
        await asyncio.gather(
            *(self._put(op, vectors.get((op.namespace, op.key), [])) for op in puts.values())
        )
        return results

    def _refresh_on_read(self, refresh_ttl: bool | None) -> bool:
        if refresh_ttl is not None:
            return refresh_ttl
        return (self.ttl_config or {}).get("refresh_on_read", True)

    async def _get(self, op: GetOp) -> CoorddItem | None:
        entry = await self._bridge.aclient.memory.get(
            _names.to_coordd(self.root, op.namespace), op.key
        )
        if entry is None:
            return None
        if self._refresh_on_read(op.refresh_ttl):
            entry = await self._refresh(entry)
        return CoorddItem(namespace=op.namespace, entry=entry)

    async def _refresh(self, entry: MemoryEntry) -> MemoryEntry:
        """Push an item's expiry out by its TTL again (an item the store wrote, with a TTL)."""
        if entry.expire_time is None or ITEM_TAG not in entry.tags:
            return entry
        ttl = entry.expire_time - entry.provenance.write_time
        if ttl < timedelta(seconds=1):
            return entry
        try:
            return await self._bridge.aclient.memory.put(
                entry.namespace,
                entry.key,
                entry.value,
                tier=entry.tier,
                text=entry.text,
                tags=entry.tags,
                mode="cas",
                expected_revision=entry.revision,
                ttl=ttl,
                fence=self.fence,
            )
        except RevisionMismatchError:
            return entry  # written meanwhile: that write set its own expiry

    async def _put(self, op: PutOp, vectors: Vectors) -> None:
        memory = self._bridge.aclient.memory
        namespace = _names.to_coordd(self.root, op.namespace)
        for _ in range(_CAS_ATTEMPTS):
            old = await memory.get(namespace, op.key)
            try:
                if op.value is None:
                    if old is not None:
                        await memory.delete(
                            namespace, op.key, expected_revision=old.revision, fence=self.fence
                        )
                else:
                    # The item and its vectors commit together, or not at all.
                    item = self._item_write(namespace, op, old, len(vectors))
                    await memory.put_many([item, *self._vector_writes(namespace, op.key, vectors)])
            except RevisionMismatchError:
                continue  # another writer got in between: read again and retry
            await self._drop_vectors(namespace, op.key, len(vectors), _vector_count(old))
            return
        raise RevisionMismatchError(namespace, op.key, 0, 0)

    def _item_write(
        self, namespace: str, op: PutOp, old: MemoryEntry | None, vectors: int
    ) -> MemoryPut:
        tags = [ITEM_TAG, *_created_tag(old)]
        if vectors:
            tags.append(f"{_VECTORS}{vectors}")
        return MemoryPut(
            namespace=namespace,
            key=op.key,
            value=dict(op.value or {}),
            tier=self.tier,
            tags=tags,
            mode="cas",
            expected_revision=old.revision if old else 0,
            ttl=timedelta(minutes=op.ttl) if op.ttl is not None else None,
            fence=self.fence,
        )

    def _vector_writes(self, namespace: str, key: str, vectors: Vectors) -> list[MemoryPut]:
        where = _names.vectors_of(namespace)
        return [
            MemoryPut(
                namespace=where,
                key=f"{key}#{i}",
                value={"key": key, "path": path},
                tier=self.tier,
                text=text,
                embedding=vector,
                tags=[VECTOR_TAG],
                mode="lww",
                fence=self.fence,
            )
            for i, (path, text, vector) in enumerate(vectors)
        ]

    async def _drop_vectors(self, namespace: str, key: str, keep: int, old_count: int) -> None:
        """Vectors an item no longer has (search ignores them already: see ``_nearest``)."""
        memory = self._bridge.aclient.memory
        where = _names.vectors_of(namespace)
        await asyncio.gather(
            *(memory.delete(where, f"{key}#{i}", fence=self.fence) for i in range(keep, old_count))
        )

    async def _search(self, op: SearchOp, query: list[float] | None) -> list[SearchItem]:
        prefix = _names.to_coordd(self.root, op.namespace_prefix)
        want = op.offset + op.limit
        if query is not None:
            found = await self._nearest(prefix, query, op.filter, want)
        else:
            found = [(None, e) async for e in self._scan(prefix) if _passes(e, op.filter)]
            found = found[:want]
        page = found[op.offset : want]
        if self._refresh_on_read(op.refresh_ttl):
            refreshed = await asyncio.gather(*(self._refresh(e) for _, e in page))
            page = [(s, e) for (s, _), e in zip(page, refreshed, strict=True)]
        out: list[SearchItem] = []
        for score, entry in page:
            namespace = _names.from_coordd(self.root, entry.namespace)
            assert namespace is not None
            out.append(CoorddSearchItem(namespace=namespace, entry=entry, score=score))
        return out

    async def _nearest(
        self,
        prefix: str,
        query: list[float],
        filter: dict[str, Any] | None,
        want: int,
    ) -> list[tuple[float | None, MemoryEntry]]:
        """Items by their best vector's similarity, filtered, at least *want* if there are."""
        memory = self._bridge.aclient.memory
        k = min(_MAX_K, max(want * 3, want + 10))
        while True:
            hits = await memory.search(query, k, [prefix])
            # item -> [(similarity, vector index; None: the entry's own embedding)]
            scores: dict[tuple[str, str], list[tuple[float, int | None]]] = {}
            own: dict[tuple[str, str], MemoryEntry] = {}
            for hit in hits:
                owner = _names.items_of(hit.entry.namespace)
                if owner is not None and isinstance(hit.entry.value, dict):
                    ref = (owner, str(hit.entry.value.get("key", "")))
                    scores.setdefault(ref, []).append(
                        (1.0 - hit.distance, _vector_index(hit.entry.key))
                    )
                elif _names.from_coordd(self.root, hit.entry.namespace) is not None:
                    ref = (hit.entry.namespace, hit.entry.key)  # an entry with its own vector
                    own[ref] = hit.entry
                    scores.setdefault(ref, []).append((1.0 - hit.distance, None))
            refs = list(scores)
            fetched = await asyncio.gather(
                *(_given(own[r]) if r in own else memory.get(*r) for r in refs)
            )
            scored: list[tuple[float | None, MemoryEntry]] = []
            for ref, entry in zip(refs, fetched, strict=True):
                if entry is None:
                    await self._drop_orphans(ref)
                    continue
                count = _vector_count(entry)
                # A vector beyond the item's count is left from an older version.
                live = [s for s, i in scores[ref] if i is None or i < count]
                if live and _passes(entry, filter):
                    scored.append((max(live), entry))
            scored.sort(key=lambda se: -(se[0] or 0.0))
            if len(scored) >= want or len(hits) < k or k >= _MAX_K:
                return scored
            k = min(_MAX_K, k * 2)

    async def _drop_orphans(self, ref: tuple[str, str]) -> None:
        """Vectors whose item is gone (expired, or deleted by a writer that died): remove."""
        memory = self._bridge.aclient.memory
        where = _names.vectors_of(ref[0])
        page = await memory.list(where, tags=[VECTOR_TAG], page_size=_PAGE)
        for e in page.entries:
            if e.namespace == where and isinstance(e.value, dict) and e.value.get("key") == ref[1]:
                with contextlib.suppress(Exception):
                    await memory.delete(where, e.key)

    async def _scan(self, prefix: str) -> Any:
        """Every item entry at or below *prefix* (skipping vector entries)."""
        memory = self._bridge.aclient.memory
        token = ""
        while True:
            page = await memory.list(prefix, page_size=_PAGE, page_token=token)
            for entry in page.entries:
                if _names.from_coordd(self.root, entry.namespace) is not None:
                    yield entry
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        literal: list[str] = []
        for c in conditions:
            if c.match_type == "prefix":
                for label in c.path:
                    if label == "*":
                        break
                    literal.append(label)
                break
        prefix = _names.to_coordd(self.root, tuple(literal))
        seen: set[tuple[str, ...]] = set()
        async for entry in self._scan(prefix):
            namespace = _names.from_coordd(self.root, entry.namespace)
            if namespace is not None and all(_matches_condition(c, namespace) for c in conditions):
                seen.add(namespace[: op.max_depth] if op.max_depth is not None else namespace)
        return sorted(seen)[op.offset : op.offset + op.limit]

    async def _history(self, namespace: tuple[str, ...], key: str) -> list[CoorddItem]:
        versions = await self._bridge.aclient.memory.history(
            _names.to_coordd(self.root, namespace), key, page_size=_PAGE
        )
        return [CoorddItem(namespace=namespace, entry=v) for v in versions]


def _checked(ops: Iterable[Op]) -> list[Op]:
    ops = list(ops)
    for op in ops:
        validate_op_namespace(op)
    return ops


def _assemble(
    texts: dict[Any, list[tuple[str, str]]], docs: Sequence[Sequence[float]]
) -> dict[Any, Vectors]:
    out: dict[Any, Vectors] = {}
    it = iter(docs)
    for ref, found in texts.items():
        vectors = [(path, text, list(next(it))) for path, text in found]
        # A zero vector (an empty text) has no direction: coordd cannot index it.
        out[ref] = [v for v in vectors if any(v[2])]
    return out


async def _given(entry: MemoryEntry | None) -> MemoryEntry | None:
    return entry


def _as_dict(value: Any) -> dict[str, Any]:
    # Entries written by other coordd clients may hold any JSON; LangGraph items are objects.
    return value if isinstance(value, dict) else {"value": value}


def _passes(entry: MemoryEntry, filter: dict[str, Any] | None) -> bool:
    return not filter or matches(_as_dict(entry.value), filter)


def _created_at(entry: MemoryEntry) -> datetime:
    for tag in entry.tags:
        if tag.startswith(_CREATED):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(tag[len(_CREATED) :])
    return entry.provenance.write_time


def _created_tag(old: MemoryEntry | None) -> list[str]:
    """The creation time to carry into the next version (none for a new item: its first
    version's write time is its creation time)."""
    if old is None:
        return []
    return [f"{_CREATED}{_created_at(old).isoformat()}"]


def _vector_index(key: str) -> int:
    """The index in a vector entry's key (``<item key>#<i>``)."""
    _, _, index = key.rpartition("#")
    return int(index) if index.isdigit() else -1


def _vector_count(entry: MemoryEntry | None) -> int:
    for tag in entry.tags if entry else ():
        if tag.startswith(_VECTORS):
            with contextlib.suppress(ValueError):
                return int(tag[len(_VECTORS) :])
    return 0


def _matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    window = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    if not path:
        return True
    return all(p == "*" or p == n for p, n in zip(path, window, strict=True))
