"""IdempotencyService over gRPC: authorize, read the request, call the service, respond."""

from __future__ import annotations

from coordd import telemetry
from coordd.domain.access import Operation
from coordd.domain.consistency import wait_budget
from coordd.domain.idempotency import IdempotencyService
from coordd.server import convert
from coordd.server.base import Ctx, ServicerBase
from coordd.server.requests import idempotency as requests
from coordd.v1 import idempotency_service_pb2 as pb
from coordd.v1 import idempotency_service_pb2_grpc as pb_grpc


class IdempotencyServicer(ServicerBase[IdempotencyService], pb_grpc.IdempotencyServiceServicer):
    async def BeginIdempotency(
        self, req: pb.BeginIdempotencyRequest, ctx: Ctx
    ) -> pb.BeginIdempotencyResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        out = await self._service.store.begin(who, requests.begin_idempotency(req))
        rec = out.record
        telemetry.span_attributes(
            key=req.key, idempotency_outcome=out.state.value, attempt=rec.attempt
        )
        return pb.BeginIdempotencyResponse(
            header=self.header(req.namespace, out.revision),
            state=out.state.number,  # type: ignore[arg-type]
            attempt=rec.attempt,
            result=rec.result,
            error=rec.error,
            retry_after=convert.to_duration(out.retry_after),
            lease_expire_time=convert.timestamp(rec.lease_expire_time),
        )

    async def CompleteIdempotency(
        self, req: pb.CompleteIdempotencyRequest, ctx: Ctx
    ) -> pb.CompleteIdempotencyResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        revision, rec = await self._service.complete(who, requests.complete_idempotency(req))
        return pb.CompleteIdempotencyResponse(
            header=self.header(req.namespace, revision), record=convert.idempotency_record(rec)
        )

    async def FailIdempotency(
        self, req: pb.FailIdempotencyRequest, ctx: Ctx
    ) -> pb.FailIdempotencyResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        revision, rec = await self._service.fail(who, requests.fail_idempotency(req))
        return pb.FailIdempotencyResponse(
            header=self.header(req.namespace, revision), record=convert.idempotency_record(rec)
        )

    async def GetIdempotency(
        self, req: pb.GetIdempotencyRequest, ctx: Ctx
    ) -> pb.GetIdempotencyResponse:
        self.authorize(Operation.READ, req.namespace)
        read = requests.get_idempotency(req)
        revision, rec = await self._service.get(read, wait_budget(ctx.time_remaining()))
        return pb.GetIdempotencyResponse(
            header=self.header(req.namespace, revision),
            found=rec is not None,
            record=convert.idempotency_record(rec) if rec else None,
        )
