"""MemoryService over gRPC: authorize, validate, convert, call."""

from __future__ import annotations

from typing import Any

import grpc

from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.consistency import at_least, wait_budget
from coordd.domain.memory import MemorySearch, SearchQuery
from coordd.domain.memory_writes import check_tags, check_write
from coordd.domain.models import EntryRef, MemoryWrite, NamespacePolicy
from coordd.errors import FieldViolation, InvalidArgumentError
from coordd.server import convert
from coordd.server.base import ServicerBase, check_fence
from coordd.server.interceptors import current_identity
from coordd.storage.memory import MemoryStore
from coordd.telemetry import current_trace_id
from coordd.v1 import memory_service_pb2 as pb
from coordd.v1 import memory_service_pb2_grpc as pb_grpc
from coordd.vocabulary import Tier, WriteMode

Ctx = grpc.aio.ServicerContext[Any, Any]


def _key(c: v.Checker, namespace: str, key: str) -> None:
    c.namespace("namespace", namespace)
    c.name("key", key, v.MEMORY_KEY_MAX_BYTES)


def _embedding(c: v.Checker, field: str, values: Any, *, required: bool = False) -> None:
    if problem := v.embedding_problem(values, required=required):
        c.fail(field, problem)


def _memory_write(req: pb.PutMemoryRequest) -> MemoryWrite:
    """A PutMemoryRequest validated (every bad field at once) and converted."""
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    review_time = convert.instant(req.review_time, req.HasField("review_time"), "review_time")
    expected = req.expected_revision if req.HasField("expected_revision") else None
    with v.checking() as c:
        check_write(
            c,
            "",
            namespace=req.namespace,
            key=req.key,
            tier=req.tier,
            value_json=req.value_json,
            text=req.text,
            tags=req.tags,
            task_id=req.task_id,
            write_mode=req.write_mode,
            expected_revision=expected,
            ttl=ttl,
        )
        _embedding(c, "embedding", req.embedding)
        if len(req.derived_from) > v.MAX_DERIVED:
            c.fail("derived_from", f"must list at most {v.MAX_DERIVED} entries")
        for i, ref in enumerate(req.derived_from):
            c.namespace(f"derived_from[{i}].namespace", ref.namespace)
            c.name(f"derived_from[{i}].key", ref.key, v.MEMORY_KEY_MAX_BYTES)
        if req.HasField("review_time") and req.tier != pb.MEMORY_TIER_SEMANTIC:
            c.fail("review_time", "applies to SEMANTIC memory only")
        if not 0.0 <= req.confidence <= 1.0:
            c.fail("confidence", "must be between 0 and 1")
        c.text("request_id", req.request_id, 128)
        check_fence(c, req.fence, req.HasField("fence"))
    return MemoryWrite(
        namespace=req.namespace,
        key=req.key,
        tier=Tier(req.tier),
        value_json=req.value_json,
        text=req.text,
        embedding=convert.embedding_bytes(req.embedding),
        dim=len(req.embedding),
        tags=list(req.tags),
        task_id=req.task_id,
        mode=WriteMode.of_number(req.write_mode),
        expected_revision=expected,
        ttl=ttl,
        derived_from=[
            EntryRef(namespace=r.namespace, key=r.key, revision=r.revision)
            for r in req.derived_from
        ],
        review_time=review_time,
        confidence=req.confidence,
        fence=convert.fence(req.fence, req.HasField("fence")),
        request_id=req.request_id,
    )


