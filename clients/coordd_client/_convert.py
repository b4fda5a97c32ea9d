"""Protobuf <-> client models: the only client module that builds or reads messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from coordd import wire
from coordd.v1 import agreement_service_pb2 as agreement_pb
from coordd.v1 import claim_service_pb2 as claim_pb
from coordd.v1 import common_pb2
from coordd.v1 import idempotency_service_pb2 as idem_pb
from coordd.v1 import memory_service_pb2 as memory_pb
from coordd.v1 import watch_service_pb2 as watch_pb
from coordd.vocabulary import DecisionCause, Tier, WriteMode

from ._models import (
    Agreement,
    ChangeEvent,
    Claim,
    Fence,
    IdempotencyRecord,
    MemoryPut,
    Participant,
    TransitionWrite,
)


def duration(value: timedelta | float | None) -> duration_pb2.Duration | None:
    """A Duration from a timedelta or seconds (None stays unset)."""
    if value is None:
        return None
    return wire.duration(value if isinstance(value, timedelta) else timedelta(seconds=value))


def seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


dt = wire.datetime_of


def opt_dt(msg: object, field: str) -> datetime | None:
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    return dt(getattr(msg, field))


def fence(value: Fence | None) -> common_pb2.Fence | None:
    if value is None:
        return None
    return common_pb2.Fence(namespace=value.namespace, resource=value.resource, token=value.token)


R = TypeVar("R")


def result(cls: type[R], resp: Message, **given: Any) -> R:
    """The result type *cls* read from response *resp*: fields by name (``wire``), the
    revision from its header, and the fields in *given* as given."""
    return wire.from_message(cls, resp, revision=resp.header.revision, **given)  # type: ignore[attr-defined]


def claim(msg: claim_pb.Claim) -> Claim:
    return wire.from_message(Claim, msg)


def idempotency_record(msg: idem_pb.IdempotencyRecord) -> IdempotencyRecord:
    return wire.from_message(IdempotencyRecord, msg)


def change_event(msg: watch_pb.ChangeEvent) -> ChangeEvent:
    return wire.from_message(
        ChangeEvent, msg, data=json.loads(msg.data_json) if msg.data_json else None
    )


def write_mode(mode: str | None, field: str = "mode") -> memory_pb.WriteMode.ValueType:
    """The wire number of write mode *mode* (None: the namespace policy's default)."""
    return WriteMode.parse(mode or "", field).number  # type: ignore[return-value]


def participant(value: Participant | str) -> agreement_pb.Participant:
    if isinstance(value, str):
        return agreement_pb.Participant(agent_id=value)
    return agreement_pb.Participant(
        agent_id=value.agent_id, role=value.role, count=0 if value.agent_id else value.count
    )


def write_fields(w: MemoryPut | TransitionWrite) -> dict[str, Any]:
    """The request fields of a memory write that ``memory.put`` and an agreement's
    transition write share (PutMemoryRequest and TransitionWrite spell them alike)."""
    return {
        "namespace": w.namespace,
        "key": w.key,
        "tier": Tier.parse(w.tier, "tier").number,
        "value_json": json.dumps(w.value, separators=(",", ":")),
        "text": w.text,
        "tags": list(w.tags),
        "task_id": w.task_id,
        "write_mode": write_mode(w.mode),
        "expected_revision": w.expected_revision,
        "ttl": duration(w.ttl),
    }


def transition_write(w: TransitionWrite) -> agreement_pb.TransitionWrite:
    return agreement_pb.TransitionWrite(**write_fields(w))


def _transition_write(msg: agreement_pb.TransitionWrite) -> TransitionWrite:
    return TransitionWrite(
        namespace=msg.namespace,
        key=msg.key,
        value=json.loads(msg.value_json) if msg.value_json else None,
        tier=Tier.label_of(msg.tier),
        mode=WriteMode.label_of(msg.write_mode) or None,
        expected_revision=msg.expected_revision if msg.HasField("expected_revision") else None,
        text=msg.text,
        tags=tuple(msg.tags),
        task_id=msg.task_id,
        ttl=msg.ttl.ToTimedelta() if msg.HasField("ttl") else None,
    )


def agreement(msg: agreement_pb.Agreement) -> Agreement:
    return wire.from_message(
        Agreement,
        msg,
        participants=[
            Participant(agent_id=p.agent_id, role=p.role, count=max(p.count, 1))
            for p in msg.participants
        ],
        transition=json.loads(msg.transition_json) if msg.transition_json else None,
        writes=[_transition_write(w) for w in msg.writes],
        cause=DecisionCause.label_of(msg.cause),
        write_revisions=dict(msg.write_revisions.revisions),
    )
