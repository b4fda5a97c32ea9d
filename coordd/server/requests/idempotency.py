"""IdempotencyService requests, read and checked."""

from __future__ import annotations

from collections.abc import Callable

from coordd import wire
from coordd.domain import idempotency as idem
from coordd.domain import validation as v
from coordd.domain.models import Fence
from coordd.server import convert
from coordd.server.requests import check_fence
from coordd.v1 import idempotency_service_pb2 as pb


def _key(c: v.Checker, namespace: str, key: str) -> None:
    c.namespace("namespace", namespace)
    c.name("key", key, v.IDEMPOTENCY_KEY_MAX_BYTES)


def begin_idempotency(req: pb.BeginIdempotencyRequest) -> idem.Begin:
    lease = convert.duration(req.lease, req.HasField("lease"), "lease")
    retention = convert.duration(req.retention, req.HasField("retention"), "retention")
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        c.blob("fingerprint", req.fingerprint, v.FINGERPRINT_MAX_BYTES)
        c.duration("lease", lease, v.IDEMPOTENCY_LEASE_MIN, v.IDEMPOTENCY_LEASE_MAX)
        c.duration("retention", retention, v.IDEMPOTENCY_RETENTION_MIN, v.IDEMPOTENCY_RETENTION_MAX)
    return idem.Begin(
        namespace=req.namespace,
        key=req.key,
        fingerprint=req.fingerprint,
        lease=lease or v.IDEMPOTENCY_LEASE_DEFAULT,
        retention=retention or v.IDEMPOTENCY_RETENTION_DEFAULT,
    )


def _attempt_end(
    req: pb.CompleteIdempotencyRequest | pb.FailIdempotencyRequest,
    own: Callable[[v.Checker], None],
) -> Fence | None:
    """Check what ending an attempt always names (key, attempt, fence) and *own* fields."""
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        c.positive("attempt", req.attempt)
        own(c)
        check_fence(c, req.fence, req.HasField("fence"))
    return convert.fence(req.fence, req.HasField("fence"))


def complete_idempotency(req: pb.CompleteIdempotencyRequest) -> idem.Completion:
    fence = _attempt_end(req, lambda c: c.blob("result", req.result, v.RESULT_MAX_BYTES))
    return wire.from_message(idem.Completion, req, fence=fence)


def fail_idempotency(req: pb.FailIdempotencyRequest) -> idem.Failure:
    fence = _attempt_end(req, lambda c: c.text("error", req.error, v.ERROR_TEXT_MAX_BYTES))
    return wire.from_message(idem.Failure, req, fence=fence)


def get_idempotency(req: pb.GetIdempotencyRequest) -> idem.RecordRead:
    with v.checking() as c:
        _key(c, req.namespace, req.key)
        c.min_revision("min_revision", req.min_revision)
    return wire.from_message(idem.RecordRead, req)
