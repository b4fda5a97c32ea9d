"""coordd_client: the Python client for coordd (blocking and asyncio).

Example::

    from coordd_client import Client

    with Client.connect("127.0.0.1:7420", agent_id="worker-1", role="worker") as client:
        with client.claims.hold("acme/docs", "doc-42", ttl=30) as held:
            ...  # work; pass held.fence to writes made under the claim
"""

import logging

from coordd.errors import (
    AgreementDecidedError,
    AgreementExistsError,
    ClaimNotHeldError,
    CoorddError,
    DeadlineExceededError,
    FencingTokenStaleError,
    FieldViolation,
    IdempotencyAttemptSupersededError,
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InternalError,
    InvalidArgumentError,
    MessageTooLargeError,
    NotAParticipantError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    RevisionCompactedError,
    RevisionMismatchError,
    RevisionNotReachedError,
    ShuttingDownError,
    StorageUnavailableError,
    TooManyStreamsError,
    UnauthenticatedError,
    UnavailableError,
    UnconditionalWriteForbiddenError,
    VoteAlreadyCastError,
)

from ._admin import Admin, AsyncAdmin
from ._agreements import (
    AgreementHandle,
    Agreements,
    AsyncAgreements,
    ProposedAgreement,
    Proposing,
)
from ._cache import CacheConfig, CacheStats
from ._claims import AsyncClaims, Claims, HeldClaim
from ._client import AsyncClient, Client
from ._context import AsyncContext, Context
from ._errors import ClaimHeldError, ClaimLostError, IdempotentTaskFailedError
from ._gate import GateResult, LostClaim, MovedNamespace
from ._idempotency import AsyncIdempotency, Idempotency, fingerprint
from ._memory import AsyncMemory, Memory
from ._models import (
    Acknowledgement,
    AcquireAllResult,
    AcquireResult,
    Agreement,
    AgreementList,
    AgreementState,
    Ballot,
    BeginResult,
    ChangeEvent,
    Claim,
    ClaimList,
    ContextEntry,
    EntryRef,
    Fence,
    ForceReleaseResult,
    IdempotencyRecord,
    IdempotencyState,
    MemoryEntry,
    MemoryPage,
    MemoryPut,
    NamespacePolicy,
    Participant,
    Provenance,
    PurgeResult,
    RefHit,
    SearchHit,
    TLSConfig,
    TransitionWrite,
)
from ._session import Session
from ._watch import AsyncWatch

# A library stays quiet unless the application configures logging (psycopg's rule).
if (_logger := logging.getLogger("coordd_client")).level == logging.NOTSET:
    _logger.setLevel(logging.WARNING)

__all__ = [
    "Acknowledgement",
    "AcquireAllResult",
    "AcquireResult",
    "Admin",
    "Agreement",
    "AgreementDecidedError",
    "AgreementExistsError",
    "AgreementHandle",
    "AgreementList",
    "AgreementState",
    "Agreements",
    "AsyncAdmin",
    "AsyncAgreements",
    "AsyncClaims",
    "AsyncClient",
    "AsyncContext",
    "AsyncIdempotency",
    "AsyncMemory",
    "AsyncWatch",
    "Ballot",
    "BeginResult",
    "CacheConfig",
    "CacheStats",
    "ChangeEvent",
    "Claim",
    "ClaimHeldError",
    "ClaimList",
    "ClaimLostError",
    "ClaimNotHeldError",
    "Claims",
    "Client",
    "Context",
    "ContextEntry",
    "CoorddError",
    "DeadlineExceededError",
    "EntryRef",
    "Fence",
    "FencingTokenStaleError",
    "FieldViolation",
    "ForceReleaseResult",
    "GateResult",
    "HeldClaim",
    "Idempotency",
    "IdempotencyAttemptSupersededError",
    "IdempotencyInFlightError",
    "IdempotencyKeyReusedError",
    "IdempotencyRecord",
    "IdempotencyState",
    "IdempotentTaskFailedError",
    "InternalError",
    "InvalidArgumentError",
    "LostClaim",
    "Memory",
    "MemoryEntry",
    "MemoryPage",
    "MemoryPut",
    "MessageTooLargeError",
    "MovedNamespace",
    "NamespacePolicy",
    "NotAParticipantError",
    "NotFoundError",
    "Participant",
    "PermissionDeniedError",
    "ProposedAgreement",
    "Proposing",
    "Provenance",
    "PurgeResult",
    "QuotaExceededError",
    "RateLimitedError",
    "RefHit",
    "RevisionCompactedError",
    "RevisionMismatchError",
    "RevisionNotReachedError",
    "SearchHit",
    "Session",
    "ShuttingDownError",
    "StorageUnavailableError",
    "TLSConfig",
    "TooManyStreamsError",
    "TransitionWrite",
    "UnauthenticatedError",
    "UnavailableError",
    "UnconditionalWriteForbiddenError",
    "VoteAlreadyCastError",
    "fingerprint",
]

# Public names show the import path users write (httpx, psycopg): coordd_client.Client, not
# coordd_client._client.Client, in reprs, tracebacks and docs.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("coordd_client._"):
        _obj.__module__ = "coordd_client"
