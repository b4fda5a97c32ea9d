"""The effect gate: are an agent's fences and reads still current before it acts outside?

coordd enforces fences on its own writes; a payment API or a deploy cannot. The gate is the
check an agent makes right before such a side effect: every fence still names the live grant,
and no namespace it based its decision on has changed since the revision it read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from coordd.domain.models import Change, Claim, Fence

# The kinds of change-log rows, as the storage functions write them.
CHANGE_KINDS = ("claim", "memory", "context", "task", "idempotency", "agreement", "policy")
MAX_FENCES = 100
MAX_READ_NAMESPACES = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class LostClaim:
    """A fence that no longer names the live grant; *holder* is the claim now (None: free)."""

    fence: Fence
    holder: Claim | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MovedNamespace:
    """A namespace changed after *read_revision*; *first_change* is None once compacted."""

    namespace: str
    read_revision: int
    current_revision: int
    first_change: Change | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GateVerdict:
    lost_claims: list[LostClaim]
    moved_namespaces: list[MovedNamespace]

    @property
    def passed(self) -> bool:
        return not self.lost_claims and not self.moved_namespaces


@dataclass(frozen=True, slots=True, kw_only=True)
class GateCheck:
    """CheckGate: are *fences* live and the namespaces in *read* (namespace -> the revision
    read) unmoved, counting only changes of *kinds* (empty: every kind)?"""

    fences: list[Fence]
    read: dict[str, int]
    kinds: list[str]


class GateStore(Protocol):
    async def check(self, q: GateCheck) -> GateVerdict: ...


class GateService:
    """Answers whether fences and read revisions are still current (one storage round trip).

    Attributes:
        store: The gate store, for calls without a rule here.
    """

    def __init__(self, store: GateStore) -> None:
        self.store = store

    async def check(self, q: GateCheck) -> GateVerdict:
        """Nothing to check passes without a round trip; namespaces go in name order."""
        if not q.fences and not q.read:
            return GateVerdict(lost_claims=[], moved_namespaces=[])
        return await self.store.check(replace(q, read=dict(sorted(q.read.items()))))
