"""Well-known protobuf types <-> Python values, shared by the daemon, the codec and the client."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from coordd import vocabulary


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime (None stays unset)."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def datetime_of(ts: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime for a Timestamp."""
    return ts.ToDatetime(tzinfo=UTC)


def duration(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


# Generic protobuf <-> dataclass conversion -------------------------------------------------
#
# A value type whose fields are named like its message's fields converts without a hand-written
# converter: scalars as they are, Timestamp <-> datetime, Duration <-> timedelta, enums <->
# coordd.vocabulary terms, nested messages <-> nested value types, repeated <-> list, maps <->
# dict. Fields that differ are passed explicitly (``given``/``overrides``).

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_ENUMS: dict[str, Any] = {
    "coordd.v1.MemoryTier": vocabulary.Tier,
    "coordd.v1.WriteMode": vocabulary.WriteMode,
    "coordd.v1.Delivery": vocabulary.Delivery,
    "coordd.v1.IdempotencyState": vocabulary.IdempotencyState,
    "coordd.v1.AgreementState": vocabulary.AgreementState,
    "coordd.v1.DecisionCause": vocabulary.DecisionCause,
    "coordd.v1.TaskOutcome": vocabulary.TaskOutcome,
}
_HINTS: dict[type, dict[str, Any]] = {}
T = TypeVar("T")
M = TypeVar("M", bound=Message)


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        # The defining module's globals, even when __module__ shows a re-exporting package.
        defined_in = getattr(vars(cls).get("__init__"), "__globals__", None)
        _HINTS[cls] = typing.get_type_hints(cls, globalns=defined_in)
    return _HINTS[cls]


def _inner(hint: Any) -> Any:
    """The class inside ``X | None`` or ``list[X]`` (X itself otherwise)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def from_message(cls: type[T], msg: Message, **given: Any) -> T:
    """The value type *cls* (a dataclass) read from *msg*, field by field of the same name.

    Fields in *given* take those values; fields the message lacks keep their defaults. An
    unset message field, or an unset proto3 ``optional`` scalar, reads as None.
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    fields_by_name = msg.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
        elif (fd := fields_by_name.get(f.name)) is not None:
            values[f.name] = _read(msg, fd, _inner(hints[f.name]))
    return cls(**values)


def _read(msg: Message, fd: Any, hint: Any) -> Any:
    value = getattr(msg, fd.name)
    if fd.is_repeated:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            return dict(value)
        return [_one(v, fd, hint) for v in value]
    if (fd.message_type is not None or fd.has_presence) and not msg.HasField(fd.name):
        return None
    return _one(value, fd, hint)


def _one(value: Any, fd: Any, hint: Any) -> Any:
    if fd.enum_type is not None:
        return _ENUMS[fd.enum_type.full_name].of_number(value)
    if fd.message_type is None:
        return value
    name = fd.message_type.full_name
    if name == _TIMESTAMP:
        return datetime_of(value)
    if name == _DURATION:
        return value.ToTimedelta()
    return from_message(hint, value)


def to_message(cls: type[M], value: Any, **overrides: Any) -> M:
    """The message *cls* with each field taken from *value*'s attribute of the same name.

    Fields in *overrides* take those values instead; None leaves a field unset.
    """
    msg = cls()
    for fd in cls.DESCRIPTOR.fields:
        field_value = overrides[fd.name] if fd.name in overrides else getattr(value, fd.name, None)
        if field_value is not None:
            _write(msg, fd, field_value)
    return msg


def _write(msg: Message, fd: Any, value: Any) -> None:
    target = getattr(msg, fd.name)
    if fd.is_repeated:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target.update(value)
        elif fd.message_type is not None:
            for item in value:
                element = target.add()
                element.CopyFrom(_message_of(type(element), item))
        else:
            target.extend(_scalar(fd, v) for v in value)
    elif fd.message_type is not None:
        target.CopyFrom(_message_of(type(target), value))
    else:
        setattr(msg, fd.name, _scalar(fd, value))


def _message_of(cls: type[Message], value: Any) -> Message:
    if isinstance(value, datetime):
        ts = timestamp(value)
        assert ts is not None
        return ts
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, Message):
        return value
    return to_message(cls, value)


def _scalar(fd: Any, value: Any) -> Any:
    if fd.enum_type is not None:
        if isinstance(value, str):
            return _ENUMS[fd.enum_type.full_name].parse(value, fd.name).number
        return int(value)
    return value
