"""Protobuf <-> client models: the only client module that builds or reads messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from google.protobuf import duration_pb2

from coordd import wire
from coordd.v1 import claim_service_pb2 as claim_pb
from coordd.v1 import common_pb2
from coordd.v1 import context_service_pb2 as ctx_pb
from coordd.v1 import idempotency_service_pb2 as idem_pb
from coordd.v1 import watch_service_pb2 as watch_pb

from ._models import (
    Acknowledgement,
    ChangeEvent,
    Claim,
    ContextEntry,
    Fence,
    IdempotencyRecord,
    IdempotencyState,
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


def claim(msg: claim_pb.Claim) -> Claim:
    return Claim(
        namespace=msg.namespace,
        resource=msg.resource,
        holder_agent_id=msg.holder_agent_id,
        holder_role=msg.holder_role,
        fencing_token=msg.fencing_token,
        acquire_time=dt(msg.acquire_time),
        expire_time=dt(msg.expire_time),
        progress=msg.progress,
    )


STATES = {
    idem_pb.IDEMPOTENCY_STATE_ACQUIRED: IdempotencyState.ACQUIRED,
    idem_pb.IDEMPOTENCY_STATE_COMPLETED: IdempotencyState.COMPLETED,
    idem_pb.IDEMPOTENCY_STATE_IN_PROGRESS: IdempotencyState.IN_PROGRESS,
    idem_pb.IDEMPOTENCY_STATE_FAILED: IdempotencyState.FAILED,
}


def idempotency_record(msg: idem_pb.IdempotencyRecord) -> IdempotencyRecord:
    return IdempotencyRecord(
        namespace=msg.namespace,
        key=msg.key,
        state=STATES[msg.state],
        attempt=msg.attempt,
        fingerprint=msg.fingerprint,
        result=msg.result,
        error=msg.error,
        runner_agent_id=msg.runner_agent_id,
        create_time=opt_dt(msg, "create_time"),
        lease_expire_time=opt_dt(msg, "lease_expire_time"),
        expire_time=opt_dt(msg, "expire_time"),
    )


def context_entry(msg: ctx_pb.ContextEntry) -> ContextEntry:
    return ContextEntry(
        namespace=msg.namespace,
        id=msg.id,
        from_agent_id=msg.from_agent_id,
        from_role=msg.from_role,
        to_role=msg.to_role,
        to_agent_id=msg.to_agent_id,
        context_type=msg.context_type,
        content=json.loads(msg.content_json) if msg.content_json else None,
        task_id=msg.task_id,
        correlation_id=msg.correlation_id,
        delivery="any" if msg.delivery == ctx_pb.DELIVERY_ANY else "each",
        sender_vector=dict(msg.sender_vector.revisions),
        create_time=dt(msg.create_time),
        expire_time=dt(msg.expire_time),
        acks=[
            Acknowledgement(agent_id=a.agent_id, role=a.role, ack_time=dt(a.ack_time))
            for a in msg.acks
        ],
    )


def change_event(msg: watch_pb.ChangeEvent) -> ChangeEvent:
    return ChangeEvent(
        namespace=msg.namespace,
        revision=msg.revision,
        kind=msg.kind,
        key=msg.key,
        op=msg.op,
        agent_id=msg.agent_id,
        time=dt(msg.time),
        data=json.loads(msg.data_json) if msg.data_json else None,
    )
