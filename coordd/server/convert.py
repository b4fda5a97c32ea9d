"""Protobuf <-> domain conversion shared by the servicers."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from google.protobuf import duration_pb2, timestamp_pb2

from coordd import wire
from coordd.domain import models
from coordd.errors import InvalidArgumentError
from coordd.v1 import claim_service_pb2 as claim_pb
from coordd.v1 import common_pb2
from coordd.v1 import context_service_pb2 as ctx_pb
from coordd.v1 import idempotency_service_pb2 as idem_pb
from coordd.v1 import memory_service_pb2 as mem_pb
from coordd.v1 import watch_service_pb2 as watch_pb
from coordd.vocabulary import Delivery, WriteMode

_MAX_DURATION_SECONDS = 315_576_000_000  # the range google.protobuf.Duration allows


# Durations already converted, by (seconds, nanos): a client sends the same few (its TTLs,
# waits) on every call, and building a timedelta cost more than the rest of the check.
_DURATIONS: dict[tuple[int, int], timedelta] = {}
_DURATIONS_KEPT = 1024


def duration(msg: duration_pb2.Duration, present: bool, field: str) -> timedelta | None:
    """A Duration field as timedelta (None if unset); malformed values are INVALID_ARGUMENT."""
    if not present:
        return None
    seconds, nanos = msg.seconds, msg.nanos
    if (value := _DURATIONS.get((seconds, nanos))) is not None:
        return value
    if abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) > 999_999_999 or (seconds * nanos < 0):
        raise InvalidArgumentError.single(field, "is not a valid google.protobuf.Duration")
    value = timedelta(seconds=seconds, microseconds=nanos // 1000)
    if len(_DURATIONS) < _DURATIONS_KEPT:
        _DURATIONS[seconds, nanos] = value
    return value


# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799


def instant(msg: timestamp_pb2.Timestamp, present: bool, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime (None if unset); out-of-range seconds or nanos
    are INVALID_ARGUMENT rather than an exception deep in the conversion."""
    if not present:
        return None
    if not (
        _MIN_TIMESTAMP_SECONDS <= msg.seconds <= _MAX_TIMESTAMP_SECONDS
        and 0 <= msg.nanos <= 999_999_999
    ):
        raise InvalidArgumentError.single(
            field,
            "is not a valid google.protobuf.Timestamp (seconds within years 1-9999, "
            "nanos 0-999999999)",
        )
    return wire.datetime_of(msg)


timestamp = wire.timestamp
to_duration = wire.duration


def fence(msg: common_pb2.Fence, present: bool) -> models.Fence | None:
    if not present:
        return None
    return models.Fence(namespace=msg.namespace, resource=msg.resource, token=msg.token)


def fence_message(value: models.Fence) -> common_pb2.Fence:
    return common_pb2.Fence(namespace=value.namespace, resource=value.resource, token=value.token)


def claim(value: models.Claim | None) -> claim_pb.Claim | None:
    return None if value is None else claim_message(value)


def claim_message(value: models.Claim) -> claim_pb.Claim:
    return wire.to_message(claim_pb.Claim, value)


def fill_claim(msg: claim_pb.Claim, value: models.Claim | None) -> None:
    """Write *value* into a response's claim field in place (None leaves it unset)."""
    if value is not None:
        wire.fill_message(msg, value)


def idempotency_record(rec: models.IdempotencyRecord) -> idem_pb.IdempotencyRecord:
    return wire.to_message(idem_pb.IdempotencyRecord, rec)


def encode_page_token(after: str | None) -> str:
    if after is None:
        return ""
    return base64.urlsafe_b64encode(after.encode()).decode()


def decode_page_token(token: str, field: str = "page_token") -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgumentError.single(field, "is not a token this server issued") from None


def delivery(number: int) -> Delivery:
    """The delivery of a request (unset means EACH); check ``Delivery.knows`` first."""
    return Delivery.of_number(number, Delivery.EACH)