class MemoryServicer(ServicerBase, pb_grpc.MemoryServiceServicer):
    def __init__(
        self, store: MemoryStore, search: MemorySearch, policy: Policy, server_id: str
    ) -> None:
        super().__init__(policy, server_id)
        self._store = store
        self._search = search

    async def PutMemory(self, req: pb.PutMemoryRequest, ctx: Ctx) -> pb.PutMemoryResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        entry = await self._store.put(who, current_trace_id(), _memory_write(req))
        return pb.PutMemoryResponse(  # the caller has the embedding: not echoed back
            header=self.header(req.namespace, entry.revision),
            entry=convert.memory_entry(entry, with_embedding=False),
        )

    async def PutMemories(self, req: pb.PutMemoriesRequest, ctx: Ctx) -> pb.PutMemoriesResponse:
        who = current_identity()
        for ns in dict.fromkeys(e.namespace for e in req.entries):
            who = self.authorize(Operation.WRITE, ns)
        if not 1 <= len(req.entries) <= v.MAX_PUT_BATCH:
            raise InvalidArgumentError.single(
                "entries", f"must hold 1 to {v.MAX_PUT_BATCH} entries (got {len(req.entries)})"
            )
        writes: list[MemoryWrite] = []
        violations: list[FieldViolation] = []
        for i, e in enumerate(req.entries):
            try:
                writes.append(_memory_write(e))
            except InvalidArgumentError as err:
                violations += [
                    FieldViolation(f"entries[{i}].{f.field}", f.description) for f in err.violations
                ]
        if violations:
            raise InvalidArgumentError(violations)
        entries = await self._store.put_many(who, current_trace_id(), writes)
        return pb.PutMemoriesResponse(
            results=[
                pb.PutMemoryResponse(
                    header=self.header(e.namespace, e.revision),
                    entry=convert.memory_entry(e, with_embedding=False),
                )
                for e in entries
            ]
        )

    async def GetMemory(self, req: pb.GetMemoryRequest, ctx: Ctx) -> pb.GetMemoryResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            _key(c, req.namespace, req.key)
            c.min_revision("min_revision", req.min_revision)
        as_of = convert.instant(req.as_of, req.HasField("as_of"), "as_of")
        revision, entry = await at_least(
            req.namespace,
            req.min_revision,
            lambda: self._store.get(req.namespace, req.key, as_of),
            wait_budget(ctx.time_remaining()),
        )
        return pb.GetMemoryResponse(
            header=self.header(req.namespace, revision),
            found=entry is not None,
            entry=convert.memory_entry(entry) if entry else None,
        )

    async def DeleteMemory(self, req: pb.DeleteMemoryRequest, ctx: Ctx) -> pb.DeleteMemoryResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        expected = req.expected_revision if req.HasField("expected_revision") else None
        with v.checking() as c:
            _key(c, req.namespace, req.key)
            check_fence(c, req.fence, req.HasField("fence"))
        revision, deleted = await self._store.delete(
            who,
            req.namespace,
            req.key,
            expected,
            convert.fence(req.fence, req.HasField("fence")),
        )
        return pb.DeleteMemoryResponse(header=self.header(req.namespace, revision), deleted=deleted)

    async def ListMemory(self, req: pb.ListMemoryRequest, ctx: Ctx) -> pb.ListMemoryResponse:
        self.authorize_subtree(Operation.READ, req.namespace_prefix)
        with v.checking() as c:
            c.namespace("namespace_prefix", req.namespace_prefix)
            c.page_size("page_size", req.page_size)
            check_tags(c, "tags", req.tags)
            c.min_revision("min_revision", req.min_revision)
        after = convert.decode_page_token(req.page_token)
        ns, _, key = after.partition("\x00")
        limit = req.page_size or v.DEFAULT_PAGE_SIZE
        revision, entries = await at_least(
            req.namespace_prefix,
            req.min_revision,
            lambda: self._store.list_entries(
                req.namespace_prefix,
                int(req.tier),
                list(req.tags),
                req.task_id,
                req.include_stale,
                (ns, key),
                limit + 1,
            ),
            wait_budget(ctx.time_remaining()),
        )
        page = entries[:limit]
        return pb.ListMemoryResponse(
            header=self.header(req.namespace_prefix, revision),
            entries=[convert.memory_entry(e, with_embedding=False) for e in page],
            next_page_token=convert.encode_page_token(
                f"{page[-1].namespace}\x00{page[-1].key}" if len(entries) > limit else None
            ),
        )

    async def MemoryHistory(
        self, req: pb.MemoryHistoryRequest, ctx: Ctx
    ) -> pb.MemoryHistoryResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            _key(c, req.namespace, req.key)
            c.page_size("page_size", req.page_size)
            c.min_revision("min_revision", req.min_revision)
        token = convert.decode_page_token(req.page_token)
        before = int(token) if token.isdigit() else 2**62
        limit = req.page_size or v.DEFAULT_PAGE_SIZE
        revision, versions = await at_least(
            req.namespace,
            req.min_revision,
            lambda: self._store.history(req.namespace, req.key, before, limit + 1),
            wait_budget(ctx.time_remaining()),
        )
        page = versions[:limit]
        return pb.MemoryHistoryResponse(
            header=self.header(req.namespace, revision),
            versions=[convert.memory_entry(e) for e in page],
            next_page_token=convert.encode_page_token(
                str(page[-1].revision) if len(versions) > limit else None
            ),
        )

    async def SearchMemory(self, req: pb.SearchMemoryRequest, ctx: Ctx) -> pb.SearchMemoryResponse:
        # No grant is needed on the prefix itself: results hold only namespaces the caller may
        # read, filtered before ranking (MemorySearch.readable).
        who = current_identity()
        with v.checking() as c:
            _embedding(c, "embedding", req.embedding, required=True)
            if not 1 <= req.k <= v.MAX_SEARCH_K:
                c.fail("k", f"must be between 1 and {v.MAX_SEARCH_K}")
            if not 1 <= len(req.namespace_prefixes) <= v.MAX_PREFIXES:
                c.fail("namespace_prefixes", f"must list 1 to {v.MAX_PREFIXES} prefixes")
            for i, p in enumerate(req.namespace_prefixes):
                c.namespace(f"namespace_prefixes[{i}]", p)
            if req.tier and not Tier.knows(req.tier):
                c.fail("tier", "is not a known tier")
            check_tags(c, "tags", req.tags)
            c.vector("min_revisions", dict(req.min_revisions.revisions))
            if not 0 <= req.ef <= 4096:
                c.fail("ef", "must be between 0 (default) and 4096")
        revision, hits = await self._search.search(
            who,
            SearchQuery(
                embedding=convert.embedding_bytes(req.embedding),
                dim=len(req.embedding),
                k=req.k,
                namespace_prefixes=list(req.namespace_prefixes),
                tier=Tier(req.tier) if req.tier else None,
                tags=list(req.tags),
                task_id=req.task_id,
                include_stale=req.include_stale,
                min_revisions=dict(req.min_revisions.revisions),
                ef=req.ef,
            ),
            wait_budget(ctx.time_remaining()),
        )
        return pb.SearchMemoryResponse(
            header=self.header(req.namespace_prefixes[0], revision),
            hits=[
                pb.SearchHit(entry=convert.memory_entry(e, with_embedding=False), distance=d)
                for e, d in hits
            ],
        )

    async def StartTask(self, req: pb.StartTaskRequest, ctx: Ctx) -> pb.StartTaskResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        lease = convert.duration(req.lease, req.HasField("lease"), "lease")
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.name("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
            c.duration("lease", lease, v.TASK_LEASE_MIN, v.TASK_LEASE_MAX)
        revision, expires = await self._store.start_task(
            who, req.namespace, req.task_id, lease or v.TASK_LEASE_DEFAULT
        )
        return pb.StartTaskResponse(
            header=self.header(req.namespace, revision),
            lease_expire_time=convert.timestamp(expires),
        )

    async def EndTask(self, req: pb.EndTaskRequest, ctx: Ctx) -> pb.EndTaskResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        outcomes = {
            pb.TASK_OUTCOME_UNSPECIFIED: "succeeded",
            pb.TASK_OUTCOME_SUCCEEDED: "succeeded",
            pb.TASK_OUTCOME_FAILED: "failed",
            pb.TASK_OUTCOME_CANCELLED: "cancelled",
            pb.TASK_OUTCOME_EXPIRED: "expired",
        }
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.name("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
            if req.outcome not in outcomes:
                c.fail("outcome", "is not a known outcome")
            c.json("summary_json", req.summary_json, required=False)
            c.text("summary_text", req.summary_text, v.MEMORY_TEXT_MAX_BYTES)
            _embedding(c, "summary_embedding", req.summary_embedding)
        revision, removed, episode = await self._store.end_task(
            who,
            current_trace_id(),
            req.namespace,
            req.task_id,
            outcomes[req.outcome],
            req.archive,
            req.summary_json,
            req.summary_text,
            convert.embedding_bytes(req.summary_embedding),
            len(req.summary_embedding),
        )
        return pb.EndTaskResponse(
            header=self.header(req.namespace, revision),
            removed=removed,
            episode=convert.memory_entry(episode) if episode else None,
        )

    async def CompactEpisodes(
        self, req: pb.CompactEpisodesRequest, ctx: Ctx
    ) -> pb.CompactEpisodesResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            if not 1 <= len(req.keys) <= 1000:
                c.fail("keys", "must list 1 to 1000 episode keys")
            for i, key in enumerate(req.keys):
                c.name(f"keys[{i}]", key, v.MEMORY_KEY_MAX_BYTES)
            c.name("summary_key", req.summary_key, v.MEMORY_KEY_MAX_BYTES)
            c.json("summary_json", req.summary_json)
            c.text("summary_text", req.summary_text, v.MEMORY_TEXT_MAX_BYTES)
            _embedding(c, "summary_embedding", req.summary_embedding)
            check_tags(c, "tags", req.tags)
        entry = await self._store.compact(
            who,
            current_trace_id(),
            req.namespace,
            sorted(set(req.keys)),
            req.summary_key,
            req.summary_json,
            req.summary_text,
            convert.embedding_bytes(req.summary_embedding),
            len(req.summary_embedding),
            list(req.tags),
        )
        return pb.CompactEpisodesResponse(
            header=self.header(req.namespace, entry.revision),
            summary=convert.memory_entry(entry),
        )

    async def SetNamespacePolicy(
        self, req: pb.SetNamespacePolicyRequest, ctx: Ctx
    ) -> pb.SetNamespacePolicyResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        p = req.policy
        max_age = convert.duration(
            p.episodic_max_age, p.HasField("episodic_max_age"), "policy.episodic_max_age"
        )
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            if not WriteMode.knows(p.default_write_mode):
                c.fail("policy.default_write_mode", "is not a known write mode")
            if p.episodic_max_count < 0:
                c.fail("policy.episodic_max_count", "must be >= 0")
            c.duration("policy.episodic_max_age", max_age, v.MEMORY_TTL_MIN, v.MEMORY_TTL_MAX)
        policy = NamespacePolicy(
            default_mode=WriteMode.of_number(p.default_write_mode) or "lww",
            forbid_unconditional=p.forbid_unconditional_writes,
            episodic_max_age=max_age,
            episodic_max_count=p.episodic_max_count,
        )
        revision = await self._store.set_policy(who, req.namespace, policy)
        return pb.SetNamespacePolicyResponse(
            header=self.header(req.namespace, revision), policy=convert.policy_message(policy)
        )

    async def GetNamespacePolicy(
        self, req: pb.GetNamespacePolicyRequest, ctx: Ctx
    ) -> pb.GetNamespacePolicyResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
        revision, policy = await self._store.get_policy(req.namespace)
        return pb.GetNamespacePolicyResponse(
            header=self.header(req.namespace, revision), policy=convert.policy_message(policy)
        )
