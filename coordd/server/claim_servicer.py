"""ClaimService over gRPC: authorize, validate, convert, call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from coordd import telemetry
from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.claims import ClaimService
from coordd.server import convert
from coordd.server.base import ServicerBase
from coordd.v1 import claim_service_pb2 as pb
from coordd.v1 import claim_service_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def _check_claim_name(c: v.Checker, namespace: str, resource: str) -> None:
    c.namespace("namespace", namespace)
    c.name("resource", resource, v.RESOURCE_MAX_BYTES)


def _check_resources(c: v.Checker, namespace: str, resources: list[str]) -> None:
    c.namespace("namespace", namespace)
    if not 1 <= len(resources) <= v.MAX_RESOURCES_PER_CALL:
        c.fail("resources", f"must list 1 to {v.MAX_RESOURCES_PER_CALL} resources")
    for i, resource in enumerate(resources):
        c.name(f"resources[{i}]", resource, v.RESOURCE_MAX_BYTES)
    if len(set(resources)) != len(resources):
        c.fail("resources", "must not contain duplicates")


def _checked_many(req: pb.AcquireAnyClaimRequest | pb.AcquireClaimsRequest) -> timedelta:
    """The ttl of a request naming several resources, once every field is checked."""
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    with v.checking() as c:
        _check_resources(c, req.namespace, list(req.resources))
        c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
        c.text("progress", req.progress, v.PROGRESS_MAX_BYTES)
    assert ttl is not None
    return ttl


class ClaimServicer(ServicerBase, pb_grpc.ClaimServiceServicer):
    def __init__(self, claims: ClaimService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._claims = claims

    async def AcquireClaim(self, req: pb.AcquireClaimRequest, ctx: Ctx) -> pb.AcquireClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
        wait = convert.duration(req.wait, req.HasField("wait"), "wait")
        with v.checking() as c:
            _check_claim_name(c, req.namespace, req.resource)
            c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
            c.duration("wait", wait, timedelta(0), v.CLAIM_WAIT_MAX)
            c.text("progress", req.progress, v.PROGRESS_MAX_BYTES)
        assert ttl is not None
        if wait is not None and (remaining := ctx.time_remaining()) is not None:
            wait = min(wait, timedelta(seconds=max(remaining - 0.05, 0)))
        out = await self._claims.acquire(
            who, req.namespace, req.resource, ttl, wait or timedelta(0), req.progress
        )
        telemetry.span_attributes(
            resource=req.resource,
            acquired=out.acquired,
            fencing_token=out.claim.fencing_token if out.claim else 0,
        )
        return pb.AcquireClaimResponse(
            header=self.header(req.namespace, out.revision),
            acquired=out.acquired,
            claim=convert.claim(out.claim),
        )

    async def AcquireAnyClaim(
        self, req: pb.AcquireAnyClaimRequest, ctx: Ctx
    ) -> pb.AcquireAnyClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        ttl = _checked_many(req)
        out = await self._claims.acquire_any(
            who, req.namespace, list(req.resources), ttl, req.progress
        )
        return pb.AcquireAnyClaimResponse(
            header=self.header(req.namespace, out.revision),
            acquired=out.acquired,
            claim=convert.claim(out.claim),
        )

    async def AcquireClaims(
        self, req: pb.AcquireClaimsRequest, ctx: Ctx
    ) -> pb.AcquireClaimsResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        ttl = _checked_many(req)
        out = await self._claims.acquire_all(
            who, req.namespace, list(req.resources), ttl, req.progress
        )
        return pb.AcquireClaimsResponse(
            header=self.header(req.namespace, out.revision),
            acquired=out.acquired,
            claims=[convert.claim_message(cl) for cl in out.claims],
        )

    async def RenewClaim(self, req: pb.RenewClaimRequest, ctx: Ctx) -> pb.RenewClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
        progress = req.progress if req.HasField("progress") else None
        with v.checking() as c:
            _check_claim_name(c, req.namespace, req.resource)
            c.positive("fencing_token", req.fencing_token)
            c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
            c.text("progress", progress or "", v.PROGRESS_MAX_BYTES)
        assert ttl is not None
        out = await self._claims.renew(
            who, req.namespace, req.resource, req.fencing_token, ttl, progress
        )
        return pb.RenewClaimResponse(
            header=self.header(req.namespace, out.revision), claim=convert.claim(out.claim)
        )

    async def ReleaseClaim(self, req: pb.ReleaseClaimRequest, ctx: Ctx) -> pb.ReleaseClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        with v.checking() as c:
            _check_claim_name(c, req.namespace, req.resource)
            c.positive("fencing_token", req.fencing_token)
        out = await self._claims.release(who, req.namespace, req.resource, req.fencing_token)
        return pb.ReleaseClaimResponse(header=self.header(req.namespace, out.revision))

    async def GetClaim(self, req: pb.GetClaimRequest, ctx: Ctx) -> pb.GetClaimResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            _check_claim_name(c, req.namespace, req.resource)
        out = await self._claims.get(req.namespace, req.resource)
        return pb.GetClaimResponse(
            header=self.header(req.namespace, out.revision),
            found=out.claim is not None,
            claim=convert.claim(out.claim),
        )

    async def ListClaims(self, req: pb.ListClaimsRequest, ctx: Ctx) -> pb.ListClaimsResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.page_size("page_size", req.page_size)
            if req.holder_agent_id:
                c.name("holder_agent_id", req.holder_agent_id, 128)
        after = convert.decode_page_token(req.page_token)
        page = await self._claims.list(
            req.namespace, req.holder_agent_id, after, req.page_size or v.DEFAULT_PAGE_SIZE
        )
        return pb.ListClaimsResponse(
            header=self.header(req.namespace, page.revision),
            claims=[convert.claim_message(cl) for cl in page.claims],
            next_page_token=convert.encode_page_token(page.next_after),
        )
