"""Memory: working (per task), episodic (aging) and semantic (versioned) entries, and search."""

from __future__ import annotations

import builtins
import json
import sys
from array import array
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from coordd import wire
from coordd.v1 import memory_service_pb2 as pb
from coordd.v1 import memory_service_pb2_grpc as pb_grpc
from coordd.vocabulary import TaskOutcome, Tier, WriteMode

from . import _convert as cv
from ._blocking import Face, blocking
from ._core import Core, Service
from ._models import (
    EntryRef,
    Fence,
    MemoryEntry,
    MemoryPage,
    MemoryPut,
    NamespacePolicy,
    RefHit,
    SearchHit,
)


def _found_entry(resp: pb.GetMemoryResponse) -> MemoryEntry | None:
    return _entry(resp.entry) if resp.found else None


def _entry(msg: pb.MemoryEntry) -> MemoryEntry:
    return wire.from_message(
        MemoryEntry,
        msg,
        tier=Tier.label_of(msg.tier, "unspecified"),
        value=json.loads(msg.value_json) if msg.value_json else None,
    )


def _refs(refs: Sequence[EntryRef | tuple[str, str]]) -> list[pb.EntryRef]:
    out = []
    for r in refs:
        if isinstance(r, EntryRef):
            out.append(pb.EntryRef(namespace=r.namespace, key=r.key, revision=r.revision))
        else:
            out.append(pb.EntryRef(namespace=r[0], key=r[1]))
    return out


def _ts(value: datetime | None) -> Any:
    return wire.timestamp(value)


def _put_request(w: MemoryPut) -> pb.PutMemoryRequest:
    return pb.PutMemoryRequest(
        **cv.write_fields(w),
        embedding=list(w.embedding or ()),
        derived_from=_refs(w.derived_from),
        review_time=_ts(w.review_time),
        confidence=w.confidence,
        fence=cv.fence(w.fence),
        request_id=w.request_id,
    )


def _packed_f32(values: Sequence[float]) -> bytes:
    """*values* as packed little-endian float32 (``embedding_f32``): a 1-D float32 array's
    own bytes, else the numbers converted once (as the repeated float field would)."""
    try:
        view = memoryview(values)  # type: ignore[arg-type]
    except TypeError:  # a list or tuple of numbers
        packed = array("f", values)
    else:
        if view.ndim == 1 and view.c_contiguous and view.format in _NATIVE_F32:
            return view.tobytes()
        packed = array("f", view.tolist())
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


_NATIVE_F32 = frozenset({"f", "<f"} if sys.byteorder == "little" else ())


def _filters(
    tier: str | None, tags: Sequence[str], task_id: str, include_stale: bool
) -> dict[str, Any]:
    """The request fields of ``list`` and ``search`` that choose which entries count."""
    return {
        "tier": Tier.parse(tier, "tier").number if tier else 0,
        "tags": list(tags),
        "task_id": task_id,
        "include_stale": include_stale,
    }


