"""MemoryService requests, read and checked (write rules: coordd/domain/memory_writes.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from coordd import wire
from coordd.domain import memory as m
from coordd.domain import validation as v
from coordd.domain.memory_writes import check_tags, check_write
from coordd.domain.models import MemoryWrite, NamespacePolicy
from coordd.errors import FieldViolation, InvalidArgumentError
from coordd.server import convert
from coordd.server.requests import check_fence
from coordd.v1 import memory_service_pb2 as pb
from coordd.vocabulary import TaskOutcome, Tier, WriteMode

SEARCH_EF_MAX = 4096
_SEARCH_VIEWS = frozenset(pb.SearchView.values())
COMPACT_KEYS_MAX = 1000


def _key(c: v.Checker, namespace: str, key: str) -> None:
    c.namespace("namespace", namespace)
    c.name("key", key, v.MEMORY_KEY_MAX_BYTES)


def _embedding(c: v.Checker, field: str, values: Any, *, required: bool = False) -> None:
    if problem := v.embedding_problem(values, required=required):
        c.fail(field, problem)


def put_memory(req: pb.PutMemoryRequest) -> MemoryWrite:
    """A PutMemoryRequest validated (every bad field at once) and converted."""
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    review_time = convert.instant(req.review_time, req.HasField("review_time"), "review_time")
    expected = req.expected_revision if req.HasField("expected_revision") else None
    vector = convert.embedding_array(req.embedding)  # read once: checked, then stored
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
        _embedding(c, "embedding", vector)
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
    # The other fields are the request's, as they are (tier checked above).
    return wire.from_message(
        MemoryWrite,
        req,
        embedding=vector.tobytes(),
        dim=len(vector),
        mode=WriteMode.of_number(req.write_mode),
        ttl=ttl,
        review_time=review_time,
    )


def put_memories(req: pb.PutMemoriesRequest) -> list[MemoryWrite]:
    """Every entry read as :func:`put_memory` reads one; violations named ``entries[i].<field>``."""
    if not 1 <= len(req.entries) <= v.MAX_PUT_BATCH:
        raise InvalidArgumentError.single(
            "entries", f"must hold 1 to {v.MAX_PUT_BATCH} entries (got {len(req.entries)})"
        )
    writes: list[MemoryWrite] = []
    violations: list[FieldViolation] = []
    for i, e in enumerate(req.entries):
        try:
            writes.append(put_memory(e))
        except InvalidArgumentError as err:
            violations += [
                FieldViolation(f"entries[{i}].{f.field}", f.description) for f in err.violations
            ]
    if violations:
        raise InvalidArgumentError(violations)
    return writes


def get_memory(req: pb.GetMemoryRequest) -> m.KeyRead:
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        c.min_revision("min_revision", req.min_revision)
    as_of = convert.instant(req.as_of, req.HasField("as_of"), "as_of")
    return wire.from_message(m.KeyRead, req, as_of=as_of)


def delete_memory(req: pb.DeleteMemoryRequest) -> m.Deletion:
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        check_fence(c, req.fence, req.HasField("fence"))
    return wire.from_message(m.Deletion, req)


def list_memory(req: pb.ListMemoryRequest) -> m.Listing:
    with v.checking() as c:
        c.namespace("namespace_prefix", req.namespace_prefix)
        c.page_size("page_size", req.page_size)
        check_tags(c, "tags", req.tags)
        c.min_revision("min_revision", req.min_revision)
    return m.Listing(
        prefix=req.namespace_prefix,
        tier=int(req.tier),
        tags=list(req.tags),
        task_id=req.task_id,
        include_stale=req.include_stale,
        after=convert.decode_page_token(req.page_token),
        limit=req.page_size or v.DEFAULT_PAGE_SIZE,
        min_revision=req.min_revision,
    )


def memory_history(req: pb.MemoryHistoryRequest) -> m.HistoryRead:
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        c.page_size("page_size", req.page_size)
        c.min_revision("min_revision", req.min_revision)
    return wire.from_message(
        m.HistoryRead,
        req,
        after=convert.decode_page_token(req.page_token),
        limit=req.page_size or v.DEFAULT_PAGE_SIZE,
    )


def _search_embedding(c: v.Checker, req: pb.SearchMemoryRequest) -> npt.NDArray[np.float32]:
    """The query vector from ``embedding_f32`` (its bytes as they are) or ``embedding``."""
    packed = req.embedding_f32
    if not packed:
        vector = convert.embedding_array(req.embedding)  # read once: checked, then sent on
        _embedding(c, "embedding", vector, required=True)
        return vector
    if len(req.embedding):
        c.fail("embedding_f32", "set embedding or embedding_f32, not both")
    if len(packed) % 4:
        c.fail("embedding_f32", f"must be 4 bytes per dimension (got {len(packed)} bytes)")
        return np.zeros(0, dtype="<f4")
    vector = np.frombuffer(packed, dtype="<f4")
    # Its values are the query embedding's, whichever field carried them: named as such.
    _embedding(c, "embedding", vector, required=True)
    return vector


def search_memory(req: pb.SearchMemoryRequest) -> m.SearchQuery:
    min_revisions = dict(req.min_revisions.revisions)
    prefixes = list(req.namespace_prefixes)
    with v.checking() as c:
        vector = _search_embedding(c, req)
        if not 1 <= req.k <= v.MAX_SEARCH_K:
            c.fail("k", f"must be between 1 and {v.MAX_SEARCH_K}")
        if not 1 <= len(prefixes) <= v.MAX_PREFIXES:
            c.fail("namespace_prefixes", f"must list 1 to {v.MAX_PREFIXES} prefixes")
        for i, p in enumerate(prefixes):
            c.namespace(f"namespace_prefixes[{i}]", p)
        if req.tier and not Tier.knows(req.tier):
            c.fail("tier", "is not a known tier")
        check_tags(c, "tags", req.tags)
        c.vector("min_revisions", min_revisions)
        if not 0 <= req.ef <= SEARCH_EF_MAX:
            c.fail("ef", f"must be between 0 (default) and {SEARCH_EF_MAX}")
        if req.view not in _SEARCH_VIEWS:
            c.fail("view", f"must be one of {', '.join(pb.SearchView.keys())}")
    return m.SearchQuery(
        embedding=vector.tobytes(),
        dim=len(vector),
        k=req.k,
        namespace_prefixes=prefixes,
        tier=Tier(req.tier) if req.tier else None,
        tags=list(req.tags),
        task_id=req.task_id,
        include_stale=req.include_stale,
        min_revisions=min_revisions,
        ef=req.ef,
        refs_only=req.view == pb.SEARCH_VIEW_REF,
    )


def start_task(req: pb.StartTaskRequest) -> m.TaskStart:
    lease = convert.duration(req.lease, req.HasField("lease"), "lease")
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.name("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
        c.duration("lease", lease, v.TASK_LEASE_MIN, v.TASK_LEASE_MAX)
    return m.TaskStart(
        namespace=req.namespace, task_id=req.task_id, lease=lease or v.TASK_LEASE_DEFAULT
    )


def end_task(req: pb.EndTaskRequest) -> m.TaskEnd:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.name("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
        if req.outcome and not TaskOutcome.knows(req.outcome):
            c.fail("outcome", "is not a known outcome")
        c.json("summary_json", req.summary_json, required=False)
        c.text("summary_text", req.summary_text, v.MEMORY_TEXT_MAX_BYTES)
        _embedding(c, "summary_embedding", req.summary_embedding)
    return m.TaskEnd(
        namespace=req.namespace,
        task_id=req.task_id,
        outcome=TaskOutcome.of_number(req.outcome, TaskOutcome.SUCCEEDED),  # unset: succeeded
        archive=req.archive,
        summary_json=req.summary_json,
        summary_text=req.summary_text,
        embedding=convert.embedding_bytes(req.summary_embedding),
        dim=len(req.summary_embedding),
    )


def compact_episodes(req: pb.CompactEpisodesRequest) -> m.Compaction:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        if not 1 <= len(req.keys) <= COMPACT_KEYS_MAX:
            c.fail("keys", f"must list 1 to {COMPACT_KEYS_MAX} episode keys")
        for i, key in enumerate(req.keys):
            c.name(f"keys[{i}]", key, v.MEMORY_KEY_MAX_BYTES)
        c.name("summary_key", req.summary_key, v.MEMORY_KEY_MAX_BYTES)
        c.json("summary_json", req.summary_json)
        c.text("summary_text", req.summary_text, v.MEMORY_TEXT_MAX_BYTES)
        _embedding(c, "summary_embedding", req.summary_embedding)
        check_tags(c, "tags", req.tags)
    return m.Compaction(
        namespace=req.namespace,
        keys=list(req.keys),
        summary_key=req.summary_key,
        summary_json=req.summary_json,
        summary_text=req.summary_text,
        embedding=convert.embedding_bytes(req.summary_embedding),
        dim=len(req.summary_embedding),
        tags=list(req.tags),
    )


def set_namespace_policy(req: pb.SetNamespacePolicyRequest) -> NamespacePolicy:
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
    return NamespacePolicy(
        default_mode=WriteMode.of_number(p.default_write_mode) or "lww",
        forbid_unconditional=p.forbid_unconditional_writes,
        episodic_max_age=max_age,
        episodic_max_count=p.episodic_max_count,
    )


def get_namespace_policy(req: pb.GetNamespacePolicyRequest) -> str:
    """The namespace whose policy is asked for."""
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
    return req.namespace
