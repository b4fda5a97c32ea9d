"""The coordd error hierarchy, shared by the daemon, the sidecar and the client.

Each error declares once, through ``__init_subclass__``, its gRPC status code, its stable
``reason`` and the typed detail message that carries its attributes (``detail``, a message
of ``coordd.v1.error_details`` whose fields are named like the attributes, or renamed by
``renames``). An error with attributes is a dataclass (``@_error``): the attributes are its
fields, in constructor order, and ``describe`` words the message from them. The wire codec
(``coordd.rpc_status``) encodes and decodes by these declarations alone, and the client looks
classes up by reason, never by message text. A new reason is a new class here and, if it
needs one, a detail message in the proto::

    CoorddError
     ├── InvalidArgumentError          INVALID_ARGUMENT     INVALID_ARGUMENT
     ├── ClaimNotHeldError             FAILED_PRECONDITION  CLAIM_NOT_HELD
     ├── FencingTokenStaleError        FAILED_PRECONDITION  FENCING_TOKEN_STALE
     ├── RevisionMismatchError         ABORTED              REVISION_MISMATCH
     ├── IdempotencyKeyReusedError     FAILED_PRECONDITION  IDEMPOTENCY_KEY_REUSED
     ├── IdempotencyInFlightError      ABORTED              IDEMPOTENCY_KEY_IN_FLIGHT
     ├── IdempotencyAttemptSupersededError FAILED_PRECONDITION IDEMPOTENCY_ATTEMPT_SUPERSEDED
     ├── UnconditionalWriteForbiddenError FAILED_PRECONDITION UNCONDITIONAL_WRITE_FORBIDDEN
     ├── AgreementDecidedError         FAILED_PRECONDITION  AGREEMENT_DECIDED
     ├── NotAParticipantError          FAILED_PRECONDITION  NOT_A_PARTICIPANT
     ├── VoteAlreadyCastError          FAILED_PRECONDITION  VOTE_ALREADY_CAST
     ├── AgreementExistsError          ALREADY_EXISTS       AGREEMENT_EXISTS
     ├── NotFoundError                 NOT_FOUND            NOT_FOUND
     ├── PermissionDeniedError         PERMISSION_DENIED    SCOPE_NOT_GRANTED
     ├── UnauthenticatedError          UNAUTHENTICATED      UNAUTHENTICATED
     ├── RevisionCompactedError        OUT_OF_RANGE         REVISION_COMPACTED
     ├── RevisionNotReachedError       UNAVAILABLE          REVISION_NOT_REACHED
     ├── StorageUnavailableError       UNAVAILABLE          STORAGE_UNAVAILABLE
     ├── UnavailableError              UNAVAILABLE          UNAVAILABLE (transport, client side)
     │    └── ShuttingDownError        UNAVAILABLE          SHUTTING_DOWN
     ├── DeadlineExceededError         DEADLINE_EXCEEDED    DEADLINE_EXCEEDED (client side)
     ├── MessageTooLargeError          RESOURCE_EXHAUSTED   MESSAGE_TOO_LARGE
     ├── QuotaExceededError            RESOURCE_EXHAUSTED   QUOTA_EXCEEDED
     ├── RateLimitedError              RESOURCE_EXHAUSTED   RATE_LIMITED (+ RetryInfo)
     ├── TooManyStreamsError           RESOURCE_EXHAUSTED   TOO_MANY_STREAMS
     └── InternalError                 INTERNAL             INTERNAL
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar, dataclass_transform

import grpc

__all__ = [
    "AgreementDecidedError",
    "AgreementExistsError",
    "ClaimNotHeldError",
    "CoorddError",
    "DeadlineExceededError",
    "FencingTokenStaleError",
    "FieldViolation",
    "IdempotencyAttemptSupersededError",
    "IdempotencyInFlightError",
    "IdempotencyKeyReusedError",
    "InternalError",
    "InvalidArgumentError",
    "MessageTooLargeError",
    "NotAParticipantError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "RevisionCompactedError",
    "RevisionMismatchError",
    "RevisionNotReachedError",
    "ShuttingDownError",
    "StorageUnavailableError",
    "TooManyStreamsError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnconditionalWriteForbiddenError",
    "VoteAlreadyCastError",
    "error_class_for_reason",
]

_by_reason: dict[str, type[CoorddError]] = {}


class CoorddError(Exception):
    """Root of every coordd error.

    Attributes:
        code: The gRPC status code the error travels as.
        reason: Stable machine-readable reason (``google.rpc.ErrorInfo.reason``).
        message: Short developer-facing message.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    reason: ClassVar[str] = "INTERNAL"
    detail: ClassVar[str] = ""
    """Full name of the typed detail message carrying the attributes ("" for none)."""
    renames: ClassVar[Mapping[str, str]] = {}
    """Detail field -> attribute, where the names differ."""
    metadata: ClassVar[Mapping[str, str]] = {}
    """Integer attribute -> ``ErrorInfo.metadata`` key, for errors without a detail message."""

    def __init_subclass__(
        cls,
        *,
        code: grpc.StatusCode,
        reason: str,
        detail: str = "",
        renames: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = code
        cls.reason = reason
        cls.detail = detail
        cls.renames = renames or {}
        cls.metadata = metadata or {}
        _by_reason.setdefault(reason, cls)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __post_init__(self) -> None:
        # An error with attributes is a dataclass: its generated __init__ stores them, then
        # this gives the exception its message.
        CoorddError.__init__(self, self.describe())

    def describe(self) -> str:
        """The message, from the attributes (each dataclass error says it its own way)."""
        return self.reason.lower().replace("_", " ")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[CoorddError], state: dict[str, Any]) -> CoorddError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


