"""Plain result types returned by the client (no protobuf in the public API)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from coordd.vocabulary import Acknowledgement as Acknowledgement

# The enum tables are the daemon's too: one vocabulary (coordd.vocabulary).
from coordd.vocabulary import AgreementState as AgreementState
from coordd.vocabulary import Claim as Claim
from coordd.vocabulary import EntryRef as EntryRef
from coordd.vocabulary import Fence as Fence
from coordd.vocabulary import IdempotencyRecord as IdempotencyRecord
from coordd.vocabulary import IdempotencyState as IdempotencyState
from coordd.vocabulary import NamespacePolicy as NamespacePolicy
from coordd.vocabulary import Participant as Participant


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireResult:
    """Outcome of an acquire.

    Attributes:
        acquired: True if the caller now holds the claim.
        claim: The caller's claim when acquired, else the current holder's (None if unknown).
        revision: Namespace revision produced (or observed).
    """

    acquired: bool
    claim: Claim | None
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireAllResult:
    """Outcome of an all-or-nothing ``acquire_all``.

    Attributes:
        acquired: True if the caller now holds every requested resource; False if it took none.
        claims: Your claims, in request order, when acquired (newly taken ones share the
            fencing token ``revision``); else the other agents' claims that blocked the grant.
        revision: Namespace revision of the grant (or the current one when refused).
    """

    acquired: bool
    claims: list[Claim]
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimList:
    claims: list[Claim]
    next_page_token: str
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginResult:
    """Outcome of BeginIdempotency.

    Attributes:
        state: ACQUIRED (run the work), COMPLETED (``result`` holds the stored result),
            IN_PROGRESS (retry after ``retry_after``) or FAILED (``error`` is stored).
        attempt: The attempt number you own (ACQUIRED) or that owns the key.
    """

    state: IdempotencyState
    attempt: int
    result: bytes
    error: str
    retry_after: timedelta
    lease_expire_time: datetime | None
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """TLS for the connection (PEM files).

    Attributes:
        ca_file: CA that signed the daemon's certificate (None: the system's roots).
        cert_file: This agent's certificate, for daemons in mtls mode (its common name is
            the agent id).
        key_file: The private key of ``cert_file``.
        server_name: Override the name checked against the daemon's certificate.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEntry:
    """A directional entry. ``id`` is the namespace revision of the post (and the cursor)."""

    namespace: str
    id: int
    from_agent_id: str
    from_role: str
    to_role: str
    to_agent_id: str
    context_type: str
    content: Any
    """The content, decoded from JSON."""
    task_id: str
    correlation_id: str
    delivery: str
    """"each" or "any"."""
    sender_vector: dict[str, int]
    create_time: datetime
    expire_time: datetime
    acks: list[Acknowledgement]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent:
    """One change-log row: what happened at a namespace revision."""

    namespace: str
    revision: int
    kind: str
    key: str
    op: str
    agent_id: str
    time: datetime
    data: Any
    """Extra data, decoded from JSON (None if none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPut:
    """One write of ``memory.put_many``: the arguments of ``memory.put``, as a value."""

    namespace: str
    key: str
    value: Any
    tier: str = "semantic"
    text: str = ""
    embedding: Sequence[float] | None = None
    tags: Sequence[str] = ()
    task_id: str = ""
    mode: str | None = None
    expected_revision: int | None = None
    ttl: timedelta | float | None = None
    derived_from: Sequence[EntryRef | tuple[str, str]] = ()
    review_time: datetime | None = None
    confidence: float = 0.0
    fence: Fence | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Who wrote an entry, when and from what: stamped by the daemon, never by clients."""

    agent_id: str
    role: str
    write_time: datetime
    trace_id: str
    request_id: str
    derived_from: list[EntryRef]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEntry:
    namespace: str
    key: str
    tier: str
    """"working", "episodic" or "semantic"."""
    value: Any
    """The value, decoded from JSON."""
    text: str
    embedding: list[float]
    tags: list[str]
    task_id: str
    revision: int
    create_revision: int
    provenance: Provenance
    expire_time: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None
    review_time: datetime | None
    confidence: float
    stale: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit:
    entry: MemoryEntry
    distance: float
    """Cosine distance (1 - cosine similarity), ascending."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefHit:
    """A search hit without its entry (``memory.search_refs``): which entry, at which revision."""

    namespace: str
    key: str
    revision: int
    """The revision of the entry's version found."""
    distance: float
    """Cosine distance (1 - cosine similarity), ascending."""

    @property
    def ref(self) -> EntryRef:
        """The version found, as ``derived_from`` and the like take it."""
        return EntryRef(namespace=self.namespace, key=self.key, revision=self.revision)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPage:
    entries: list[MemoryEntry]
    next_page_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionWrite:
    """A memory write applied atomically with an agreement's COMMITTED decision, never else.

    Attributes:
        tier: "working", "episodic" or "semantic".
        mode: "lww", "cas" or "merge" (RFC 7386 merge patch); None uses the namespace's
            default, or compare-and-set when ``expected_revision`` is given (as
            ``memory.put``).
        expected_revision: For "cas": 0 = must not exist, N = must be at revision N.
        ttl: Expiry counted from the commit (None: none).
    """

    namespace: str
    key: str
    value: Any
    tier: str = "semantic"
    mode: str | None = None
    expected_revision: int | None = None
    text: str = ""
    tags: tuple[str, ...] = ()
    task_id: str = ""
    ttl: timedelta | float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ballot:
    """One vote: who (stamped by the server), which way, why, and the seat it took."""

    agent_id: str
    role: str
    accept: bool
    reason: str
    vote_time: datetime
    participant_index: int
    """Index into ``participants`` of the seat taken; -1 for a seatless proposer's withdrawal."""
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """An agreement and its votes.

    Attributes:
        state: PENDING, then COMMITTED or ABORTED, once and for everyone.
        cause: Why it was decided: "all_accepted", "rejected", "deadline_passed", "withdrawn",
            "transition_failed" ("" while pending).
        reason: The decision's detail (a rejecting voter's reason, the conflicting write).
        transition: What was agreed (decoded JSON).
        write_revisions: COMMITTED with writes: namespace -> revision of the writes.
    """

    namespace: str
    id: str
    proposer_agent_id: str
    proposer_role: str
    participants: list[Participant]
    transition: Any
    writes: list[TransitionWrite]
    state: AgreementState
    cause: str
    reason: str
    decided_by_agent_id: str
    votes: list[Ballot]
    seats: int
    accepted: int
    create_time: datetime
    deadline_time: datetime
    decide_time: datetime | None
    create_revision: int
    decide_revision: int
    expire_time: datetime | None
    write_revisions: dict[str, int]

    @property
    def decided(self) -> bool:
        return self.state is not AgreementState.PENDING

    @property
    def committed(self) -> bool:
        return self.state is AgreementState.COMMITTED

    @property
    def aborted(self) -> bool:
        return self.state is AgreementState.ABORTED


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementList:
    agreements: list[Agreement]
    next_page_token: str
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceReleaseResult:
    """Outcome of ``admin.force_release``.

    Attributes:
        released: False when no live claim existed (nothing changed).
        claim: The claim as it was just before the release (None if nothing was held).
        revision: Namespace revision of the release (or the current one).
    """

    released: bool
    claim: Claim | None
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeResult:
    """Outcome of ``admin.purge_namespace``.

    Attributes:
        removed: Rows removed by kind ("claims", "memory", "context", "agreements", ...).
        revision: Namespace revision of the purge.
    """

    removed: dict[str, int]
    revision: int
