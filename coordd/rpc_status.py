"""Wire codec for coordd errors: ``CoorddError`` <-> ``google.rpc.Status`` with details.

Every error carries ``google.rpc.ErrorInfo`` (domain ``coordd``, stable reason). Errors whose
callers need data to act add a typed detail (``coordd.v1.*Detail``), ``google.rpc.BadRequest``
field violations, or ``google.rpc.RetryInfo``. The daemon encodes here, the sidecar passes the
trailer through unchanged, and the client decodes here, by reason, never by message text.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from coordd import errors, wire
from coordd.v1 import agreement_service_pb2 as agreement_pb
from coordd.v1 import error_details_pb2 as coordd_details

DOMAIN = "coordd"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _dt(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return wire.datetime_of(ts) if present else None


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


# Agreement states and causes: the names the errors carry <-> the wire enums.
AGREEMENT_STATES = {
    "pending": agreement_pb.AGREEMENT_STATE_PENDING,
    "committed": agreement_pb.AGREEMENT_STATE_COMMITTED,
    "aborted": agreement_pb.AGREEMENT_STATE_ABORTED,
}
DECISION_CAUSES = {
    "": agreement_pb.DECISION_CAUSE_UNSPECIFIED,
    "all_accepted": agreement_pb.DECISION_CAUSE_ALL_ACCEPTED,
    "rejected": agreement_pb.DECISION_CAUSE_REJECTED,
    "deadline_passed": agreement_pb.DECISION_CAUSE_DEADLINE_PASSED,
    "withdrawn": agreement_pb.DECISION_CAUSE_WITHDRAWN,
    "transition_failed": agreement_pb.DECISION_CAUSE_TRANSITION_FAILED,
}
_STATE_NAMES = {v: k for k, v in AGREEMENT_STATES.items()}
_CAUSE_NAMES = {v: k for k, v in DECISION_CAUSES.items()}


def _agreement_details(err: errors.CoorddError) -> list[Message]:
    if isinstance(err, errors.AgreementDecidedError):
        return [
            coordd_details.AgreementDecidedDetail(
                namespace=err.namespace,
                id=err.agreement_id,
                state=AGREEMENT_STATES.get(err.state, agreement_pb.AGREEMENT_STATE_UNSPECIFIED),
                cause=DECISION_CAUSES.get(err.cause, agreement_pb.DECISION_CAUSE_UNSPECIFIED),
                reason=err.decision_reason,
                decide_revision=err.decide_revision,
            )
        ]
    if isinstance(err, errors.NotAParticipantError):
        return [
            coordd_details.NotAParticipantDetail(
                namespace=err.namespace, id=err.agreement_id, agent_id=err.agent_id, role=err.role
            )
        ]
    if isinstance(err, errors.VoteAlreadyCastError):
        return [
            coordd_details.VoteAlreadyCastDetail(
                namespace=err.namespace, id=err.agreement_id, accept=err.accept
            )
        ]
    return []


def _typed_details(err: errors.CoorddError) -> list[Message]:
    """The detail messages beyond ErrorInfo that *err* carries."""
    out: list[Message] = []
    if isinstance(err, errors.InvalidArgumentError):
        out.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in err.violations
                ]
            )
        )
    elif isinstance(err, errors.ClaimNotHeldError):
        out.append(
            coordd_details.ClaimNotHeldDetail(
                namespace=err.namespace,
                resource=err.resource,
                holder_agent_id=err.holder_agent_id,
                fencing_token=err.fencing_token,
                expire_time=wire.timestamp(err.expire_time),
            )
        )
    elif isinstance(err, errors.FencingTokenStaleError):
        out.append(
            coordd_details.FencingTokenStaleDetail(
                namespace=err.namespace,
                resource=err.resource,
                presented_token=err.presented_token,
                current_token=err.current_token,
            )
        )
    elif isinstance(err, errors.RevisionMismatchError):
        out.append(
            coordd_details.RevisionMismatchDetail(
                namespace=err.namespace,
                key=err.key,
                expected_revision=err.expected_revision,
                current_revision=err.current_revision,
            )
        )
    elif isinstance(
        err,
        errors.IdempotencyKeyReusedError
        | errors.IdempotencyInFlightError
        | errors.IdempotencyAttemptSupersededError,
    ):
        out.append(
            coordd_details.IdempotencyKeyDetail(
                namespace=err.namespace,
                key=err.key,
                current_attempt=getattr(err, "current_attempt", 0),
            )
        )
    elif isinstance(err, errors.RevisionCompactedError):
        out.append(
            coordd_details.RevisionCompactedDetail(
                namespace=err.namespace, compact_revision=err.compact_revision
            )
        )
    out.extend(_agreement_details(err))
    retry_after = getattr(err, "retry_after", None)
    if isinstance(retry_after, timedelta):
        out.append(error_details_pb2.RetryInfo(retry_delay=wire.duration(retry_after)))
    return out


def _metadata(err: errors.CoorddError) -> dict[str, str]:
    meta: dict[str, str] = {}
    for name in ("namespace", "resource", "key", "permission", "agreement_id"):
        value = getattr(err, name, None)
        if isinstance(value, str) and value:
            meta[name] = value
    if isinstance(err, errors.RevisionNotReachedError):
        meta["minRevision"] = str(err.min_revision)
        meta["revision"] = str(err.revision)
    trace_id = getattr(err, "trace_id", "")
    if trace_id:
        meta["traceId"] = trace_id
    return meta


def to_status(err: errors.CoorddError) -> status_pb2.Status:
    """Encode *err* as a ``google.rpc.Status`` (ErrorInfo first, then typed details)."""
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=_metadata(err))
    details = [_pack(info), *(_pack(d) for d in _typed_details(err))]
    return status_pb2.Status(code=err.code.value[0], message=err.message, details=details)


_CODES_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> errors.CoorddError:
    """Decode a ``google.rpc.Status`` into the matching ``CoorddError`` subclass."""
    info: error_details_pb2.ErrorInfo | None = None
    found: dict[str, Message] = {}
    for detail in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            coordd_details.ClaimNotHeldDetail,
            coordd_details.FencingTokenStaleDetail,
            coordd_details.RevisionMismatchDetail,
            coordd_details.IdempotencyKeyDetail,
            coordd_details.RevisionCompactedDetail,
            coordd_details.AgreementDecidedDetail,
            coordd_details.NotAParticipantDetail,
            coordd_details.VoteAlreadyCastDetail,
        ):
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                found[cls.DESCRIPTOR.full_name] = msg
    info_msg = found.get("google.rpc.ErrorInfo")
    if isinstance(info_msg, error_details_pb2.ErrorInfo) and info_msg.domain == DOMAIN:
        info = info_msg
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _build(info, found, code, status.message)


def _build(
    info: error_details_pb2.ErrorInfo | None,
    found: dict[str, Message],
    code: grpc.StatusCode,
    message: str,
) -> errors.CoorddError:
    reason = info.reason if info is not None else ""
    meta = dict(info.metadata) if info is not None else {}
    retry = found.get("google.rpc.RetryInfo")
    retry_after = (
        retry.retry_delay.ToTimedelta()
        if isinstance(retry, error_details_pb2.RetryInfo)
        else timedelta(seconds=1)
    )
    err: errors.CoorddError
    d = found
    if reason == "INVALID_ARGUMENT":
        bad = d.get("google.rpc.BadRequest")
        violations = (
            [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
            if isinstance(bad, error_details_pb2.BadRequest)
            else []
        )
        err = errors.InvalidArgumentError(violations, message)
    elif reason == "CLAIM_NOT_HELD" and isinstance(
        c := d.get("coordd.v1.ClaimNotHeldDetail"), coordd_details.ClaimNotHeldDetail
    ):
        err = errors.ClaimNotHeldError(
            c.namespace,
            c.resource,
            c.holder_agent_id,
            c.fencing_token,
            _dt(c.expire_time, c.HasField("expire_time")),
        )
    elif reason == "FENCING_TOKEN_STALE" and isinstance(
        f := d.get("coordd.v1.FencingTokenStaleDetail"), coordd_details.FencingTokenStaleDetail
    ):
        err = errors.FencingTokenStaleError(
            f.namespace, f.resource, f.presented_token, f.current_token
        )
    elif reason == "REVISION_MISMATCH" and isinstance(
        r := d.get("coordd.v1.RevisionMismatchDetail"), coordd_details.RevisionMismatchDetail
    ):
        err = errors.RevisionMismatchError(
            r.namespace, r.key, r.expected_revision, r.current_revision
        )
    elif reason.startswith("IDEMPOTENCY_") and isinstance(
        k := d.get("coordd.v1.IdempotencyKeyDetail"), coordd_details.IdempotencyKeyDetail
    ):
        if reason == "IDEMPOTENCY_KEY_REUSED":
            err = errors.IdempotencyKeyReusedError(k.namespace, k.key)
        elif reason == "IDEMPOTENCY_KEY_IN_FLIGHT":
            err = errors.IdempotencyInFlightError(
                k.namespace, k.key, retry_after, k.current_attempt
            )
        else:
            err = errors.IdempotencyAttemptSupersededError(k.namespace, k.key, k.current_attempt)
    elif reason == "REVISION_COMPACTED" and isinstance(
        rc := d.get("coordd.v1.RevisionCompactedDetail"), coordd_details.RevisionCompactedDetail
    ):
        err = errors.RevisionCompactedError(rc.namespace, rc.compact_revision)
    elif reason == "AGREEMENT_DECIDED" and isinstance(
        ad := d.get("coordd.v1.AgreementDecidedDetail"), coordd_details.AgreementDecidedDetail
    ):
        err = errors.AgreementDecidedError(
            ad.namespace,
            ad.id,
            _STATE_NAMES.get(ad.state, "pending"),
            _CAUSE_NAMES.get(ad.cause, ""),
            ad.reason,
            ad.decide_revision,
        )
    elif reason == "NOT_A_PARTICIPANT" and isinstance(
        na := d.get("coordd.v1.NotAParticipantDetail"), coordd_details.NotAParticipantDetail
    ):
        err = errors.NotAParticipantError(na.namespace, na.id, na.agent_id, na.role)
    elif reason == "VOTE_ALREADY_CAST" and isinstance(
        vc := d.get("coordd.v1.VoteAlreadyCastDetail"), coordd_details.VoteAlreadyCastDetail
    ):
        err = errors.VoteAlreadyCastError(vc.namespace, vc.id, vc.accept)
    elif reason == "AGREEMENT_EXISTS":
        err = errors.AgreementExistsError(meta.get("namespace", ""), meta.get("agreement_id", ""))
    elif reason == "SCOPE_NOT_GRANTED":
        err = errors.PermissionDeniedError(meta.get("permission", ""), meta.get("namespace", ""))
    elif reason == "UNCONDITIONAL_WRITE_FORBIDDEN":
        err = errors.UnconditionalWriteForbiddenError(meta.get("namespace", ""))
    elif reason == "REVISION_NOT_REACHED":
        err = errors.RevisionNotReachedError(
            meta.get("namespace", ""),
            int(meta.get("minRevision", "0")),
            int(meta.get("revision", "0")),
            retry_after,
        )
    elif reason == "STORAGE_UNAVAILABLE":
        err = errors.StorageUnavailableError(message, retry_after)
    elif reason == "SHUTTING_DOWN":
        err = errors.ShuttingDownError(message, retry_after)
    elif reason == "INTERNAL":
        err = errors.InternalError(message, meta.get("traceId", ""))
    else:
        err = _by_code(code, message)
    err.message = message or err.message
    return err


_FALLBACK: dict[grpc.StatusCode, type[errors.CoorddError]] = {
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: errors.UnauthenticatedError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
}


def _by_code(code: grpc.StatusCode, message: str) -> errors.CoorddError:
    cls = _FALLBACK.get(code)
    if cls is not None:
        return cls(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgumentError([], message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDeniedError("", "")
    err = errors.InternalError(message or code.name)
    err.code_name = code.name  # type: ignore[attr-defined]
    return err


def from_rpc_error(exc: grpc.RpcError) -> errors.CoorddError:
    """Decode a caught ``grpc.RpcError`` (sync or aio) into a ``CoorddError``."""
    call: Any = exc  # both grpc.Call and grpc.aio.AioRpcError expose these methods
    code: grpc.StatusCode = call.code()
    details: str = call.details() or ""
    trailing: Any = call.trailing_metadata() or ()
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return from_status(status)
    return _by_code(code, details)
