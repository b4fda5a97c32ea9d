"""Admin actions: override an agent's claim, empty a namespace; each one audited."""

from __future__ import annotations

from dataclasses import dataclass

from coordd import audit
from coordd.domain.models import Claim, Identity
from coordd.storage.admin import AdminStore


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceReleased:
    """Outcome of a force-release: the revision, and the claim that was released (if any)."""

    revision: int
    claim: Claim | None


class AdminService:
    def __init__(self, store: AdminStore) -> None:
        self._store = store

    async def force_release(
        self, who: Identity, namespace: str, resource: str, reason: str
    ) -> ForceReleased:
        """Release the live claim on *resource* whoever holds it."""
        revision, claim = await self._store.force_release(namespace, resource, who.agent_id, reason)
        if claim is not None:
            audit.record(
                audit.ADMIN,
                who,
                namespace,
                action="force_release",
                resource=resource,
                holder_agent_id=claim.holder_agent_id,
                fencing_token=claim.fencing_token,
                reason=reason,
                revision=revision,
            )
        return ForceReleased(revision=revision, claim=claim)

    async def purge(self, who: Identity, namespace: str, reason: str) -> tuple[int, dict[str, int]]:
        """Delete every claim, key, entry and agreement of *namespace*."""
        revision, removed = await self._store.purge(namespace, who.agent_id, reason)
        audit.record(
            audit.ADMIN,
            who,
            namespace,
            action="purge",
            reason=reason,
            revision=revision,
            removed=sum(removed.values()),
        )
        return revision, removed
