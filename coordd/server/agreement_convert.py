"""Agreements as protobuf messages (the responses of AgreementService)."""

from __future__ import annotations

from coordd.domain import agreements as ag
from coordd.server import convert
from coordd.v1 import agreement_service_pb2 as pb
from coordd.v1 import common_pb2


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
