"""Agreements: propose, vote, wait for a decision every participant sees the same way."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any

from coordd.errors import AgreementDecidedError, CoorddError
from coordd.v1 import agreement_service_pb2 as pb
from coordd.v1 import agreement_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._blocking import Face, blocking, blocking_face
from ._core import Service
from ._models import Agreement, AgreementList, AgreementState, Participant, TransitionWrite

# One AwaitAgreement call waits at most this long; wait() chains calls up to its own timeout.
_AWAIT_CHUNK_S = 60.0


class AsyncAgreements(Service):
    """``client.agreements``: decisions that several agents must all accept before any acts.

    The outcome is decided once, in one transaction, and is the same for every participant:
    COMMITTED only if every participant accepted before the deadline, ABORTED as soon as one
    rejects, the proposer withdraws or the deadline passes.
    """

    stub_class = pb_grpc.AgreementServiceStub
    _stub: pb_grpc.AgreementServiceAsyncStub

    def _seen(self, msg: pb.Agreement) -> Agreement:
        agreement = cv.agreement(msg)
        if agreement.write_revisions:  # read-your-writes for the transition's memory writes
            self._core.session.merge(agreement.write_revisions)
        return agreement

    def propose(
        self,
        namespace: str,
        agreement_id: str,
        *,
        participants: Iterable[Participant | str],
        deadline: timedelta | float,
        transition: Any = None,
        writes: Iterable[TransitionWrite] = (),
        accept: bool = True,
        retention: timedelta | float | None = None,
    ) -> Proposing:
        """Propose an agreement; ``await`` it for a handle, or use it as ``async with``.

        Args:
            participants: Who must accept: agent ids, ``Participant(agent_id=...)``, or
                ``Participant(role=..., count=n)`` for any n distinct agents of a role.
            deadline: How long votes are accepted (database clock).
            transition: What is being agreed (any JSON value), for the agents to act on.
            writes: Memory writes coordd applies atomically with the COMMITTED decision.
            accept: Record this agent's accept vote with the proposal when it is a
                participant (a one-seat agreement then commits at once).
            retention: How long the decided agreement is kept (default 24 h).

        Inside ``async with``, an exception withdraws the proposal if it is still pending.
        Retrying an identical proposal returns the existing agreement (``created`` False).
        """
        request = pb.ProposeAgreementRequest(
            namespace=namespace,
            id=agreement_id,
            participants=[cv.participant(p) for p in participants],
            transition_json=json.dumps(transition, separators=(",", ":")),
            writes=[cv.transition_write(w) for w in writes],
            deadline=cv.duration(deadline),
            accept=accept,
            retention=cv.duration(retention),
        )
        return Proposing(self, request)

    async def _propose(self, request: pb.ProposeAgreementRequest) -> AgreementHandle:
        resp = await self._core.call(self._stub.ProposeAgreement, request)
        return AgreementHandle(self, self._seen(resp.agreement), created=resp.created)

    async def vote(
        self, namespace: str, agreement_id: str, accept: bool, reason: str = ""
    ) -> Agreement:
        """Vote as this agent; returns the agreement after the vote (decided if it decided).

        Raises NotAParticipantError, AgreementDecidedError (a late vote: nothing changed) or
        VoteAlreadyCastError (you voted the other way before; votes are final).
        """
        resp = await self._core.call(
            self._stub.Vote,
            pb.VoteRequest(namespace=namespace, id=agreement_id, accept=accept, reason=reason),
        )
        return self._seen(resp.agreement)

    async def get(self, namespace: str, agreement_id: str) -> Agreement:
        """The agreement and its votes. Raises NotFoundError."""
        resp = await self._core.call(
            self._stub.GetAgreement, pb.GetAgreementRequest(namespace=namespace, id=agreement_id)
        )
        return self._seen(resp.agreement)

    async def wait(
        self, namespace: str, agreement_id: str, timeout: timedelta | float | None = None
    ) -> Agreement:
        """Wait for the decision; returns the agreement (still PENDING only if *timeout* ran
        out first). Without a timeout it returns by the agreement's deadline at the latest."""
        give_up = None if timeout is None else time.monotonic() + cv.seconds(timeout)
        while True:
            left = _AWAIT_CHUNK_S if give_up is None else give_up - time.monotonic()
            chunk = max(min(left, _AWAIT_CHUNK_S), 0.0)
            resp = await self._core.call(
                self._stub.AwaitAgreement,
                pb.AwaitAgreementRequest(
                    namespace=namespace, id=agreement_id, wait=cv.duration(chunk)
                ),
                self._core.timeout + timedelta(seconds=chunk),
            )
            agreement = self._seen(resp.agreement)
            if resp.decided or (give_up is not None and time.monotonic() >= give_up):
                return agreement

    async def list(
        self,
        namespace: str,
        *,
        state: AgreementState | str | None = None,
        proposer_agent_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> AgreementList:
        """One page of agreements in *namespace*, ordered by id."""
        resp = await self._core.call(
            self._stub.ListAgreements,
            pb.ListAgreementsRequest(
                namespace=namespace,
                state=AgreementState.parse(state, "state").number if state else 0,  # type: ignore[arg-type]
                proposer_agent_id=proposer_agent_id,
                page_size=page_size,
                page_token=page_token,
            ),
        )
        return AgreementList(
            agreements=[self._seen(a) for a in resp.agreements],
            next_page_token=resp.next_page_token,
            revision=resp.header.revision,
        )


class AgreementHandle:
    """A proposed agreement: ``await handle.wait()`` for the outcome every participant sees.

    Attributes:
        agreement: The agreement as last seen by this handle.
        created: False if the proposal was a retry of an identical one.
    """

    def __init__(self, agreements: AsyncAgreements, agreement: Agreement, created: bool) -> None:
        self._agreements = agreements
        self.agreement = agreement
        self.created = created

    @property
    def namespace(self) -> str:
        return self.agreement.namespace

    @property
    def id(self) -> str:
        return self.agreement.id

    async def wait(self, timeout: timedelta | float | None = None) -> Agreement:
        """Wait for the decision (see ``AsyncAgreements.wait``)."""
        if not self.agreement.decided:
            self.agreement = await self._agreements.wait(self.namespace, self.id, timeout)
        return self.agreement

    async def withdraw(self, reason: str = "") -> Agreement:
        """Abort the proposal while it is pending (a reject vote by the proposer).

        Raises AgreementDecidedError if it was decided first.
        """
        self.agreement = await self._agreements.vote(self.namespace, self.id, False, reason)
        return self.agreement

    async def _withdraw_after(self, exc: BaseException) -> None:
        if self.agreement.decided:
            return
        try:
            await self.withdraw(f"proposer failed: {type(exc).__name__}")
        except AgreementDecidedError:
            pass
        except CoorddError:  # the original exception matters more than a failed withdrawal
            pass


class Proposing:
    """What ``propose()`` returns: awaitable (a handle) and an async context manager."""

    def __init__(self, agreements: AsyncAgreements, request: pb.ProposeAgreementRequest) -> None:
        self._agreements = agreements
        self._request = request
        self._handle: AgreementHandle | None = None

    def __await__(self) -> Generator[Any, None, AgreementHandle]:
        return self._agreements._propose(self._request).__await__()

    async def __aenter__(self) -> AgreementHandle:
        self._handle = await self._agreements._propose(self._request)
        return self._handle

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._handle is not None:
            await self._handle._withdraw_after(exc)


class ProposedAgreement(Face[AgreementHandle]):
    """Blocking twin of ``AgreementHandle``; a context manager that withdraws the proposal
    if the ``with`` block raises while it is still pending."""

    wait = blocking(AgreementHandle.wait)
    withdraw = blocking(AgreementHandle.withdraw)

    @property
    def agreement(self) -> Agreement:
        return self._a.agreement

    @property
    def created(self) -> bool:
        return self._a.created

    @property
    def namespace(self) -> str:
        return self._a.namespace

    @property
    def id(self) -> str:
        return self._a.id

    def __enter__(self) -> ProposedAgreement:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._loop.run(self._a._withdraw_after(exc))


class Agreements(Face[AsyncAgreements]):
    """Blocking ``client.agreements``; see ``AsyncAgreements`` for the semantics.

    ``propose`` proposes at once; its result is a handle and a context manager
    (``with client.agreements.propose(...) as ag``).
    """

    propose = blocking_face(AsyncAgreements.propose, ProposedAgreement)
    vote = blocking(AsyncAgreements.vote)
    get = blocking(AsyncAgreements.get)
    wait = blocking(AsyncAgreements.wait)
    list = blocking(AsyncAgreements.list)
