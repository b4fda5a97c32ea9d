"""GateService over gRPC: the check before a side effect outside coordd (authorize, read
the request, call the gate, respond)."""

from __future__ import annotations

from coordd.domain import gate
from coordd.domain.access import Operation
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import gate as requests
from coordd.v1 import gate_service_pb2 as pb
from coordd.v1 import gate_service_pb2_grpc as pb_grpc


class GateServicer(ServicerBase[gate.GateService], pb_grpc.GateServiceServicer):
    async def CheckGate(self, req: pb.CheckGateRequest, ctx: Ctx) -> pb.CheckGateResponse:
        read = dict(req.read.revisions)
        # Authorized like reads of every namespace named: a gate reveals no more than a read.
        bounded = len(req.fences) <= gate.MAX_FENCES and len(read) <= gate.MAX_READ_NAMESPACES
        if bounded:
            for namespace in sorted({f.namespace for f in req.fences} | set(read)):
                self.authorize(Operation.READ, namespace)
        verdict = await self._service.check(requests.check_gate(req))
        return pb.CheckGateResponse(
            header=self.header("", 0),
            passed=verdict.passed,
            lost_claims=[
                pb.LostClaim(
                    fence=convert.fence_message(lost.fence), holder=convert.claim(lost.holder)
                )
                for lost in verdict.lost_claims
            ],
            moved_namespaces=[
                pb.MovedNamespace(
                    namespace=m.namespace,
                    read_revision=m.read_revision,
                    current_revision=m.current_revision,
                    first_change=(convert.change_event(m.first_change) if m.first_change else None),
                )
                for m in verdict.moved_namespaces
            ],
        )
