"""AdminService over gRPC: authorize (admin), read the request, call, respond."""

from __future__ import annotations

from typing import Any

import grpc

from coordd.domain.access import Operation, Policy
from coordd.domain.admin import AdminService
from coordd.server import convert
from coordd.server.base import ServicerBase
from coordd.server.requests import admin as requests
from coordd.v1 import admin_service_pb2 as pb
from coordd.v1 import admin_service_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(ServicerBase, pb_grpc.AdminServiceServicer):
    def __init__(self, service: AdminService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._admin = service

    async def ForceReleaseClaim(
        self, req: pb.ForceReleaseClaimRequest, ctx: Ctx
    ) -> pb.ForceReleaseClaimResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        out = await self._admin.force_release(who, requests.force_release_claim(req))
        return pb.ForceReleaseClaimResponse(
            header=self.header(req.namespace, out.revision),
            released=out.claim is not None,
            claim=convert.claim(out.claim),
        )

    async def PurgeNamespace(
        self, req: pb.PurgeNamespaceRequest, ctx: Ctx
    ) -> pb.PurgeNamespaceResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        revision, removed = await self._admin.purge(who, requests.purge_namespace(req))
        return pb.PurgeNamespaceResponse(
            header=self.header(req.namespace, revision), removed=removed
        )
