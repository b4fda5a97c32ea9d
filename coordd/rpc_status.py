"""Wire codec for coordd errors: ``CoorddError`` <-> ``google.rpc.Status`` with details.

Every error carries ``google.rpc.ErrorInfo`` (domain ``coordd``, stable reason). Errors whose
callers need data to act add a typed detail (``coordd.v1.*Detail`` or ``google.rpc.BadRequest``)
and, when they have a ``retry_after``, ``google.rpc.RetryInfo``. Encoding and decoding are
lookups over what each error class declares (``coordd.errors``): its reason, its detail
message and the renames between detail fields and attributes; nothing here names an error.
The daemon encodes here, the sidecar passes the trailer through unchanged, and the client
decodes here, by reason, never by message text.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from coordd import errors, vocabulary, wire
from coordd.v1 import error_details_pb2 as coordd_details

DOMAIN = "coordd"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# ErrorInfo.metadata carries these attributes (when set) of every error, under these keys.
_METADATA = {
    "namespace": "namespace",
    "resource": "resource",
    "key": "key",
    "permission": "permission",
    "agreement_id": "agreement_id",
    "agent_id": "agent_id",
    "limit_name": "limitName",
    "trace_id": "traceId",
}

# Detail messages by full name: coordd's own, and the google.rpc ones coordd uses.
_MESSAGES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        *(getattr(coordd_details, n) for n in coordd_details.DESCRIPTOR.message_types_by_name),
    )
}

# Enum-typed detail fields carry vocabulary terms; the attributes hold their labels.
_ENUMS: dict[str, Any] = {
    "coordd.v1.AgreementState": vocabulary.AgreementState,
    "coordd.v1.DecisionCause": vocabulary.DecisionCause,
}


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _field_value(field: Any, value: Any) -> Any:
    """An attribute value as the detail field *field* (a FieldDescriptor) holds it."""
    if isinstance(value, datetime):
        return wire.timestamp(value)
    if field.enum_type is not None:
        table = _ENUMS[field.enum_type.full_name]
        return next((t.number for t in table if t.label == value), 0)
    return value


def _attribute_value(msg: Message, field: Any) -> Any:
    """A detail field's value as the error attribute holds it."""
    value = getattr(msg, field.name)
    if isinstance(value, timestamp_pb2.Timestamp):
        return wire.datetime_of(value) if msg.HasField(field.name) else None
    if field.enum_type is not None:
        return _ENUMS[field.enum_type.full_name].label_of(value)
    return value


def _detail(err: errors.CoorddError) -> Message | None:
    """The typed detail message of *err*, from its attributes."""
    if not err.detail:
        return None
    if isinstance(err, errors.InvalidArgumentError):
        listed = [{"field": v.field, "description": v.description} for v in err.violations]
        bad: Message = error_details_pb2.BadRequest(field_violations=listed)
        return bad
    cls = _MESSAGES[err.detail]
    values: dict[str, Any] = {}
    for field in cls.DESCRIPTOR.fields:
        value = getattr(err, err.renames.get(field.name, field.name), None)
        if value is not None:
            values[field.name] = _field_value(field, value)
    detail: Message = cls(**values)
    return detail


def _metadata(err: errors.CoorddError) -> dict[str, str]:
    meta: dict[str, str] = {}
    for attr, key in _METADATA.items():
        value = getattr(err, attr, None)
        if isinstance(value, str) and value:
            meta[key] = value
    for attr, key in err.metadata.items():
        meta[key] = str(getattr(err, attr))
    return meta


def to_status(err: errors.CoorddError) -> status_pb2.Status:
    """Encode *err* as a ``google.rpc.Status`` (ErrorInfo first, then typed details)."""
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=_metadata(err))
    details = [_pack(info)]
    if (detail := _detail(err)) is not None:
        details.append(_pack(detail))
    retry_after = getattr(err, "retry_after", None)
    if isinstance(retry_after, timedelta):
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=wire.duration(retry_after))))
    return status_pb2.Status(code=err.code.value[0], message=err.message, details=details)


_CODES_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}
_ZERO = {"str": "", "int": 0, "bool": False}


_PARAMETERS: dict[type[errors.CoorddError], tuple[inspect.Parameter, ...]] = {}


def _parameters(cls: type[errors.CoorddError]) -> tuple[inspect.Parameter, ...]:
    """The constructor parameters of *cls* (computed once per class)."""
    if cls not in _PARAMETERS:
        _PARAMETERS[cls] = tuple(inspect.signature(cls.__init__).parameters.values())[1:]
    return _PARAMETERS[cls]


def from_status(status: status_pb2.Status) -> errors.CoorddError:
    """Decode a ``google.rpc.Status`` into the matching ``CoorddError`` subclass."""
    found: dict[str, Message] = {}
    for packed in status.details:
        cls = _MESSAGES.get(packed.type_url.rpartition("/")[2])
        if cls is not None:
            msg = cls()
            packed.Unpack(msg)
            found[cls.DESCRIPTOR.full_name] = msg
    info = found.get("google.rpc.ErrorInfo")
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    if not isinstance(info, error_details_pb2.ErrorInfo) or info.domain != DOMAIN:
        return _by_code(code, status.message)
    err_cls = errors.error_class_for_reason(info.reason)
    if err_cls is None:
        return _by_code(code, status.message)
    known = _known_values(err_cls, info, found, status.message)
    if known is None:  # the detail the reason promises is missing
        return _by_code(code, status.message)
    kwargs = {}
    for p in _parameters(err_cls):
        if p.name in known:
            kwargs[p.name] = known[p.name]
        elif p.default is inspect.Parameter.empty:
            kwargs[p.name] = _ZERO.get(str(p.annotation))
    err = err_cls(**kwargs)
    err.message = status.message or err.message
    return err


def _known_values(
    cls: type[errors.CoorddError],
    info: error_details_pb2.ErrorInfo,
    found: dict[str, Message],
    message: str,
) -> dict[str, Any] | None:
    """What the status says of *cls*'s attributes (None if its detail is missing)."""
    known: dict[str, Any] = {"message": message}
    meta = dict(info.metadata)
    for attr, key in _METADATA.items():
        if key in meta:
            known[attr] = meta[key]
    for attr, key in cls.metadata.items():
        known[attr] = int(meta.get(key, "0"))
    retry = found.get("google.rpc.RetryInfo")
    known["retry_after"] = (
        retry.retry_delay.ToTimedelta()
        if isinstance(retry, error_details_pb2.RetryInfo)
        else timedelta(seconds=1)
    )
    if cls.detail:
        detail = found.get(cls.detail)
        if isinstance(detail, error_details_pb2.BadRequest) or cls is errors.InvalidArgumentError:
            bad = detail if isinstance(detail, error_details_pb2.BadRequest) else None
            listed = bad.field_violations if bad is not None else ()
            known["violations"] = [errors.FieldViolation(v.field, v.description) for v in listed]
        elif detail is not None:
            for field in detail.DESCRIPTOR.fields:
                known[cls.renames.get(field.name, field.name)] = _attribute_value(detail, field)
        else:
            return None
    return known


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
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Without coordd's ErrorInfo it is gRPC's own message-size refusal (past the daemon's
        # hard ceiling, or a response over this client's receive limit).
        return errors.MessageTooLargeError(message=message or "message too large")
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
