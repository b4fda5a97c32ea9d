"""AdminService over gRPC: authorize (admin), validate, convert, call."""

from __future__ import annotations

from typing import Any

import grpc

from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.admin import AdminService
from coordd.server import convert
from coordd.server.base import ServicerBase
from coordd.v1 import admin_service_pb2 as pb
from coordd.v1 import admin_service_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

REASON_MAX_BYTES = 1024


class AdminServicer(ServicerBase, pb_grpc.AdminServiceServicer):
    def __init__(self, service: AdminService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._admin = service

    async def ForceReleaseClaim(
        self, req: pb.ForceReleaseClaimRequest, ctx: Ctx
    ) -> pb.ForceReleaseClaimResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.name("resource", req.resource, v.RESOURCE_MAX_BYTES)
            c.text("reason", req.reason, REASON_MAX_BYTES)
        out = await self._admin.force_release(who, req.namespace, req.resource, req.reason)
        return pb.ForceReleaseClaimResponse(
            header=self.header(req.namespace, out.revision),
            released=out.claim is not None,
            claim=convert.claim(out.claim),
        )

    async def PurgeNamespace(
        self, req: pb.PurgeNamespaceRequest, ctx: Ctx
    ) -> pb.PurgeNamespaceResponse:
        who = self.authorize(Operation.ADMIN, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.text("reason", req.reason, REASON_MAX_BYTES)
        revision, removed = await self._admin.purge(who, req.namespace, req.reason)
        return pb.PurgeNamespaceResponse(
            header=self.header(req.namespace, revision), removed=removed
        )
