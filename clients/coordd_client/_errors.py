"""Client-side exceptions that never travel on the wire, next to the shared hierarchy."""

from __future__ import annotations

import grpc

from coordd.errors import CoorddError

from ._models import Claim


class ClaimHeldError(CoorddError, code=grpc.StatusCode.FAILED_PRECONDITION, reason="CLAIM_HELD"):
    """``claims.hold()`` could not acquire: someone else holds the claim.

    Attributes:
        holder: The current holder's claim, if known.
    """

    def __init__(self, namespace: str, resource: str, holder: Claim | None) -> None:
        self.namespace = namespace
        self.resource = resource
        self.holder = holder
        who = (
            f" by {holder.holder_agent_id!r} until {holder.expire_time:%H:%M:%S}" if holder else ""
        )
        super().__init__(f"claim {namespace}/{resource} is held{who}")


class ClaimLostError(CoorddError, code=grpc.StatusCode.FAILED_PRECONDITION, reason="CLAIM_LOST"):
    """A held claim was lost (lease lapsed or taken over); stop acting as its holder."""

    def __init__(self, namespace: str, resource: str, why: str) -> None:
        self.namespace = namespace
        self.resource = resource
        self.why = why
        super().__init__(f"claim {namespace}/{resource} was lost: {why}")


class IdempotentTaskFailedError(
    CoorddError, code=grpc.StatusCode.FAILED_PRECONDITION, reason="IDEMPOTENT_TASK_FAILED"
):
    """The work under this key failed terminally earlier; the stored error is replayed."""

    def __init__(self, namespace: str, key: str, error: str) -> None:
        self.namespace = namespace
        self.key = key
        self.error = error
        super().__init__(f"task {key!r} in {namespace} failed terminally: {error}")
