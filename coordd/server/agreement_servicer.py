"""AgreementService over gRPC: authorize, read the request, call the agreement service, respond."""

from __future__ import annotations

from coordd.domain.access import Operation
from coordd.domain.agreements import AgreementService
from coordd.server import agreement_convert as ac
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import agreements as requests
from coordd.v1 import agreement_service_pb2 as pb
from coordd.v1 import agreement_service_pb2_grpc as pb_grpc


class AgreementServicer(ServicerBase[AgreementService], pb_grpc.AgreementServiceServicer):
    async def ProposeAgreement(
        self, req: pb.ProposeAgreementRequest, ctx: Ctx
    ) -> pb.ProposeAgreementResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        proposal = requests.propose_agreement(req)
        for namespace in sorted({w.namespace for w in proposal.writes} - {req.namespace}):
            self.authorize(Operation.WRITE, namespace)  # the transition writes there
        out = await self._service.store.propose(who, proposal)
        return pb.ProposeAgreementResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
            created=out.created,
        )

    async def Vote(self, req: pb.VoteRequest, ctx: Ctx) -> pb.VoteResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        out = await self._service.store.vote(who, requests.vote(req))
        return pb.VoteResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
        )

    async def GetAgreement(self, req: pb.GetAgreementRequest, ctx: Ctx) -> pb.GetAgreementResponse:
        self.authorize(Operation.READ, req.namespace)
        key = requests.get_agreement(req)
        out = await self._service.store.get(key.namespace, key.id)
        return pb.GetAgreementResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
        )

    async def AwaitAgreement(
        self, req: pb.AwaitAgreementRequest, ctx: Ctx
    ) -> pb.AwaitAgreementResponse:
        self.authorize(Operation.READ, req.namespace)
        q = requests.await_agreement(req)
        out = await self._service.wait(q.namespace, q.id, q.wait, ctx.time_remaining())
        return pb.AwaitAgreementResponse(
            header=self.header(req.namespace, out.revision),
            decided=out.agreement.decided,
            agreement=ac.agreement_message(out.agreement),
        )

    async def ListAgreements(
        self, req: pb.ListAgreementsRequest, ctx: Ctx
    ) -> pb.ListAgreementsResponse:
        self.authorize(Operation.READ, req.namespace)
        page = await self._service.store.list(requests.list_agreements(req))
        return pb.ListAgreementsResponse(
            header=self.header(req.namespace, page.revision),
            agreements=[ac.agreement_message(a) for a in page.agreements],
            next_page_token=convert.encode_page_token(page.next_after),
        )
