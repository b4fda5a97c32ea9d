"""Plain result types returned by the client (no protobuf in the public API)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """A claim token to attach to a write: the write applies only while the claim is yours."""

    namespace: str
    resource: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A live claim."""

    namespace: str
    resource: str
    holder_agent_id: str
    holder_role: str
    fencing_token: int
    acquire_time: datetime
    expire_time: datetime
    progress: str

    @property
    def fence(self) -> Fence:
        """The fence for writes made under this claim."""
        return Fence(namespace=self.namespace, resource=self.resource, token=self.fencing_token)


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
class ClaimList:
    claims: list[Claim]
    next_page_token: str
    revision: int


class IdempotencyState(enum.StrEnum):
    ACQUIRED = "acquired"
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"
    FAILED = "failed"


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
class IdempotencyRecord:
    namespace: str
    key: str
    state: IdempotencyState
    attempt: int
    fingerprint: bytes
    result: bytes
    error: str
    runner_agent_id: str
    create_time: datetime | None
    lease_expire_time: datetime | None
    expire_time: datetime | None


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
class Acknowledgement:
    agent_id: str
    role: str
    ack_time: datetime


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