_E = TypeVar("_E", bound=type[CoorddError])


@dataclass_transform(eq_default=False)
def _error(cls: _E) -> _E:
    """Make an error class with attributes a dataclass: its annotated fields are the
    constructor's arguments, in order. Equality and repr stay the exception's own."""
    return dataclass(eq=False, repr=False)(cls)  # type: ignore[return-value]


def error_class_for_reason(reason: str) -> type[CoorddError] | None:
    """Return the registered class for *reason*, or None if unknown."""
    return _by_reason.get(reason)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (``ttl``, ``fence.token``) and what is wrong."""

    field: str
    description: str


class InvalidArgumentError(
    CoorddError,
    code=grpc.StatusCode.INVALID_ARGUMENT,
    reason="INVALID_ARGUMENT",
    detail="google.rpc.BadRequest",
):
    """The request is malformed regardless of stored state.

    Attributes:
        violations: Every bad field found, in request order.
    """

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(text or "invalid argument")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgumentError:
        """Build the error for one bad field."""
        return cls([FieldViolation(field, description)])


@_error
class ClaimNotHeldError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="CLAIM_NOT_HELD",
    detail="coordd.v1.ClaimNotHeldDetail",
):
    """Renew or release by someone who is not the current holder with the current token.

    Attributes:
        namespace, resource: The claim.
        holder_agent_id: Current holder ("" if free).
        fencing_token: Current token (0 if free).
        expire_time: Current lease expiry (None if free).
    """

    namespace: str
    resource: str
    holder_agent_id: str = ""
    fencing_token: int = 0
    expire_time: datetime | None = None

    def describe(self) -> str:
        held = self.holder_agent_id
        who = f"held by {held!r}" if held else "not held by anyone"
        return f"claim {self.namespace}/{self.resource} is not yours: it is {who}"


@_error
class FencingTokenStaleError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="FENCING_TOKEN_STALE",
    detail="coordd.v1.FencingTokenStaleDetail",
):
    """A write carried a fencing token that is no longer the live claim's token.

    Attributes:
        namespace, resource: The claim named by the fence.
        presented_token: The token the write carried.
        current_token: The live claim's token (0 if the resource is not claimed).
    """

    namespace: str
    resource: str
    presented_token: int
    current_token: int

    def describe(self) -> str:
        return (
            f"fencing token {self.presented_token} for {self.namespace}/{self.resource} is "
            f"stale (current token: {self.current_token or 'none'}); the write was not applied"
        )


@_error
class RevisionMismatchError(
    CoorddError,
    code=grpc.StatusCode.ABORTED,
    reason="REVISION_MISMATCH",
    detail="coordd.v1.RevisionMismatchDetail",
):
    """Compare-and-set failed: re-read, re-apply, retry.

    ABORTED rather than FAILED_PRECONDITION, per AIP-154: the caller should retry the whole
    read-modify-write, not resend the same request.

    Attributes:
        namespace, key: The entry.
        expected_revision: What the write expected (0 = must not exist).
        current_revision: The entry's revision now (0 = absent).
    """

    namespace: str
    key: str
    expected_revision: int
    current_revision: int

    def describe(self) -> str:
        return (
            f"{self.namespace}/{self.key} is at revision {self.current_revision}, "
            f"the write expected {self.expected_revision}"
        )


@_error
class IdempotencyKeyReusedError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="IDEMPOTENCY_KEY_REUSED",
    detail="coordd.v1.IdempotencyKeyDetail",
):
    """The key was first used with another request fingerprint: a client bug, never retry."""

    namespace: str
    key: str

    def describe(self) -> str:
        return f"idempotency key {self.key!r} in {self.namespace} was used for a different request"


@_error
class IdempotencyInFlightError(
    CoorddError,
    code=grpc.StatusCode.ABORTED,
    reason="IDEMPOTENCY_KEY_IN_FLIGHT",
    detail="coordd.v1.IdempotencyKeyDetail",
):
    """Another runner holds the key; retry after ``retry_after``."""

    namespace: str
    key: str
    retry_after: timedelta
    current_attempt: int = 0

    def describe(self) -> str:
        return f"idempotency key {self.key!r} in {self.namespace} is in progress elsewhere"


@_error
class IdempotencyAttemptSupersededError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="IDEMPOTENCY_ATTEMPT_SUPERSEDED",
    detail="coordd.v1.IdempotencyKeyDetail",
):
    """The attempt no longer owns the key (its lease lapsed and another runner took over)."""

    namespace: str
    key: str
    current_attempt: int

    def describe(self) -> str:
        return (
            f"idempotency key {self.key!r} in {self.namespace} now belongs to attempt "
            f"{self.current_attempt}"
        )


@_error
class UnconditionalWriteForbiddenError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="UNCONDITIONAL_WRITE_FORBIDDEN",
):
    """The namespace policy refuses last-write-wins writes."""

    namespace: str

    def describe(self) -> str:
        return (
            f"namespace {self.namespace} forbids unconditional writes: "
            "use expected_revision or a merge patch"
        )


@_error
class AgreementDecidedError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="AGREEMENT_DECIDED",
    detail="coordd.v1.AgreementDecidedDetail",
    renames={"id": "agreement_id", "reason": "decision_reason"},
):
    """A vote arrived after the agreement was decided; it changed nothing.

    Attributes:
        namespace, agreement_id: The agreement.
        state: The decision: "committed" or "aborted".
        cause: Why: "all_accepted", "rejected", "deadline_passed", "withdrawn" or
            "transition_failed".
        decision_reason: The decision's detail (a rejecting voter's reason, the conflicting
            write). Not ``reason``, which every coordd error uses for its stable code.
        decide_revision: Namespace revision of the decision.
    """

    namespace: str
    agreement_id: str
    state: str
    cause: str = ""
    decision_reason: str = ""
    decide_revision: int = 0

    def describe(self) -> str:
        why = f" ({self.decision_reason})" if self.decision_reason else ""
        return (
            f"agreement {self.agreement_id!r} in {self.namespace} is already {self.state}{why}; "
            "the vote changed nothing"
        )


@_error
class NotAParticipantError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="NOT_A_PARTICIPANT",
    detail="coordd.v1.NotAParticipantDetail",
    renames={"id": "agreement_id"},
):
    """The caller holds no seat in the agreement and none is free for it.

    Attributes:
        namespace, agreement_id: The agreement.
        agent_id, role: The caller as the daemon identified it.
    """

    namespace: str
    agreement_id: str
    agent_id: str
    role: str

    def describe(self) -> str:
        return (
            f"agent {self.agent_id!r} (role {self.role!r}) is not a participant of agreement "
            f"{self.agreement_id!r} in {self.namespace}, or every seat of its role is taken"
        )


@_error
class VoteAlreadyCastError(
    CoorddError,
    code=grpc.StatusCode.FAILED_PRECONDITION,
    reason="VOTE_ALREADY_CAST",
    detail="coordd.v1.VoteAlreadyCastDetail",
    renames={"id": "agreement_id"},
):
    """The caller already voted the other way on this agreement; votes are final.

    Attributes:
        namespace, agreement_id: The agreement.
        accept: The vote on record.
    """

    namespace: str
    agreement_id: str
    accept: bool

    def describe(self) -> str:
        return (
            f"you already voted {'accept' if self.accept else 'reject'} on agreement "
            f"{self.agreement_id!r} in {self.namespace}; votes are final"
        )


@_error
class AgreementExistsError(
    CoorddError, code=grpc.StatusCode.ALREADY_EXISTS, reason="AGREEMENT_EXISTS"
):
    """The agreement id is taken by a different proposal (an identical retry is not an error)."""

    namespace: str
    agreement_id: str

    def describe(self) -> str:
        return (
            f"agreement {self.agreement_id!r} in {self.namespace} exists with a different proposal"
        )


class NotFoundError(CoorddError, code=grpc.StatusCode.NOT_FOUND, reason="NOT_FOUND"):
    """The named thing does not exist (or the caller may not know it exists)."""


@_error
class PermissionDeniedError(
    CoorddError, code=grpc.StatusCode.PERMISSION_DENIED, reason="SCOPE_NOT_GRANTED"
):
    """The caller's grants do not cover this operation on this namespace.

    Attributes:
        permission: The operation (read, write, claim, admin).
        namespace: The namespace asked for.
    """

    permission: str
    namespace: str

    def describe(self) -> str:
        return (
            f"permission {self.permission!r} denied on namespace {self.namespace!r} "
            "(or it might not exist)"
        )


class UnauthenticatedError(
    CoorddError, code=grpc.StatusCode.UNAUTHENTICATED, reason="UNAUTHENTICATED"
):
    """No credentials, or credentials the daemon does not accept."""


@_error
class RevisionCompactedError(
    CoorddError,
    code=grpc.StatusCode.OUT_OF_RANGE,
    reason="REVISION_COMPACTED",
    detail="coordd.v1.RevisionCompactedDetail",
):
    """The requested revision was compacted away; resync, then resume from compact_revision."""

    namespace: str
    compact_revision: int

    def describe(self) -> str:
        return (
            f"revisions of {self.namespace} before {self.compact_revision} were compacted; resync"
        )


@_error
class RevisionNotReachedError(
    CoorddError,
    code=grpc.StatusCode.UNAVAILABLE,
    reason="REVISION_NOT_REACHED",
    metadata={"min_revision": "minRevision", "revision": "revision"},
):
    """A read asked for ``min_revision`` and the replica did not reach it within its bounded wait.

    Another replica (or the same one a moment later) can answer: retry after ``retry_after``.
    """

    namespace: str
    min_revision: int
    revision: int
    retry_after: timedelta = timedelta(milliseconds=100)

    def describe(self) -> str:
        return (
            f"{self.namespace} is at revision {self.revision} here, below min_revision "
            f"{self.min_revision}; retry (another replica may be ahead)"
        )


@_error
class StorageUnavailableError(
    CoorddError, code=grpc.StatusCode.UNAVAILABLE, reason="STORAGE_UNAVAILABLE"
):
    """PostgreSQL is unreachable; retry after ``retry_after``."""

    message: str = "storage unavailable"
    retry_after: timedelta = timedelta(seconds=1)

    def describe(self) -> str:
        return self.message


class UnavailableError(CoorddError, code=grpc.StatusCode.UNAVAILABLE, reason="UNAVAILABLE"):
    """The daemon (or sidecar) could not be reached."""


@_error
class ShuttingDownError(UnavailableError, code=grpc.StatusCode.UNAVAILABLE, reason="SHUTTING_DOWN"):
    """The daemon is stopping: open streams and long waits end with this at once.

    Reconnect (to another replica, or to this one once restarted) and resume from your cursor;
    the client's ``watch`` and ``context.subscribe`` do so by themselves.
    """

    message: str = "coordd is shutting down: reconnect and resume from your cursor"
    retry_after: timedelta = timedelta(milliseconds=500)

    def describe(self) -> str:
        return self.message


class DeadlineExceededError(
    CoorddError, code=grpc.StatusCode.DEADLINE_EXCEEDED, reason="DEADLINE_EXCEEDED"
):
    """The call's deadline passed before an answer."""


