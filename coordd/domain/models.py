"""Domain values passed between servicers, domain services and storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The enum tables live in coordd.vocabulary; re-exported here for the domain's users.
from coordd.vocabulary import Acknowledgement as Acknowledgement
from coordd.vocabulary import Claim as Claim
from coordd.vocabulary import EntryRef as EntryRef
from coordd.vocabulary import Fence as Fence
from coordd.vocabulary import IdempotencyRecord as IdempotencyRecord
from coordd.vocabulary import IdempotencyState as IdempotencyState
from coordd.vocabulary import NamespacePolicy as NamespacePolicy
from coordd.vocabulary import Tier as Tier


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who is calling: established by the daemon from credentials, never from request fields."""

    agent_id: str
    role: str = ""


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
class ClaimsOutcome:
    """Result of an all-or-nothing multi-claim (AcquireClaims).

    Attributes:
        acquired: True if the caller holds every requested resource after the call.
        revision: The grant's revision (or the namespace's current one, if nothing changed).
        claims: The caller's claims in request order when acquired; else the other agents'
            claims that blocked the grant.
    """

    acquired: bool
    revision: int
    claims: list[Claim]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimPage:
    revision: int
    claims: list[Claim]
    next_after: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginOutcome:
    """What BeginIdempotency answers."""

    revision: int
    state: IdempotencyState
    record: IdempotencyRecord
    retry_after: timedelta = field(default=timedelta(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextMessage:
    """What a context entry says and to whom: the part a post and the stored entry share."""

    namespace: str
    to_role: str
    to_agent_id: str
    context_type: str
    content_json: str
    task_id: str
    correlation_id: str
    delivery: str
    sender_vector: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEntry(ContextMessage):
    """A directional entry; ``id`` is the namespace revision of its post."""

    id: int
    from_agent_id: str
    from_role: str
    create_time: datetime
    expire_time: datetime
    acks: list[Acknowledgement]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextPost(ContextMessage):
    """What PostContext writes (sender identity comes separately, from the caller)."""

    ttl: timedelta
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


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEntry:
    """One version of a memory entry, with the provenance the server stamped on it."""

    namespace: str
    key: str
    tier: Tier
    value_json: str
    text: str
    embedding: bytes  # float32 little-endian, b"" if none
    tags: list[str]
    task_id: str
    revision: int
    create_revision: int
    agent_id: str
    role: str
    write_time: datetime
    trace_id: str
    request_id: str
    derived_from: list[EntryRef]
    expire_time: datetime | None
    valid_from: datetime
    valid_to: datetime | None
    review_time: datetime | None
    confidence: float
    stale: bool = False
    """review_time has passed (by the database clock)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryWrite:
    """What PutMemory asks for (provenance comes from the caller's identity, not from here)."""

    namespace: str
    key: str
    tier: Tier
    value_json: str
    text: str
    embedding: bytes
    dim: int
    tags: list[str]
    task_id: str
    mode: str  # "lww", "cas", "merge" or "" (namespace default)
    expected_revision: int | None
    ttl: timedelta | None
    derived_from: list[EntryRef]
    review_time: datetime | None
    confidence: float
    fence: Fence | None
    request_id: str


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """What a vector search may return: applied before ranking."""

    namespaces: frozenset[str]
    tier: int = 0
    tags: frozenset[str] = frozenset()
    task_id: str = ""
    include_stale: bool = False
    now: float = 0.0
