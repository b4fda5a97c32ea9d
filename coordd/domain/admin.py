"""Admin actions: override an agent's claim, empty a namespace; each one audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coordd import audit
from coordd.domain.models import Claim, Identity


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceRelease:
    """ForceReleaseClaim: release the live claim on *resource*, whoever holds it."""

    namespace: str
    resource: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Purge:
    """PurgeNamespace: delete every claim, key, entry and agreement of *namespace*."""

    namespace: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceReleased:
    """Outcome of a force-release: the revision, and the claim that was released (if any)."""

    revision: int
    claim: Claim | None


class AdminStore(Protocol):
    async def force_release(
        self, namespace: str, resource: str, operator: str, reason: str
    ) -> tuple[int, Claim | None]: ...

    async def purge(
        self, namespace: str, operator: str, reason: str
    ) -> tuple[int, dict[str, int]]: ...


class AdminService:
    """Operator actions, each audited with who did it, why, and what it removed.

    Attributes:
        store: The admin store, for calls without a rule here.
    """

    def __init__(self, store: AdminStore) -> None:
        self.store = store

    async def force_release(self, who: Identity, r: ForceRelease) -> ForceReleased:
        """Release the live claim on ``r.resource`` whoever holds it; audited if one was."""
        revision, claim = await self.store.force_release(
            r.namespace, r.resource, who.agent_id, r.reason
        )
        if claim is not None:
            holder, token = claim.holder_agent_id, claim.fencing_token
            released: dict[str, str | int] = {
                "resource": r.resource,
                "holder_agent_id": holder,
                "fencing_token": token,
            }
            _audit(who, r.namespace, "force_release", r.reason, revision, **released)
        return ForceReleased(revision=revision, claim=claim)

    async def purge(self, who: Identity, p: Purge) -> tuple[int, dict[str, int]]:
        """Delete every claim, key, entry and agreement of ``p.namespace``; audited."""
        revision, removed = await self.store.purge(p.namespace, who.agent_id, p.reason)
        _audit(who, p.namespace, "purge", p.reason, revision, removed=sum(removed.values()))
        return revision, removed


def _audit(
    who: Identity, namespace: str, action: str, reason: str, revision: int, **details: str | int
) -> None:
    audit.record(
        audit.ADMIN, who, namespace, action=action, reason=reason, revision=revision, **details
    )