_DELIVERY_NUMBERS = {d.value: d.number for d in Delivery}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Fill a message's Timestamp field in place (passing a Timestamp to a constructor copies
    it, which costs more than the arithmetic)."""
    delta = value - _EPOCH
    target.seconds = delta.days * 86_400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def context_entry(entry: models.ContextEntry) -> ctx_pb.ContextEntry:
    msg = ctx_pb.ContextEntry()
    fill_context_entry(msg, entry)
    return msg


def fill_context_entry(msg: ctx_pb.ContextEntry, entry: models.ContextEntry) -> None:
    """Fill *msg* (empty; e.g. ``response.entries.add()``) from *entry*.

    Field by field, sub-messages filled in place, rather than wire.to_message: a take answers
    with up to 1,000 entries, and this was most of the daemon's CPU per entry (11 -> 2.5 us).
    Filling the response's own repeated element spares building each entry and then copying
    it into the response.
    """
    msg.id = msg.revision = entry.id
    msg.namespace = entry.namespace
    msg.from_agent_id = entry.from_agent_id
    msg.from_role = entry.from_role
    msg.to_role = entry.to_role
    msg.to_agent_id = entry.to_agent_id
    msg.context_type = entry.context_type
    msg.content_json = entry.content_json
    msg.task_id = entry.task_id
    msg.correlation_id = entry.correlation_id
    msg.delivery = _DELIVERY_NUMBERS[entry.delivery]  # type: ignore[assignment]
    _set_time(msg.create_time, entry.create_time)
    _set_time(msg.expire_time, entry.expire_time)
    if entry.sender_vector:
        revisions = msg.sender_vector.revisions  # set by key: its update() is the slow mixin's
        for namespace, revision in entry.sender_vector.items():
            revisions[namespace] = revision
    else:
        msg.sender_vector.SetInParent()  # present and empty, as before
    for a in entry.acks:
        ack = msg.acks.add(agent_id=a.agent_id, role=a.role)
        _set_time(ack.ack_time, a.ack_time)


def change_event(change: models.Change) -> watch_pb.ChangeEvent:
    return wire.to_message(watch_pb.ChangeEvent, change)


def embedding_array(values: Sequence[float]) -> npt.NDArray[np.float32]:
    """A repeated float field as little-endian float32, in one native pass."""
    return np.asarray(values, dtype="<f4")


def embedding_bytes(values: Sequence[float]) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes() if len(values) else b""


class HitMessages:
    """Search hits converted once per hydrated entry object.

    The search's hit cache hands back the same entry object for as long as that version is
    current, so its message is kept beside it (holding the object, so its ``id`` stays its
    own); bounded by count, oldest out first.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._messages: dict[int, tuple[models.MemoryEntry, mem_pb.MemoryEntry]] = {}

    def get(self, e: models.MemoryEntry) -> mem_pb.MemoryEntry:
        kept = self._messages.get(id(e))
        if kept is not None and kept[0] is e:
            return kept[1]
        message = memory_entry(e, with_embedding=False)
        self._messages[id(e)] = (e, message)
        if len(self._messages) > self._capacity:
            del self._messages[next(iter(self._messages))]
        return message


def memory_entry(e: models.MemoryEntry, *, with_embedding: bool = True) -> mem_pb.MemoryEntry:
    return mem_pb.MemoryEntry(
        namespace=e.namespace,
        key=e.key,
        tier=int(e.tier),  # type: ignore[arg-type]
        value_json=e.value_json,
        text=e.text,
        embedding=(
            np.frombuffer(e.embedding, dtype="<f4").tolist()
            if with_embedding and e.embedding
            else []
        ),
        tags=e.tags,
        task_id=e.task_id,
        revision=e.revision,
        create_revision=e.create_revision,
        provenance=mem_pb.Provenance(
            agent_id=e.agent_id,
            role=e.role,
            write_time=timestamp(e.write_time),
            trace_id=e.trace_id,
            request_id=e.request_id,
            derived_from=[
                mem_pb.EntryRef(namespace=r.namespace, key=r.key, revision=r.revision)
                for r in e.derived_from
            ],
        ),
        expire_time=timestamp(e.expire_time),
        valid_from=timestamp(e.valid_from),
        valid_to=timestamp(e.valid_to),
        review_time=timestamp(e.review_time),
        confidence=e.confidence,
        stale=e.stale,
    )


def policy_message(p: models.NamespacePolicy) -> mem_pb.NamespacePolicy:
    return mem_pb.NamespacePolicy(
        default_write_mode=WriteMode.parse(p.default_mode, "default_mode").number,  # type: ignore[arg-type]
        forbid_unconditional_writes=p.forbid_unconditional,
        episodic_max_age=wire.duration(p.episodic_max_age) if p.episodic_max_age else None,
        episodic_max_count=p.episodic_max_count,
    )
