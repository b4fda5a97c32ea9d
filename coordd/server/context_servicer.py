"""ContextService over gRPC: authorize, read the request, call the context service, respond."""

from __future__ import annotations

from collections.abc import AsyncIterator

from coordd.domain.access import Operation
from coordd.domain.consistency import wait_budget
from coordd.domain.context import ContextService
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import context as requests
from coordd.v1 import context_service_pb2 as pb
from coordd.v1 import context_service_pb2_grpc as pb_grpc


class ContextServicer(ServicerBase[ContextService], pb_grpc.ContextServiceServicer):
    async def PostContext(self, req: pb.PostContextRequest, ctx: Ctx) -> pb.PostContextResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        entry = await self._service.post(who, requests.post_context(req))
        return pb.PostContextResponse(
            header=self.header(req.namespace, entry.id), entry=convert.context_entry(entry)
        )

    async def ReadContext(self, req: pb.ReadContextRequest, ctx: Ctx) -> pb.ReadContextResponse:
        who = self.authorize(Operation.READ, req.namespace)
        if req.role and req.role != who.role:  # someone else's inbox
            self.authorize(Operation.ADMIN, req.namespace)
        read = requests.read_context(req)
        revision, entries = await self._service.read(who, read, wait_budget(ctx.time_remaining()))
        resp = pb.ReadContextResponse(
            header=self.header(req.namespace, revision),
            last_id=entries[-1].id if entries else req.after_id,
        )
        add = resp.entries.add  # filled in place: a take answers with up to 1,000 entries
        for entry in entries:
            convert.fill_context_entry(add(), entry)
        return resp

    async def AckContext(self, req: pb.AckContextRequest, ctx: Ctx) -> pb.AckContextResponse:
        who = self.authorize(Operation.READ, req.namespace)
        revision, acked = await self._service.ack(who, requests.ack_context(req))
        return pb.AckContextResponse(
            header=self.header(req.namespace, revision), acknowledged_ids=acked
        )

    async def SubscribeContext(
        self, req: pb.SubscribeContextRequest, ctx: Ctx
    ) -> AsyncIterator[pb.SubscribeContextResponse]:
        who = self.authorize(Operation.READ, req.namespace)
        query = requests.subscribe_context(req)
        async for revision, entry in self._service.subscribe(who, query):
            yield pb.SubscribeContextResponse(
                header=self.header(req.namespace, revision), entry=convert.context_entry(entry)
            )
