"""AdminService over gRPC: authorize (admin), read the request, call, respond."""

from __future__ import annotations

from coordd.domain.access import Operation
from coordd.domain.admin import AdminService
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import admin as requests
from coordd.v1 import admin_service_pb2 as pb
from coordd.v1 import admin_service_pb2_grpc as pb_grpc


class AdminServicer(ServicerBase[AdminService], pb_grpc.AdminServiceServicer):
    async def ForceReleaseClaim(
        self, req: pb.ForceReleaseClaimRequest, ctx: Ctx
    ) -> pb.ForceReleaseClaimResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        out = await self._service.force_release(who, requests.force_release_claim(req))
        return pb.ForceReleaseClaimResponse(
            header=self.header(req.namespace, out.revision),
            released=out.claim is not None,
            claim=convert.claim(out.claim),
        )

    async def PurgeNamespace(
        self, req: pb.PurgeNamespaceRequest, ctx: Ctx
    ) -> pb.PurgeNamespaceResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        revision, removed = await self._service.purge(who, requests.purge_namespace(req))
        return pb.PurgeNamespaceResponse(
            header=self.header(req.namespace, revision), removed=removed
        )
