"""Well-known protobuf types <-> Python values, shared by the daemon, the codec and the client."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from coordd import vocabulary


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime (None stays unset)."""
    if value is None:
        return None
    # Arithmetic on the datetime, not Timestamp.FromDatetime (calendar.timegm): several times
    # faster, and pages of context entries carry two or more timestamps each.
    delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def datetime_of(ts: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime for a Timestamp."""
    return _datetime_of(ts)


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
    plan = _READ_PLANS.get((cls, msg.DESCRIPTOR))
    if plan is None:
        plan = _READ_PLANS[cls, msg.DESCRIPTOR] = _read_plan(cls, msg.DESCRIPTOR)
    values: dict[str, Any] = {}
    for name, read in plan:
        if name in given:
            values[name] = given[name]
        elif read is not None:
            values[name] = read(msg)
    return cls(**values)


# Conversions run on every call, so each (value type, message type) pair is worked out once:
# a plan is the list of fields with the function that converts each.
_Reader = Callable[[Message], Any]
_Writer = Callable[[Message, Any], None]
_READ_PLANS: dict[tuple[type, Any], list[tuple[str, _Reader | None]]] = {}
_WRITE_PLANS: dict[type, list[tuple[str, _Writer]]] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _read_plan(cls: type, descriptor: Any) -> list[tuple[str, _Reader | None]]:
    """Each field of dataclass *cls* with the reader of the message field of its name (None
    when the message has none)."""
    hints = _hints(cls)
    by_name = descriptor.fields_by_name
    return [
        (f.name, _reader(fd, _inner(hints[f.name])) if (fd := by_name.get(f.name)) else None)
        for f in dataclasses.fields(cls)
    ]


def _reader(fd: Any, hint: Any) -> _Reader:
    name = fd.name
    one = _one(fd, hint)
    if fd.is_repeated:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            return lambda msg: dict(getattr(msg, name))
        if one is None:
            return lambda msg: list(getattr(msg, name))
        return lambda msg: [one(v) for v in getattr(msg, name)]
    if fd.message_type is not None or fd.has_presence:
        if one is None:
            return lambda msg: getattr(msg, name) if msg.HasField(name) else None
        return lambda msg: one(getattr(msg, name)) if msg.HasField(name) else None
    if one is None:
        return lambda msg: getattr(msg, name)
    return lambda msg: one(getattr(msg, name))


def _one(fd: Any, hint: Any) -> Callable[[Any], Any] | None:
    """How one value of field *fd* converts (None: as it is)."""
    if fd.enum_type is not None:
        of_number: Callable[[Any], Any] = _ENUMS[fd.enum_type.full_name].of_number
        return of_number
    if fd.message_type is None:
        return None
    name = fd.message_type.full_name
    if name == _TIMESTAMP:
        return _datetime_of
    if name == _DURATION:
        return lambda value: value.ToTimedelta()
    return lambda value: from_message(hint, value)


def _datetime_of(ts: timestamp_pb2.Timestamp) -> datetime:
    """:func:`datetime_of` without the library's general path (nanos are never negative)."""
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_message(cls: type[M], value: Any, **overrides: Any) -> M:
    """The message *cls* with each field taken from *value*'s attribute of the same name.

    Fields in *overrides* take those values instead; None leaves a field unset.
    """
    msg = cls()
    fill_message(msg, value, **overrides)
    return msg


def fill_message(msg: Message, value: Any, **overrides: Any) -> None:
    """:func:`to_message` into *msg* in place, e.g. a response's field: no message is built
    and then copied into its parent."""
    cls = type(msg)
    plan = _WRITE_PLANS.get(cls)
    if plan is None:
        plan = _WRITE_PLANS[cls] = [(fd.name, _writer(fd)) for fd in cls.DESCRIPTOR.fields]
    for name, write in plan:
        field_value = overrides[name] if name in overrides else getattr(value, name, None)
        if field_value is not None:
            write(msg, field_value)


def _writer(fd: Any) -> _Writer:
    name = fd.name
    if fd.is_repeated or (fd.message_type is not None and fd.message_type.full_name != _TIMESTAMP):
        return lambda msg, value: _write(msg, fd, value)
    if fd.message_type is not None:  # a Timestamp: set from a datetime without the library's path

        def timestamp_field(msg: Message, value: Any) -> None:
            if not isinstance(value, datetime):
                _write(msg, fd, value)
                return
            ts = getattr(msg, name)
            delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
            ts.seconds = delta.days * 86_400 + delta.seconds
            ts.nanos = delta.microseconds * 1000

        return timestamp_field
    if fd.enum_type is not None:
        return lambda msg, value: setattr(msg, name, _scalar(fd, value))
    return lambda msg, value: setattr(msg, name, value)


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