@_error
class MessageTooLargeError(
    CoorddError,
    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
    reason="MESSAGE_TOO_LARGE",
    metadata={"size": "size", "limit": "limit"},
):
    """A message is larger than the daemon's limit (``--max-message-bytes``); nothing was done.

    Split the write (``put_many`` in smaller batches, a smaller value) rather than retry it.

    Attributes:
        size: The message's size in bytes (0 if the transport did not say).
        limit: The largest message accepted, in bytes (0 if the transport did not say).
    """

    size: int = 0
    limit: int = 0
    message: str = ""

    def describe(self) -> str:
        return (
            self.message
            or f"message of {self.size} bytes is larger than the limit of {self.limit} bytes; "
            "nothing was done (split the request)"
        )


@_error
class QuotaExceededError(
    CoorddError,
    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
    reason="QUOTA_EXCEEDED",
    metadata={"quota": "quota", "usage": "usage"},
):
    """The write would take its namespace past a quota (policy ``[[quotas]]``); nothing of
    it was written. Delete or compact first, or ask for a larger quota.

    Attributes:
        namespace: The namespace.
        limit_name: Which quota: ``memory_entries``, ``memory_bytes``, ``context_entries``,
            ``context_bytes``, ``idempotency_entries`` or ``idempotency_bytes``.
        quota: The quota.
        usage: The namespace's usage before the write.
    """

    namespace: str = ""
    limit_name: str = ""
    quota: int = 0
    usage: int = 0

    def describe(self) -> str:
        return (
            f"namespace {self.namespace!r} is at {self.usage} of its {self.limit_name} quota "
            f"of {self.quota}; the write was not applied"
        )


