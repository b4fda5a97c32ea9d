"""ClaimService over gRPC: authorize, read the request, call the claim service, respond."""

from __future__ import annotations

from coordd import telemetry
from coordd.domain.access import Operation
from coordd.domain.claims import ClaimService
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import claims as requests
from coordd.v1 import claim_service_pb2 as pb
from coordd.v1 import claim_service_pb2_grpc as pb_grpc


class ClaimServicer(ServicerBase[ClaimService], pb_grpc.ClaimServiceServicer):
    async def AcquireClaim(self, req: pb.AcquireClaimRequest, ctx: Ctx) -> pb.AcquireClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        ask = requests.acquire_claim(req)
        out = await self._service.acquire(who, ask, ctx.time_remaining())
        if telemetry.recording():
            telemetry.span_attributes(
                resource=req.resource,
                acquired=out.acquired,
                fencing_token=out.claim.fencing_token if out.claim else 0,
            )
        # The two hot RPCs fill their responses in place (see ServicerBase.fill_header).
        response = pb.AcquireClaimResponse(acquired=out.acquired)
        self.fill_header(response.header, req.namespace, out.revision)
        convert.fill_claim(response.claim, out.claim)
        return response

    async def AcquireAnyClaim(
        self, req: pb.AcquireAnyClaimRequest, ctx: Ctx
    ) -> pb.AcquireAnyClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        out = await self._service.store.acquire_any(who, requests.acquire_any_claim(req))
        return pb.AcquireAnyClaimResponse(
            header=self.header(req.namespace, out.revision),
            acquired=out.acquired,
            claim=convert.claim(out.claim),
        )

    async def AcquireClaims(
        self, req: pb.AcquireClaimsRequest, ctx: Ctx
    ) -> pb.AcquireClaimsResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        out = await self._service.store.acquire_all(who, requests.acquire_claims(req))
        return pb.AcquireClaimsResponse(
            header=self.header(req.namespace, out.revision),
            acquired=out.acquired,
            claims=[convert.claim_message(cl) for cl in out.claims],
        )

    async def RenewClaim(self, req: pb.RenewClaimRequest, ctx: Ctx) -> pb.RenewClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        out = await self._service.store.renew(who, requests.renew_claim(req))
        return pb.RenewClaimResponse(
            header=self.header(req.namespace, out.revision), claim=convert.claim(out.claim)
        )

    async def ReleaseClaim(self, req: pb.ReleaseClaimRequest, ctx: Ctx) -> pb.ReleaseClaimResponse:
        who = self.authorize(Operation.CLAIM, req.namespace)
        out = await self._service.release(who, requests.release_claim(req))
        response = pb.ReleaseClaimResponse()
        self.fill_header(response.header, req.namespace, out.revision)
        return response

    async def GetClaim(self, req: pb.GetClaimRequest, ctx: Ctx) -> pb.GetClaimResponse:
        self.authorize(Operation.READ, req.namespace)
        out = await self._service.store.get(requests.get_claim(req))
        return pb.GetClaimResponse(
            header=self.header(req.namespace, out.revision),
            found=out.claim is not None,
            claim=convert.claim(out.claim),
        )

    async def ListClaims(self, req: pb.ListClaimsRequest, ctx: Ctx) -> pb.ListClaimsResponse:
        self.authorize(Operation.READ, req.namespace)
        page = await self._service.store.list(requests.list_claims(req))
        return pb.ListClaimsResponse(
            header=self.header(req.namespace, page.revision),
            claims=[convert.claim_message(cl) for cl in page.claims],
            next_page_token=convert.encode_page_token(page.next_after),
        )
