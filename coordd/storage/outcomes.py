"""The SQL functions' refusals as coordd errors: one table for every store.

coordd's write functions answer every call with a row whose ``status`` says what happened
(``ok``, or why not: ``fence_stale``, ``revision_mismatch``...). A store passes that row and
what it asked (:class:`Call`) to :func:`check`, which returns the row when the call went
through and raises the error the status names otherwise. A new refusal is a SQL status and a
line in :data:`REFUSALS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordd.domain.models import Fence
from coordd.errors import (
    AgreementExistsError,
    ClaimNotHeldError,
    CoorddError,
    FencingTokenStaleError,
    IdempotencyAttemptSupersededError,
    IdempotencyKeyReusedError,
    NotFoundError,
    RevisionMismatchError,
    UnconditionalWriteForbiddenError,
    VoteAlreadyCastError,
)


@dataclass(frozen=True, slots=True)
class Call:
    """What a store asked of a SQL function, for the error that answers it.

    Attributes:
        namespace: The namespace written or read.
        name: The key, resource or agreement id.
        fence: The fence the write carried.
        expected: The compare-and-set revision the write expected.
        accept: The vote cast (agreements).
        not_found: The message of a ``not_found`` status, formatted with the fields above
            (``{namespace}``, ``{name}``).
    """

    namespace: str
    name: str = ""
    fence: Fence | None = None
    expected: int | None = None
    accept: bool = False
    not_found: str = "{name!r} not found in {namespace}"


def fence_stale(fence: Fence | None, current_token: int) -> FencingTokenStaleError:
    """The error for a write refused by coordd.check_fence (current -1: unclaimed)."""
    assert fence is not None, "only a fenced write is refused as fence_stale"
    return FencingTokenStaleError(
        fence.namespace, fence.resource, fence.token, max(int(current_token), 0)
    )


REFUSALS: dict[str, Callable[[Call, Any], CoorddError]] = {
    "not_held": lambda c, row: ClaimNotHeldError(
        c.namespace,
        c.name,
        holder_agent_id=row.holder_agent_id or "",
        fencing_token=row.fencing_token or 0,
        expire_time=row.expire_time,
    ),
    "fence_stale": lambda c, row: fence_stale(c.fence, row.current_token),
    "revision_mismatch": lambda c, row: RevisionMismatchError(
        c.namespace, c.name, c.expected or 0, row.current_revision
    ),
    "unconditional_forbidden": lambda c, row: UnconditionalWriteForbiddenError(c.namespace),
    "reused": lambda c, row: IdempotencyKeyReusedError(c.namespace, c.name),
    "superseded": lambda c, row: IdempotencyAttemptSupersededError(
        c.namespace, c.name, row.attempt
    ),
    "not_found": lambda c, row: NotFoundError(
        c.not_found.format(namespace=c.namespace, name=c.name)
    ),
    "exists": lambda c, row: AgreementExistsError(c.namespace, c.name),
    "vote_conflict": lambda c, row: VoteAlreadyCastError(c.namespace, c.name, not c.accept),
}
"""SQL status -> the error it means, built from the call and the function's row."""


def check(row: Any, call: Call) -> Any:
    """*row* if its status is not a refusal; else raise the error the status names."""
    refusal = REFUSALS.get(row.status)
    if refusal is not None:
        raise refusal(call, row)
    return row
