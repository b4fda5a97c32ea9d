"""WatchService over gRPC: authorize, read the request, stream the change log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from coordd.domain.access import Operation
from coordd.domain.watch import WatchService
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import watch as requests
from coordd.v1 import watch_service_pb2 as pb
from coordd.v1 import watch_service_pb2_grpc as pb_grpc


class WatchServicer(ServicerBase[WatchService], pb_grpc.WatchServiceServicer):
    async def Watch(self, req: pb.WatchRequest, ctx: Ctx) -> AsyncIterator[pb.WatchResponse]:
        # A prefix watch needs read on the whole subtree (a grant ending in "**").
        if req.prefix:
            self.authorize_subtree(Operation.READ, req.namespace)
        else:
            self.authorize(Operation.READ, req.namespace)
        async for batch in self._service.watch(requests.watch(req)):
            last = batch[-1]
            yield pb.WatchResponse(
                header=self.header(last.namespace, last.revision),
                events=[convert.change_event(c) for c in batch],
            )