class _DecodedHits:
    """Search hits decoded once per distinct entry message (its exact bytes are the key), so
    the entries a client keeps finding are not decoded again on every search; bounded by the
    bytes of the messages kept, oldest out first. Entries found again are the same objects:
    treat them as read-only (as the embedded cache's)."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: dict[bytes, MemoryEntry] = {}

    def entry(self, msg: pb.MemoryEntry) -> MemoryEntry:
        raw = msg.SerializeToString(deterministic=True)
        found = self._entries.get(raw)
        if found is None:
            found = self._entries[raw] = _entry(msg)
            self._bytes += len(raw)
            while self._bytes > self._max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= len(oldest)
                del self._entries[oldest]
        return found


class AsyncMemory(Service):
    """``client.memory``. Reads pass this session's revisions, so you always see your writes."""

    stub_class = pb_grpc.MemoryServiceStub
    _stub: pb_grpc.MemoryServiceAsyncStub

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self._hits = _DecodedHits()

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        tier: str = "semantic",
        text: str = "",
        embedding: Sequence[float] | None = None,
        tags: Sequence[str] = (),
        task_id: str = "",
        mode: str | None = None,
        expected_revision: int | None = None,
        ttl: timedelta | float | None = None,
        derived_from: Sequence[EntryRef | tuple[str, str]] = (),
        review_time: datetime | None = None,
        confidence: float = 0.0,
        fence: Fence | None = None,
        request_id: str = "",
    ) -> MemoryEntry:
        """Write an entry. *mode*: "lww", "merge" (RFC 7386 patch) or "cas" (with
        *expected_revision*, 0 = must not exist); None uses the namespace's policy, or CAS when
        *expected_revision* is given. Provenance is stamped by the daemon."""
        write = MemoryPut(
            namespace=namespace,
            key=key,
            value=value,
            tier=tier,
            text=text,
            embedding=embedding,
            tags=tags,
            task_id=task_id,
            mode=mode,
            expected_revision=expected_revision,
            ttl=ttl,
            derived_from=derived_from,
            review_time=review_time,
            confidence=confidence,
            fence=fence,
            request_id=request_id,
        )
        resp = await self._core.call(self._stub.PutMemory, _put_request(write))
        return _entry(resp.entry)

    async def put_many(self, writes: Sequence[MemoryPut]) -> builtins.list[MemoryEntry]:
        """Write up to 1,000 entries in one transaction: all of them, or none.

        Each ``MemoryPut`` carries what ``put`` takes (its own namespace, mode, expected
        revision, fence), applied in order, each with its own revision. If any is refused
        (a compare-and-set that does not match, a stale fence, ...), nothing is written and
        that entry's error is raised; a bad field is reported as ``entries[i].<field>``.
        """
        resp = await self._core.call(
            self._stub.PutMemories,
            pb.PutMemoriesRequest(entries=[_put_request(w) for w in writes]),
        )
        for r in resp.results:
            self._core.session.observe(r.header.namespace, r.header.revision)
        return [_entry(r.entry) for r in resp.results]

    async def get(
        self, namespace: str, key: str, *, as_of: datetime | None = None
    ) -> MemoryEntry | None:
        """The current (or, with *as_of*, the then-current) version, or None."""
        resp = await self._core.call(
            self._stub.GetMemory,
            pb.GetMemoryRequest(
                namespace=namespace,
                key=key,
                as_of=_ts(as_of),
                min_revision=self._core.session.revision(namespace),
            ),
        )
        return self._core.decoded(resp, _found_entry)

    async def delete(
        self,
        namespace: str,
        key: str,
        *,
        expected_revision: int | None = None,
        fence: Fence | None = None,
    ) -> bool:
        resp = await self._core.call(
            self._stub.DeleteMemory,
            pb.DeleteMemoryRequest(
                namespace=namespace,
                key=key,
                expected_revision=expected_revision,
                fence=cv.fence(fence),
            ),
        )
        return resp.deleted

    async def list(
        self,
        namespace_prefix: str,
        *,
        tier: str | None = None,
        tags: Sequence[str] = (),
        task_id: str = "",
        include_stale: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> MemoryPage:
        resp = await self._core.call(
            self._stub.ListMemory,
            pb.ListMemoryRequest(
                namespace_prefix=namespace_prefix,
                **_filters(tier, tags, task_id, include_stale),
                page_size=page_size,
                page_token=page_token,
            ),
        )
        return MemoryPage(
            entries=[_entry(e) for e in resp.entries], next_page_token=resp.next_page_token
        )

    async def history(
        self, namespace: str, key: str, *, page_size: int = 0, page_token: str = ""
    ) -> builtins.list[MemoryEntry]:
        """Every version of *key*, newest first, each with its provenance and validity."""
        resp = await self._core.call(
            self._stub.MemoryHistory,
            pb.MemoryHistoryRequest(
                namespace=namespace, key=key, page_size=page_size, page_token=page_token
            ),
        )
        return [_entry(e) for e in resp.versions]

    async def search(
        self,
        embedding: Sequence[float],
        k: int,
        namespace_prefixes: str | Sequence[str],
        *,
        tier: str | None = None,
        tags: Sequence[str] = (),
        task_id: str = "",
        include_stale: bool = False,
        ef: int = 0,
    ) -> builtins.list[SearchHit]:
        """The k nearest entries by cosine distance, after filtering (stale ones excluded
        unless asked for); reflects at least this session's writes. *embedding* is a sequence
        of numbers, or a float32 array (numpy, ``array('f')``: its bytes are sent as they
        are). An entry found again unchanged is the same object as before: treat hits as
        read-only."""
        resp = await self._core.call(
            self._stub.SearchMemory,
            self._search_request(
                embedding, k, namespace_prefixes, tier, tags, task_id, include_stale, ef
            ),
        )
        decoded = self._hits.entry
        return [SearchHit(entry=decoded(h.entry), distance=h.distance) for h in resp.hits]

    async def search_refs(
        self,
        embedding: Sequence[float],
        k: int,
        namespace_prefixes: str | Sequence[str],
        *,
        tier: str | None = None,
        tags: Sequence[str] = (),
        task_id: str = "",
        include_stale: bool = False,
        ef: int = 0,
    ) -> builtins.list[RefHit]:
        """:meth:`search`'s hits without their entries: each hit's namespace, key, revision
        and distance (``SEARCH_VIEW_REF``). The same entries, filtered the same way; the
        daemon reads and sends no values, so it is cheaper when the caller keeps the contents
        itself or reads only the few it uses (``get``)."""
        request = self._search_request(
            embedding, k, namespace_prefixes, tier, tags, task_id, include_stale, ef
        )
        request.view = pb.SEARCH_VIEW_REF
        resp = await self._core.call(self._stub.SearchMemory, request)
        hits = []
        for h in resp.hits:  # one object per hit: the decode is most of this call's own CPU
            ref = h.ref
            hits.append(
                RefHit(
                    namespace=ref.namespace, key=ref.key, revision=ref.revision, distance=h.distance
                )
            )
        return hits

    def _search_request(
        self,
        embedding: Sequence[float],
        k: int,
        namespace_prefixes: str | Sequence[str],
        tier: str | None,
        tags: Sequence[str],
        task_id: str,
        include_stale: bool,
        ef: int,
    ) -> pb.SearchMemoryRequest:
        prefixes = (
            [namespace_prefixes]
            if isinstance(namespace_prefixes, str)
            else list(namespace_prefixes)
        )
        # Only the fields set: setting an empty one costs as much as a set one (a search
        # request with every filter empty: 6.3 -> 1.2 us to build).
        request = pb.SearchMemoryRequest(
            embedding_f32=_packed_f32(embedding),
            k=k,
            namespace_prefixes=prefixes,
            ef=ef,
            **{f: v for f, v in _filters(tier, tags, task_id, include_stale).items() if v},
        )
        revisions = {
            ns: rev
            for ns, rev in self._core.session.vector.items()
            if any(ns == p or ns.startswith(p + "/") for p in prefixes)
        }
        if revisions:
            request.min_revisions.revisions.update(revisions)
        return request

    async def start_task(
        self, namespace: str, task_id: str, *, lease: timedelta | float | None = None
    ) -> datetime:
        """Open a task (working memory needs one); returns its lease expiry."""
        resp = await self._core.call(
            self._stub.StartTask,
            pb.StartTaskRequest(namespace=namespace, task_id=task_id, lease=cv.duration(lease)),
        )
        return cv.dt(resp.lease_expire_time)

    async def end_task(
        self,
        namespace: str,
        task_id: str,
        *,
        outcome: str = "succeeded",
        archive: bool = False,
        summary: Any = None,
        summary_text: str = "",
        summary_embedding: Sequence[float] | None = None,
    ) -> tuple[int, MemoryEntry | None]:
        """End a task: its working memory goes at once; with *archive* it becomes one
        episodic entry ("task/<id>") listing its sources. Returns (removed, episode)."""
        resp = await self._core.call(
            self._stub.EndTask,
            pb.EndTaskRequest(
                namespace=namespace,
                task_id=task_id,
                outcome=TaskOutcome.parse(outcome, "outcome").number,  # type: ignore[arg-type]
                archive=archive,
                summary_json=json.dumps(summary) if summary is not None else "",
                summary_text=summary_text,
                summary_embedding=list(summary_embedding or ()),
            ),
        )
        return resp.removed, _entry(resp.episode) if resp.HasField("episode") else None

    async def compact_episodes(
        self,
        namespace: str,
        keys: Sequence[str],
        summary_key: str,
        summary: Any,
        *,
        text: str = "",
        embedding: Sequence[float] | None = None,
        tags: Sequence[str] = (),
    ) -> MemoryEntry:
        """Replace episodes by one summary episode, atomically; lineage in derived_from."""
        resp = await self._core.call(
            self._stub.CompactEpisodes,
            pb.CompactEpisodesRequest(
                namespace=namespace,
                keys=list(keys),
                summary_key=summary_key,
                summary_json=json.dumps(summary),
                summary_text=text,
                summary_embedding=list(embedding or ()),
                tags=list(tags),
            ),
        )
        return _entry(resp.summary)

    async def set_policy(self, namespace: str, policy: NamespacePolicy) -> NamespacePolicy:
        resp = await self._core.call(
            self._stub.SetNamespacePolicy,
            pb.SetNamespacePolicyRequest(
                namespace=namespace,
                policy=pb.NamespacePolicy(
                    default_write_mode=cv.write_mode(policy.default_mode, "default_mode"),
                    forbid_unconditional_writes=policy.forbid_unconditional,
                    episodic_max_age=cv.duration(policy.episodic_max_age),
                    episodic_max_count=policy.episodic_max_count,
                ),
            ),
        )
        return _policy(resp.policy)

    async def get_policy(self, namespace: str) -> NamespacePolicy:
        resp = await self._core.call(
            self._stub.GetNamespacePolicy, pb.GetNamespacePolicyRequest(namespace=namespace)
        )
        return _policy(resp.policy)


def _policy(msg: pb.NamespacePolicy) -> NamespacePolicy:
    return NamespacePolicy(
        default_mode=WriteMode.label_of(msg.default_write_mode) or "lww",
        forbid_unconditional=msg.forbid_unconditional_writes,
        episodic_max_age=msg.episodic_max_age.ToTimedelta()
        if msg.HasField("episodic_max_age")
        else None,
        episodic_max_count=msg.episodic_max_count,
    )


class Memory(Face[AsyncMemory]):
    """Blocking ``client.memory``; see ``AsyncMemory`` for each call."""

    put = blocking(AsyncMemory.put)
    put_many = blocking(AsyncMemory.put_many)
    get = blocking(AsyncMemory.get)
    delete = blocking(AsyncMemory.delete)
    list = blocking(AsyncMemory.list)
    history = blocking(AsyncMemory.history)
    search = blocking(AsyncMemory.search)
    search_refs = blocking(AsyncMemory.search_refs)
    start_task = blocking(AsyncMemory.start_task)
    end_task = blocking(AsyncMemory.end_task)
    compact_episodes = blocking(AsyncMemory.compact_episodes)
    set_policy = blocking(AsyncMemory.set_policy)
    get_policy = blocking(AsyncMemory.get_policy)
