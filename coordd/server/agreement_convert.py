"""Agreement requests: validation and protobuf <-> domain conversion."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from opentelemetry import trace

from coordd.domain import agreements as ag
from coordd.domain import validation as v
from coordd.domain.memory_writes import check_write
from coordd.server import convert
from coordd.v1 import agreement_service_pb2 as pb
from coordd.v1 import common_pb2
from coordd.vocabulary import WriteMode

MAX_PARTICIPANTS = 64
MAX_SEATS = 256
MAX_WRITES = 100
REASON_MAX_BYTES = 1024
DEADLINE_MIN = timedelta(milliseconds=100)
DEADLINE_MAX = timedelta(days=7)
RETENTION_DEFAULT = timedelta(hours=24)
RETENTION_MIN = timedelta(minutes=1)
RETENTION_MAX = timedelta(days=30)
WAIT_MAX = timedelta(minutes=5)


def check_id(c: v.Checker, namespace: str, agreement_id: str) -> None:
    c.namespace("namespace", namespace)
    c.name("id", agreement_id, v.RESOURCE_MAX_BYTES)


def check_participants(c: v.Checker, participants: list[pb.Participant]) -> None:
    if not 1 <= len(participants) <= MAX_PARTICIPANTS:
        c.fail("participants", f"must list 1 to {MAX_PARTICIPANTS} participants")
        return
    agents: set[str] = set()
    roles: set[str] = set()
    total = 0
    for i, p in enumerate(participants):
        field = f"participants[{i}]"
        if bool(p.agent_id) == bool(p.role):
            c.fail(field, "exactly one of agent_id and role is required")
            continue
        if p.agent_id:
            c.identifier(f"{field}.agent_id", p.agent_id)
            if p.count not in (0, 1):
                c.fail(f"{field}.count", "must be 0 or 1 for an agent participant")
            if p.agent_id in agents:
                c.fail(f"{field}.agent_id", "names an agent listed before")
            agents.add(p.agent_id)
            total += 1
        else:
            c.identifier(f"{field}.role", p.role)
            if not 0 <= p.count <= MAX_SEATS:
                c.fail(f"{field}.count", f"must be between 0 and {MAX_SEATS} (0 means 1)")
            if p.role in roles:
                c.fail(f"{field}.role", "names a role listed before (raise its count instead)")
            roles.add(p.role)
            total += max(p.count, 1)
    if total > MAX_SEATS:
        c.fail("participants", f"must have at most {MAX_SEATS} seats in total")


def check_writes(c: v.Checker, writes: list[pb.TransitionWrite]) -> None:
    if len(writes) > MAX_WRITES:
        c.fail("writes", f"must have at most {MAX_WRITES} writes")
        return
    keys: set[tuple[str, str]] = set()
    for i, w in enumerate(writes):
        field = f"writes[{i}]"
        if (w.namespace, w.key) in keys:
            c.fail(f"{field}.key", "is written twice by the transition")
        keys.add((w.namespace, w.key))
        check_write(
            c,
            f"{field}.",
            namespace=w.namespace,
            key=w.key,
            tier=w.tier,
            value_json=w.value_json,
            text=w.text,
            tags=w.tags,
            task_id=w.task_id,
            write_mode=w.write_mode,
            expected_revision=w.expected_revision if w.HasField("expected_revision") else None,
            ttl=convert.duration(w.ttl, w.HasField("ttl"), f"{field}.ttl"),
        )


def participants(msgs: list[pb.Participant]) -> list[ag.Participant]:
    return [
        ag.Participant(agent_id=p.agent_id, role=p.role, count=1 if p.agent_id else max(p.count, 1))
        for p in msgs
    ]


def transition_write(w: pb.TransitionWrite) -> ag.TransitionWrite:
    return ag.TransitionWrite(
        namespace=w.namespace,
        key=w.key,
        tier=int(w.tier),
        value_json=w.value_json,
        text=w.text,
        tags=tuple(w.tags),
        task_id=w.task_id,
        mode=WriteMode.of_number(w.write_mode),
        expected_revision=w.expected_revision if w.HasField("expected_revision") else None,
        ttl=convert.duration(w.ttl, w.HasField("ttl"), "ttl"),
    )


def proposal(
    req: pb.ProposeAgreementRequest, deadline: timedelta, retention: timedelta | None
) -> ag.Proposal:
    ctx = trace.get_current_span().get_span_context()
    return ag.Proposal(
        namespace=req.namespace,
        id=req.id,
        participants=participants(list(req.participants)),
        transition_json=req.transition_json,
        writes=[transition_write(w) for w in req.writes],
        deadline=deadline,
        accept=req.accept,
        retention=retention or RETENTION_DEFAULT,
        fingerprint=hashlib.sha256(req.SerializeToString(deterministic=True)).digest(),
        trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else "",
    )


def agreement_message(a: ag.Agreement) -> pb.Agreement:
    return pb.Agreement(
        namespace=a.namespace,
        id=a.id,
        proposer_agent_id=a.proposer_agent_id,
        proposer_role=a.proposer_role,
        participants=[
            pb.Participant(agent_id=p.agent_id, role=p.role, count=p.count) for p in a.participants
        ],
        transition_json=a.transition_json,
        writes=[_write_message(w) for w in a.writes],
        state=a.state.number,  # type: ignore[arg-type]
        cause=a.cause.number,  # type: ignore[arg-type]
        reason=a.reason,
        decided_by_agent_id=a.decided_by_agent_id,
        votes=[
            pb.Ballot(
                agent_id=b.agent_id,
                role=b.role,
                accept=b.accept,
                reason=b.reason,
                vote_time=convert.timestamp(b.vote_time),
                participant_index=b.seat,
                revision=b.revision,
            )
            for b in a.votes
        ],
        seats=a.seats,
        accepted=a.accepted,
        create_time=convert.timestamp(a.create_time),
        deadline_time=convert.timestamp(a.deadline_time),
        decide_time=convert.timestamp(a.decide_time),
        create_revision=a.create_revision,
        decide_revision=a.decide_revision,
        expire_time=convert.timestamp(a.expire_time),
        write_revisions=common_pb2.VersionVector(revisions=a.write_revisions),
    )


def _write_message(w: ag.TransitionWrite) -> pb.TransitionWrite:
    return pb.TransitionWrite(
        namespace=w.namespace,
        key=w.key,
        tier=w.tier,  # type: ignore[arg-type]
        value_json=w.value_json,
        text=w.text,
        tags=list(w.tags),
        task_id=w.task_id,
        write_mode=w.mode.number,  # type: ignore[arg-type]
        expected_revision=w.expected_revision,
        ttl=None if w.ttl is None else convert.to_duration(w.ttl),
    )
