"""AgreementService requests, read and checked (transition writes: the memory write rules)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from opentelemetry import trace

from coordd.domain import agreements as ag
from coordd.domain import validation as v
from coordd.domain.memory_writes import check_write
from coordd.server import convert
from coordd.v1 import agreement_service_pb2 as pb
from coordd.vocabulary import AgreementState, WriteMode


def _id(c: v.Checker, namespace: str, agreement_id: str) -> None:
    c.namespace("namespace", namespace)
    c.name("id", agreement_id, v.RESOURCE_MAX_BYTES)


def _participants(c: v.Checker, participants: list[pb.Participant]) -> None:
    if not 1 <= len(participants) <= v.AGREEMENT_MAX_PARTICIPANTS:
        c.fail("participants", f"must list 1 to {v.AGREEMENT_MAX_PARTICIPANTS} participants")
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
            if not 0 <= p.count <= v.AGREEMENT_MAX_SEATS:
                c.fail(
                    f"{field}.count", f"must be between 0 and {v.AGREEMENT_MAX_SEATS} (0 means 1)"
                )
            if p.role in roles:
                c.fail(f"{field}.role", "names a role listed before (raise its count instead)")
            roles.add(p.role)
            total += max(p.count, 1)
    if total > v.AGREEMENT_MAX_SEATS:
        c.fail("participants", f"must have at most {v.AGREEMENT_MAX_SEATS} seats in total")


def _writes(c: v.Checker, writes: list[pb.TransitionWrite]) -> None:
    if len(writes) > v.AGREEMENT_MAX_WRITES:
        c.fail("writes", f"must have at most {v.AGREEMENT_MAX_WRITES} writes")
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


def _participant_values(msgs: list[pb.Participant]) -> list[ag.Participant]:
    return [
        ag.Participant(agent_id=p.agent_id, role=p.role, count=1 if p.agent_id else max(p.count, 1))
        for p in msgs
    ]


def _transition_write(w: pb.TransitionWrite) -> ag.TransitionWrite:
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


def propose_agreement(req: pb.ProposeAgreementRequest) -> ag.Proposal:
    deadline = convert.duration(req.deadline, req.HasField("deadline"), "deadline")
    retention = convert.duration(req.retention, req.HasField("retention"), "retention")
    with v.checking() as c:
        _id(c, req.namespace, req.id)
        _participants(c, list(req.participants))
        c.json("transition_json", req.transition_json)
        _writes(c, list(req.writes))
        c.duration(
            "deadline", deadline, v.AGREEMENT_DEADLINE_MIN, v.AGREEMENT_DEADLINE_MAX, required=True
        )
        c.duration("retention", retention, v.AGREEMENT_RETENTION_MIN, v.AGREEMENT_RETENTION_MAX)
    assert deadline is not None
    ctx = trace.get_current_span().get_span_context()
    return ag.Proposal(
        namespace=req.namespace,
        id=req.id,
        participants=_participant_values(list(req.participants)),
        transition_json=req.transition_json,
        writes=[_transition_write(w) for w in req.writes],
        deadline=deadline,
        accept=req.accept,
        retention=retention or v.AGREEMENT_RETENTION_DEFAULT,
        fingerprint=hashlib.sha256(req.SerializeToString(deterministic=True)).digest(),
        trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else "",
    )


def vote(req: pb.VoteRequest) -> ag.VoteCast:
    with v.checking() as c:
        _id(c, req.namespace, req.id)
        c.text("reason", req.reason, v.REASON_MAX_BYTES)
    return ag.VoteCast(namespace=req.namespace, id=req.id, accept=req.accept, reason=req.reason)


def get_agreement(req: pb.GetAgreementRequest) -> ag.AgreementKey:
    with v.checking() as c:
        _id(c, req.namespace, req.id)
    return ag.AgreementKey(namespace=req.namespace, id=req.id)


def await_agreement(req: pb.AwaitAgreementRequest) -> ag.AgreementAwait:
    wait = convert.duration(req.wait, req.HasField("wait"), "wait")
    with v.checking() as c:
        _id(c, req.namespace, req.id)
        c.duration("wait", wait, timedelta(0), v.AGREEMENT_WAIT_MAX)
    return ag.AgreementAwait(namespace=req.namespace, id=req.id, wait=wait or timedelta(0))


def list_agreements(req: pb.ListAgreementsRequest) -> ag.AgreementListing:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.page_size("page_size", req.page_size)
        if req.state and not AgreementState.knows(req.state):
            c.fail("state", "is not a known agreement state")
        if req.proposer_agent_id:
            c.identifier("proposer_agent_id", req.proposer_agent_id)
    return ag.AgreementListing(
        namespace=req.namespace,
        state=AgreementState.of_number(req.state) if req.state else None,
        proposer=req.proposer_agent_id,
        after=convert.decode_page_token(req.page_token),
        limit=req.page_size or v.DEFAULT_PAGE_SIZE,
    )
