"""The public surface of coordd_client, pinned (httpx's test_exported_members, Temporal's
test_client_exports): adding or removing a name is a decision, made here on purpose."""

from __future__ import annotations

import inspect

import coordd_client

EXPORTS = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert coordd_client.__all__ == EXPORTS
    assert sorted(EXPORTS) == EXPORTS


def test_every_export_exists_and_shows_its_canonical_module() -> None:
    for name in EXPORTS:
        obj = getattr(coordd_client, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            # Errors and enum tables are shared with the daemon (coordd.errors, coordd.vocabulary).
            assert obj.__module__ in ("coordd_client", "coordd.errors", "coordd.vocabulary"), name