class RateLimitedError(
    CoorddError,
    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
    reason="RATE_LIMITED",
    metadata={"rate": "rate"},
):
    """The caller spent its call budget (the policy's ``[[limits]]`` for its role); nothing
    was done. Retry after ``retry_after``, not at once: retrying sooner spends nothing but
    keeps being refused.

    Attributes:
        agent_id: The caller.
        rate: Its sustained rate, calls per second (as an integer).
        retry_after: When a call will be admitted again.
    """

    def __init__(
        self, agent_id: str = "", rate: float = 0, retry_after: timedelta | None = None
    ) -> None:
        self.agent_id = agent_id
        self.rate = int(rate)
        self.retry_after = retry_after or timedelta(seconds=1)
        super().__init__(
            f"agent {agent_id!r} is over its rate limit of {int(rate)} calls/s; "
            f"retry after {self.retry_after.total_seconds():.3f}s"
        )


@_error
class TooManyStreamsError(
    CoorddError,
    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
    reason="TOO_MANY_STREAMS",
    metadata={"limit": "limit"},
):
    """The caller has as many Watch / SubscribeContext streams open as its role allows.

    Attributes:
        agent_id: The caller.
        limit: The streams it may hold open at once.
    """

    agent_id: str = ""
    limit: int = 0

    def describe(self) -> str:
        return (
            f"agent {self.agent_id!r} already has {self.limit} streams open, its limit: "
            "close one first"
        )


@_error
class InternalError(CoorddError, code=grpc.StatusCode.INTERNAL, reason="INTERNAL"):
    """A bug in coordd. Only a trace id travels; details are in the daemon's log."""

    message: str = "internal error"
    trace_id: str = ""

    def describe(self) -> str:
        return self.message
