"""The effect gate: check fences and read revisions right before a side effect outside coordd."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from coordd.v1 import common_pb2
from coordd.v1 import gate_service_pb2 as pb
from coordd.v1 import gate_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._core import Core
from ._models import ChangeEvent, Claim, Fence


@dataclass(frozen=True, slots=True, kw_only=True)
class LostClaim:
    """A fence that is no longer current.

    Attributes:
        fence: The fence as presented.
        holder: The live claim on the resource now (another agent's, or a newer grant),
            None when nobody holds it (released or expired).
    """

    fence: Fence
    holder: Claim | None

    def describe(self) -> str:
        f = self.fence
        if self.holder is None:
            return f"claim {f.namespace}/{f.resource} (token {f.token}) is no longer held by anyone"
        h = self.holder
        return (
            f"claim {f.namespace}/{f.resource} (token {f.token}) was lost: held by "
            f"{h.holder_agent_id} (token {h.fencing_token}) until {_iso(h.expire_time)}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MovedNamespace:
    """A namespace that changed after the caller read it.

    Attributes:
        namespace: The namespace.
        read_revision: The revision the caller read.
        current_revision: Its revision now.
        first_change: The earliest change after *read_revision* that counts (who changed
            what), None when the change log no longer holds it.
    """

    namespace: str
    read_revision: int
    current_revision: int
    first_change: ChangeEvent | None

    def describe(self) -> str:
        text = (
            f"namespace {self.namespace} moved from revision {self.read_revision} "
            f"to {self.current_revision}"
        )
        c = self.first_change
        if c is not None:
            by = f" by {c.agent_id}" if c.agent_id else ""
            text += f" (first: {c.kind} {c.key!r} {c.op}{by} at revision {c.revision})"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class GateResult:
    """The gate's answer. True (``bool(result)``) when the side effect may go ahead.

    Attributes:
        passed: Every fence is current and no namespace read has moved.
        lost_claims: Fences no longer current, in request order.
        moved_namespaces: Namespaces changed since read, by name.
    """

    passed: bool
    lost_claims: list[LostClaim] = field(default_factory=list)
    moved_namespaces: list[MovedNamespace] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def advice(self) -> str:
        """What to do next, in one line: go ahead, re-claim, or re-read."""
        if self.passed:
            return "all fences and reads are current: perform the side effect now"
        if self.lost_claims:
            return (
                "stop: do not perform the side effect; the work now belongs to the holder "
                "(or, if nobody holds it, re-acquire the claim and re-read before trying again)"
            )
        return (
            "re-read the namespaces that moved, decide again on the new state, then call the "
            "gate again with the new revisions"
        )

    def explain(self) -> str:
        """Every cause of a refusal and the advice, as text for logs or an LLM."""
        causes = [c.describe() for c in self.lost_claims]
        causes += [m.describe() for m in self.moved_namespaces]
        head = "gate passed" if self.passed else "gate refused: " + "; ".join(causes)
        return f"{head}. Next: {self.advice}."


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _result(resp: pb.CheckGateResponse) -> GateResult:
    return GateResult(
        passed=resp.passed,
        lost_claims=[
            LostClaim(
                fence=Fence(
                    namespace=lc.fence.namespace, resource=lc.fence.resource, token=lc.fence.token
                ),
                holder=cv.claim(lc.holder) if lc.HasField("holder") else None,
            )
            for lc in resp.lost_claims
        ],
        moved_namespaces=[
            MovedNamespace(
                namespace=m.namespace,
                read_revision=m.read_revision,
                current_revision=m.current_revision,
                first_change=(
                    cv.change_event(m.first_change) if m.HasField("first_change") else None
                ),
            )
            for m in resp.moved_namespaces
        ],
    )


async def check_gate(
    core: Core,
    fences: Iterable[Fence],
    read: Mapping[str, int] | None,
    kinds: Iterable[str],
) -> GateResult:
    """Call GateService.CheckGate (see ``AsyncClient.gate``)."""
    stub = pb_grpc.GateServiceStub(core.channel)
    request = pb.CheckGateRequest(
        fences=[
            common_pb2.Fence(namespace=f.namespace, resource=f.resource, token=f.token)
            for f in fences
        ],
        read=common_pb2.VersionVector(revisions=dict(read or {})),
        kinds=list(kinds),
    )
    return _result(await core.call(stub.CheckGate, request))
