"""coordd_client: the Python client for coordd (blocking and asyncio).

Example::

    from coordd_client import Client

    with Client.connect("127.0.0.1:7420", agent_id="worker-1", role="worker") as client:
        with client.claims.hold("acme/docs", "doc-42", ttl=30) as held:
            ...  # work; pass held.fence to writes made under the claim
"""

import logging

from coordd.errors import (
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
    NotFoundError,
    PermissionDeniedError,
    RevisionCompactedError,
    RevisionMismatchError,
    StorageUnavailableError,
    UnauthenticatedError,
    UnavailableError,
    UnconditionalWriteForbiddenError,
)

from ._claims import AsyncClaims, HeldClaim
from ._client import AsyncClient, Claims, Client, Context, Idempotency
from ._context import AsyncContext
from ._errors import ClaimHeldError, ClaimLostError, IdempotentTaskFailedError
from ._idempotency import AsyncIdempotency, fingerprint
from ._models import (
    Acknowledgement,
    AcquireResult,
    BeginResult,
    ChangeEvent,
    Claim,
    ClaimList,
    ContextEntry,
    Fence,
    IdempotencyRecord,
    IdempotencyState,
    TLSConfig,
)
from ._session import Session
from ._watch import AsyncWatch

# A library stays quiet unless the application configures logging (psycopg's rule).
if (_logger := logging.getLogger("coordd_client")).level == logging.NOTSET:
    _logger.setLevel(logging.WARNING)

__all__ = [
    "Acknowledgement",
    "AcquireResult",
    "AsyncClaims",
    "AsyncClient",
    "AsyncContext",
    "AsyncIdempotency",
    "AsyncWatch",
    "BeginResult",
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
    "Fence",
    "FencingTokenStaleError",
    "FieldViolation",
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
    "NotFoundError",
    "PermissionDeniedError",
    "RevisionCompactedError",
    "RevisionMismatchError",
    "Session",
    "StorageUnavailableError",
    "TLSConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnconditionalWriteForbiddenError",
    "fingerprint",
]
