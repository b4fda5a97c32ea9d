"""IdempotencyService over gRPC: authorize, validate, convert, call."""

from __future__ import annotations

from typing import Any

import grpc

from coordd import telemetry
from coordd.domain import validation as v
from coordd.domain.access import Operation, Policy
from coordd.domain.consistency import at_least, wait_budget
from coordd.domain.idempotency import IdempotencyService
from coordd.server import convert
from coordd.server.base import ServicerBase, check_fence
from coordd.v1 import idempotency_service_pb2 as pb
from coordd.v1 import idempotency_service_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def _check_key(c: v.Checker, namespace: str, key: str) -> None:
    c.namespace("namespace", namespace)
    c.name("key", key, v.IDEMPOTENCY_KEY_MAX_BYTES)


class IdempotencyServicer(ServicerBase, pb_grpc.IdempotencyServiceServicer):
    def __init__(self, service: IdempotencyService, policy: Policy, server_id: str) -> None:
        super().__init__(policy, server_id)
        self._idem = service

    async def BeginIdempotency(
        self, req: pb.BeginIdempotencyRequest, ctx: Ctx
    ) -> pb.BeginIdempotencyResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        lease = convert.duration(req.lease, req.HasField("lease"), "lease")
        retention = convert.duration(req.retention, req.HasField("retention"), "retention")
        with v.checking() as c:
            _check_key(c, req.namespace, req.key)
            c.blob("fingerprint", req.fingerprint, v.FINGERPRINT_MAX_BYTES)
            c.duration("lease", lease, v.IDEMPOTENCY_LEASE_MIN, v.IDEMPOTENCY_LEASE_MAX)
            c.duration(
                "retention", retention, v.IDEMPOTENCY_RETENTION_MIN, v.IDEMPOTENCY_RETENTION_MAX
            )
        out = await self._idem.begin(
            who,
            req.namespace,
            req.key,
            req.fingerprint,
            lease or v.IDEMPOTENCY_LEASE_DEFAULT,
            retention or v.IDEMPOTENCY_RETENTION_DEFAULT,
        )
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
        with v.checking() as c:
            _check_key(c, req.namespace, req.key)
            c.positive("attempt", req.attempt)
            c.blob("result", req.result, v.RESULT_MAX_BYTES)
            check_fence(c, req.fence, req.HasField("fence"))
        revision, rec = await self._idem.complete(
            who,
            req.namespace,
            req.key,
            req.attempt,
            req.result,
            convert.fence(req.fence, req.HasField("fence")),
        )
        return pb.CompleteIdempotencyResponse(
            header=self.header(req.namespace, revision), record=convert.idempotency_record(rec)
        )

    async def FailIdempotency(
        self, req: pb.FailIdempotencyRequest, ctx: Ctx
    ) -> pb.FailIdempotencyResponse:
        who = self.authorize(Operation.WRITE, req.namespace)
        with v.checking() as c:
            _check_key(c, req.namespace, req.key)
            c.positive("attempt", req.attempt)
            c.text("error", req.error, v.ERROR_TEXT_MAX_BYTES)
            check_fence(c, req.fence, req.HasField("fence"))
        revision, rec = await self._idem.fail(
            who,
            req.namespace,
            req.key,
            req.attempt,
            req.retryable,
            req.error,
            convert.fence(req.fence, req.HasField("fence")),
        )
        return pb.FailIdempotencyResponse(
            header=self.header(req.namespace, revision), record=convert.idempotency_record(rec)
        )

    async def GetIdempotency(
        self, req: pb.GetIdempotencyRequest, ctx: Ctx
    ) -> pb.GetIdempotencyResponse:
        self.authorize(Operation.READ, req.namespace)
        with v.checking() as c:
            _check_key(c, req.namespace, req.key)
            c.min_revision("min_revision", req.min_revision)
        revision, rec = await at_least(
            req.namespace,
            req.min_revision,
            lambda: self._idem.get(req.namespace, req.key),
            wait_budget(ctx.time_remaining()),
        )
        return pb.GetIdempotencyResponse(
            header=self.header(req.namespace, revision),
            found=rec is not None,
            record=convert.idempotency_record(rec) if rec else None,
        )
