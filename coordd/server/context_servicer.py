"""ContextService over gRPC: authorize, validate, convert, call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.consistency import at_least, wait_budget
from coordd.domain.context import ContextService
from coordd.domain.models import ContextPost, ContextQuery
from coordd.server import convert
from coordd.server.base import ServicerBase, check_fence
from coordd.v1 import context_service_pb2 as pb
from coordd.v1 import context_service_pb2_grpc as pb_grpc
from coordd.vocabulary import Delivery

Ctx = grpc.aio.ServicerContext[Any, Any]


def _filters(c: v.Checker, context_type: str, task_id: str, after_id: int) -> None:
    c.text("context_type", context_type, v.CONTEXT_TYPE_MAX_BYTES)
    c.text("task_id", task_id, v.TASK_ID_MAX_BYTES)
    if after_id < 0:
        c.fail("after_id", "must be >= 0")


class ContextServicer(ServicerBase, pb_grpc.ContextServiceServicer):
    def __init__(self, service: ContextService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._context = service

    async def PostContext(self, req: pb.PostContextRequest, ctx: Ctx) -> pb.PostContextResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
        vector = dict(req.sender_vector.revisions)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            if bool(req.to_role) == bool(req.to_agent_id):
                c.fail("to_role", "exactly one of to_role and to_agent_id is required")
            for field, value in (("to_role", req.to_role), ("to_agent_id", req.to_agent_id)):
                if value:
                    c.identifier(field, value)
            context_type = req.context_type or v.CONTEXT_TYPE_DEFAULT
            c.name("context_type", context_type, v.CONTEXT_TYPE_MAX_BYTES)
            c.json("content_json", req.content_json)
            c.text("task_id", req.task_id, v.TASK_ID_MAX_BYTES)
            c.text("correlation_id", req.correlation_id, v.TASK_ID_MAX_BYTES)
            c.duration("ttl", ttl, v.CONTEXT_TTL_MIN, v.CONTEXT_TTL_MAX)
            if req.delivery and not Delivery.knows(req.delivery):
                c.fail("delivery", "must be DELIVERY_EACH or DELIVERY_ANY")
            c.vector("sender_vector", vector)
            check_fence(c, req.fence, req.HasField("fence"))
        entry = await self._context.post(
            who,
            ContextPost(
                namespace=req.namespace,
                to_role=req.to_role,
                to_agent_id=req.to_agent_id,
                context_type=context_type,
                content_json=req.content_json,
                task_id=req.task_id,
                correlation_id=req.correlation_id,
                ttl=ttl or v.CONTEXT_TTL_DEFAULT,
                delivery=convert.delivery(req.delivery),
                sender_vector=vector,
                fence=convert.fence(req.fence, req.HasField("fence")),
            ),
        )
        return pb.PostContextResponse(
            header=self.header(req.namespace, entry.id), entry=convert.context_entry(entry)
        )

    async def ReadContext(self, req: pb.ReadContextRequest, ctx: Ctx) -> pb.ReadContextResponse:
        who = current = self.authorize(Operation.READ, req.namespace)
        if req.role and req.role != current.role:  # someone else's inbox
            self.authorize(Operation.ADMIN, req.namespace)
        lease = convert.duration(req.lease, req.HasField("lease"), "lease")
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            _filters(c, req.context_type, req.task_id, req.after_id)
            c.page_size("page_size", req.page_size)
            c.duration("lease", lease, v.CONTEXT_LEASE_MIN, v.CONTEXT_LEASE_MAX)
            if req.role:
                c.identifier("role", req.role)
            c.min_revision("min_revision", req.min_revision)
        query = ContextQuery(
            namespace=req.namespace,
            unread_only=req.unread_only,
            context_type=req.context_type,
            task_id=req.task_id,
            after_id=req.after_id,
            limit=req.page_size or v.DEFAULT_PAGE_SIZE,
            lease=lease or v.CONTEXT_LEASE_DEFAULT,
            sent=req.sent,
        )
        revision, entries = await at_least(
            req.namespace,
            req.min_revision,
            lambda: self._context.read(who, query, as_role=req.role),
            wait_budget(ctx.time_remaining()),
        )
        return pb.ReadContextResponse(
            header=self.header(req.namespace, revision),
            entries=[convert.context_entry(e) for e in entries],
            last_id=entries[-1].id if entries else req.after_id,
        )

    async def AckContext(self, req: pb.AckContextRequest, ctx: Ctx) -> pb.AckContextResponse:
        who = self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            if not 1 <= len(req.ids) <= v.MAX_IDS_PER_CALL:
                c.fail("ids", f"must list 1 to {v.MAX_IDS_PER_CALL} entry ids")
            elif any(i <= 0 for i in req.ids):
                c.fail("ids", "entry ids are > 0")
            check_fence(c, req.fence, req.HasField("fence"))
        revision, acked = await self._context.ack(
            who,
            req.namespace,
            sorted(set(req.ids)),
            convert.fence(req.fence, req.HasField("fence")),
        )
        return pb.AckContextResponse(
            header=self.header(req.namespace, revision), acknowledged_ids=acked
        )

    async def SubscribeContext(
        self, req: pb.SubscribeContextRequest, ctx: Ctx
    ) -> AsyncIterator[pb.SubscribeContextResponse]:
        who = self.authorize(Operation.READ, req.namespace)
        lease = convert.duration(req.lease, req.HasField("lease"), "lease")
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            _filters(c, req.context_type, "", req.after_id)
            c.duration("lease", lease, v.CONTEXT_LEASE_MIN, v.CONTEXT_LEASE_MAX)
        query = ContextQuery(
            namespace=req.namespace,
            unread_only=req.unread_only,
            context_type=req.context_type,
            task_id="",
            after_id=req.after_id,
            limit=v.DEFAULT_PAGE_SIZE,
            lease=lease or v.CONTEXT_LEASE_DEFAULT,
        )
        async for revision, entry in self._context.subscribe(who, query):
            yield pb.SubscribeContextResponse(
                header=self.header(req.namespace, revision), entry=convert.context_entry(entry)
            )
