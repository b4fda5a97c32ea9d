"""Domain values passed between servicers, domain services and storage."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who is calling: established by the daemon from credentials, never from request fields."""

    agent_id: str
    role: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """A claim token a write must still hold for the write to apply."""

    namespace: str
    resource: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A live claim as stored."""

    namespace: str
    resource: str
    holder_agent_id: str
    holder_role: str
    fencing_token: int
    acquire_time: datetime
    expire_time: datetime
    progress: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOutcome:
    """Result of a claim operation.

    Attributes:
        acquired: True if the caller holds the claim after the call.
        revision: The namespace revision produced (or observed, if nothing changed).
        claim: The caller's claim, or the current holder's when not acquired; None if free.
    """

    acquired: bool
    revision: int
    claim: Claim | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimPage:
    revision: int
    claims: list[Claim]
    next_after: str | None


class IdempotencyState(enum.Enum):
    ACQUIRED = "acquired"
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    namespace: str
    key: str
    state: IdempotencyState
    attempt: int
    fingerprint: bytes
    result: bytes
    error: str
    runner_agent_id: str
    create_time: datetime
    lease_expire_time: datetime
    expire_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginOutcome:
    """What BeginIdempotency answers."""

    revision: int
    state: IdempotencyState
    record: IdempotencyRecord
    retry_after: timedelta = field(default=timedelta(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledgement:
    agent_id: str
    role: str
    ack_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEntry:
    """A directional entry; ``id`` is the namespace revision of its post."""

    namespace: str
    id: int
    from_agent_id: str
    from_role: str
    to_role: str
    to_agent_id: str
    context_type: str
    content_json: str
    task_id: str
    correlation_id: str
    delivery: str
    sender_vector: dict[str, int]
    create_time: datetime
    expire_time: datetime
    acks: list[Acknowledgement]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextPost:
    """What PostContext writes (sender identity comes separately, from the caller)."""

    namespace: str
    to_role: str
    to_agent_id: str
    context_type: str
    content_json: str
    task_id: str
    correlation_id: str
    ttl: timedelta
    delivery: str
    sender_vector: dict[str, int]
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextQuery:
    """Which entries ReadContext / SubscribeContext return."""

    namespace: str
    unread_only: bool
    context_type: str
    task_id: str
    after_id: int
    limit: int
    lease: timedelta
    sent: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log row: what happened at a namespace revision."""

    namespace: str
    revision: int
    seq: int
    kind: str
    key: str
    op: str
    agent_id: str
    time: datetime
    data_json: str
