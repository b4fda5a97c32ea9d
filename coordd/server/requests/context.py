"""ContextService requests, read and checked."""

from __future__ import annotations

from coordd import wire
from coordd.domain import context as cx
from coordd.domain import validation as v
from coordd.domain.models import ContextPost, ContextQuery
from coordd.server import convert
from coordd.server.requests import check_fence
from coordd.v1 import context_service_pb2 as pb
from coordd.vocabulary import Delivery


def _filters(c: v.Checker, context_type: str, task_id: str, after_id: int) -> None:
    c.text("context_type", context_type, v.CONTEXT_TYPE_MAX_BYTES)
    c.text("task_id", task_id, v.TASK_ID_MAX_BYTES)
    if after_id < 0:
        c.fail("after_id", "must be >= 0")


def post_context(req: pb.PostContextRequest) -> ContextPost:
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    vector = dict(req.sender_vector.revisions)
    context_type = req.context_type or v.CONTEXT_TYPE_DEFAULT
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        if bool(req.to_role) == bool(req.to_agent_id):
            c.fail("to_role", "exactly one of to_role and to_agent_id is required")
        for field, value in (("to_role", req.to_role), ("to_agent_id", req.to_agent_id)):
            if value:
                c.identifier(field, value)
        c.name("context_type", context_type, v.CONTEXT_TYPE_MAX_BYTES)
        c.json("content_json", req.content_json)
        c.text("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
        c.text("correlation_id", req.correlation_id, v.TASK_ID_MAX_BYTES)
        c.duration("ttl", ttl, v.CONTEXT_TTL_MIN, v.CONTEXT_TTL_MAX)
        if req.delivery and not Delivery.knows(req.delivery):
            c.fail("delivery", "must be DELIVERY_EACH or DELIVERY_ANY")
        c.vector("sender_vector", vector)
        check_fence(c, req.fence, req.HasField("fence"))
    return wire.from_message(
        ContextPost,
        req,
        context_type=context_type,
        ttl=ttl or v.CONTEXT_TTL_DEFAULT,
        delivery=convert.delivery(req.delivery),
        sender_vector=vector,
    )


def read_context(req: pb.ReadContextRequest) -> cx.InboxRead:
    lease = convert.duration(req.lease, req.HasField("lease"), "lease")
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        _filters(c, req.context_type, req.task_id, req.after_id)
        c.page_size("page_size", req.page_size)
        c.duration("lease", lease, v.CONTEXT_LEASE_MIN, v.CONTEXT_LEASE_MAX)
        if req.role:
            c.identifier("role", req.role)
        c.min_revision("min_revision", req.min_revision)
    query = wire.from_message(
        ContextQuery,
        req,
        limit=req.page_size or v.DEFAULT_PAGE_SIZE,
        lease=lease or v.CONTEXT_LEASE_DEFAULT,
    )
    return cx.InboxRead(query=query, as_role=req.role, min_revision=req.min_revision)


def ack_context(req: pb.AckContextRequest) -> cx.Acks:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        if not 1 <= len(req.ids) <= v.MAX_IDS_PER_CALL:
            c.fail("ids", f"must list 1 to {v.MAX_IDS_PER_CALL} entry ids")
        elif any(i <= 0 for i in req.ids):
            c.fail("ids", "entry ids are > 0")
        check_fence(c, req.fence, req.HasField("fence"))
    return cx.Acks(
        namespace=req.namespace,
        ids=list(req.ids),
        fence=convert.fence(req.fence, req.HasField("fence")),
    )


def subscribe_context(req: pb.SubscribeContextRequest) -> ContextQuery:
    lease = convert.duration(req.lease, req.HasField("lease"), "lease")
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        _filters(c, req.context_type, "", req.after_id)
        c.duration("lease", lease, v.CONTEXT_LEASE_MIN, v.CONTEXT_LEASE_MAX)
    return ContextQuery(
        namespace=req.namespace,
        unread_only=req.unread_only,
        context_type=req.context_type,
        task_id="",
        after_id=req.after_id,
        limit=v.DEFAULT_PAGE_SIZE,
        lease=lease or v.CONTEXT_LEASE_DEFAULT,
    )
