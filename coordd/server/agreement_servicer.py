"""AgreementService over gRPC: authorize, validate, convert, call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.agreements import AgreementService
from coordd.server import agreement_convert as ac
from coordd.server import convert
from coordd.server.base import ServicerBase
from coordd.v1 import agreement_service_pb2 as pb
from coordd.v1 import agreement_service_pb2_grpc as pb_grpc
from coordd.vocabulary import AgreementState

Ctx = grpc.aio.ServicerContext[Any, Any]


class AgreementServicer(ServicerBase, pb_grpc.AgreementServiceServicer):
    def __init__(self, agreements: AgreementService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._agreements = agreements

    async def ProposeAgreement(
        self, req: pb.ProposeAgreementRequest, ctx: Ctx
    ) -> pb.ProposeAgreementResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        deadline = convert.duration(req.deadline, req.HasField("deadline"), "deadline")
        retention = convert.duration(req.retention, req.HasField("retention"), "retention")
        with v.checking() as c:
            ac.check_id(c, req.namespace, req.id)
            ac.check_participants(c, list(req.participants))
            c.json("transition_json", req.transition_json)
            ac.check_writes(c, list(req.writes))
            c.duration("deadline", deadline, ac.DEADLINE_MIN, ac.DEADLINE_MAX, required=True)
            c.duration("retention", retention, ac.RETENTION_MIN, ac.RETENTION_MAX)
        for namespace in sorted({w.namespace for w in req.writes} - {req.namespace}):
            self.authorize(Operation.WRITE, namespace)  # the transition writes there
        assert deadline is not None
        out = await self._agreements.propose(who, ac.proposal(req, deadline, retention))
        return pb.ProposeAgreementResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
            created=out.created,
        )

    async def Vote(self, req: pb.VoteRequest, ctx: Ctx) -> pb.VoteResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        with v.checking() as c:
            ac.check_id(c, req.namespace, req.id)
            c.text("reason", req.reason, ac.REASON_MAX_BYTES)
        out = await self._agreements.vote(who, req.namespace, req.id, req.accept, req.reason)
        return pb.VoteResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
        )

    async def GetAgreement(self, req: pb.GetAgreementRequest, ctx: Ctx) -> pb.GetAgreementResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            ac.check_id(c, req.namespace, req.id)
        out = await self._agreements.get(req.namespace, req.id)
        return pb.GetAgreementResponse(
            header=self.header(req.namespace, out.revision),
            agreement=ac.agreement_message(out.agreement),
        )

    async def AwaitAgreement(
        self, req: pb.AwaitAgreementRequest, ctx: Ctx
    ) -> pb.AwaitAgreementResponse:
        self.authorize(Operation.READ, req.namespace)
        wait = convert.duration(req.wait, req.HasField("wait"), "wait")
        with v.checking() as c:
            ac.check_id(c, req.namespace, req.id)
            c.duration("wait", wait, timedelta(0), ac.WAIT_MAX)
        wait = wait or timedelta(0)
        if (remaining := ctx.time_remaining()) is not None:  # answer before the caller gives up
            wait = min(wait, timedelta(seconds=max(remaining - 0.05, 0)))
        out = await self._agreements.wait(req.namespace, req.id, wait)
        return pb.AwaitAgreementResponse(
            header=self.header(req.namespace, out.revision),
            decided=out.agreement.decided,
            agreement=ac.agreement_message(out.agreement),
        )

    async def ListAgreements(
        self, req: pb.ListAgreementsRequest, ctx: Ctx
    ) -> pb.ListAgreementsResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            c.namespace("namespace", req.namespace)
            c.page_size("page_size", req.page_size)
            if req.state and not AgreementState.knows(req.state):
                c.fail("state", "is not a known agreement state")
            if req.proposer_agent_id:
                c.identifier("proposer_agent_id", req.proposer_agent_id)
        after = convert.decode_page_token(req.page_token)
        page = await self._agreements.list(
            req.namespace,
            AgreementState.of_number(req.state) if req.state else None,
            req.proposer_agent_id,
            after,
            req.page_size or v.DEFAULT_PAGE_SIZE,
        )
        return pb.ListAgreementsResponse(
            header=self.header(req.namespace, page.revision),
            agreements=[ac.agreement_message(a) for a in page.agreements],
            next_page_token=convert.encode_page_token(page.next_after),
        )
