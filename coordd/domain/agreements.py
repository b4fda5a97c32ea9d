"""Agreements: decisions several agents must all accept before any of them acts.

The rules that make the outcome final and the same for everyone (one transaction decides, a
late vote changes nothing, a passed deadline aborts) live in SQL, where the namespace lock
serializes them (storage/migrations/0004_agreements.sql). This module holds the values, the
store's contract, and the waiting: ``wait`` answers as soon as a decision is stored, woken

- in-process by this daemon's own votes and decisions (the store reports every namespace it
  changed to the notifier),
- through PostgreSQL LISTEN/NOTIFY for decisions made through other daemon replicas (a
  following waiter registers interest in the namespace, so writers there notify), and
- by its own timer at the agreement's deadline, when the read that follows records the expiry.

A waiter also re-reads every ``notifier.recheck_s`` (5 s by default): the bound on the one
narrow cross-replica race the notifier documents. No decision depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from coordd.domain.clock import Clock, SystemClock
from coordd.domain.consistency import answer_within
from coordd.domain.context import Notifier
from coordd.domain.models import Identity
from coordd.vocabulary import AgreementState as AgreementState
from coordd.vocabulary import DecisionCause as DecisionCause
from coordd.vocabulary import Participant as Participant
from coordd.vocabulary import WriteMode as WriteMode


def seats(participants: list[Participant]) -> int:
    """Accept votes a commit needs: one per agent participant, ``count`` per role."""
    return sum(1 if p.agent_id else p.count for p in participants)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionWrite:
    """A memory write applied with the COMMITTED decision (tier: 1 working, 2 episodic,
    3 semantic; expected_revision None = unconditional; ttl None = no expiry)."""

    namespace: str
    key: str
    tier: int
    value_json: str
    text: str = ""
    tags: tuple[str, ...] = ()
    task_id: str = ""
    mode: WriteMode = WriteMode.DEFAULT
    expected_revision: int | None = None
    ttl: timedelta | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ballot:
    agent_id: str
    role: str
    accept: bool
    reason: str
    vote_time: datetime
    seat: int
    """Index into the participants of the seat taken; -1 for a seatless proposer's withdrawal."""
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    namespace: str
    id: str
    proposer_agent_id: str
    proposer_role: str
    participants: list[Participant]
    transition_json: str
    writes: list[TransitionWrite]
    state: AgreementState
    cause: DecisionCause
    reason: str
    decided_by_agent_id: str
    votes: list[Ballot]
    seats: int
    accepted: int
    create_time: datetime
    deadline_time: datetime
    decide_time: datetime | None
    create_revision: int
    decide_revision: int
    expire_time: datetime | None
    write_revisions: dict[str, int]
    """COMMITTED with writes: namespace -> revision at which the writes landed."""

    @property
    def decided(self) -> bool:
        return self.state is not AgreementState.PENDING


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """What ProposeAgreement asks for (the proposer comes separately, from the caller)."""

    namespace: str
    id: str
    participants: list[Participant]
    transition_json: str
    writes: list[TransitionWrite]
    deadline: timedelta
    accept: bool
    retention: timedelta
    fingerprint: bytes
    """Digest of the whole request: an identical retry is recognized, a different one refused."""
    trace_id: str = ""
    """Trace of the proposing call, recorded in the provenance of the transition's writes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteCast:
    """Vote: accept (or reject, with *reason*) agreement *id* in the caller's seat."""

    namespace: str
    id: str
    accept: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementKey:
    namespace: str
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementAwait:
    """AwaitAgreement: the agreement once decided, waiting up to *wait*."""

    namespace: str
    id: str
    wait: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementListing:
    """ListAgreements: agreements after id *after*, in *state* and by *proposer* if given."""

    namespace: str
    state: AgreementState | None
    proposer: str
    after: str
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementView:
    """An agreement as one call left or saw it.

    Attributes:
        revision: The namespace revision the call produced or observed.
        db_time: The database clock when it was read (paces waits for the deadline).
        created: For a proposal: False if it was a retry of an identical one.
    """

    revision: int
    agreement: Agreement
    db_time: datetime
    created: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementPage:
    revision: int
    agreements: list[Agreement]
    next_after: str | None


class AgreementStore(Protocol):
    async def propose(self, who: Identity, proposal: Proposal) -> AgreementView: ...

    async def vote(self, who: Identity, vote: VoteCast) -> AgreementView: ...

    async def get(self, namespace: str, agreement_id: str) -> AgreementView: ...

    async def list(self, q: AgreementListing) -> AgreementPage: ...

    async def sweep(self, limit: int = 1000) -> int: ...

    async def purge(self, limit: int = 1000) -> int: ...


class AgreementService:
    """Agreement rules: awaiting a decision until the caller's wait or deadline runs out.

    Proposals, votes, reads, lists and the housekeeping sweeps are decided atomically by the
    database (who may vote, quorum, deadline, the transition writes): they go straight to
    :attr:`store`.

    Attributes:
        store: The agreement store, for calls without a rule here.
    """

    def __init__(
        self, store: AgreementStore, notifier: Notifier, clock: Clock | None = None
    ) -> None:
        self.store = store
        self._notifier = notifier
        self._clock = clock or SystemClock()

    async def wait(
        self,
        namespace: str,
        agreement_id: str,
        wait: timedelta,
        time_remaining: float | None = None,
    ) -> AgreementView:
        """The agreement once decided, or as it stands when *wait* runs out (or just before
        the call's deadline, *time_remaining* seconds away)."""
        wait = answer_within(wait, time_remaining)
        view = await self.store.get(namespace, agreement_id)
        if view.agreement.decided or wait <= timedelta(0):
            return view
        give_up = self._clock.monotonic() + wait.total_seconds()
        async with self._notifier.follow(namespace, False) as changed:
            while True:
                changed.clear()  # before reading: a decision after the read sets it again
                view = await self.store.get(namespace, agreement_id)
                remaining = give_up - self._clock.monotonic()
                if view.agreement.decided or remaining <= 0:
                    return view
                # Wake at the deadline too: the read then records the expiry.
                to_deadline = (view.agreement.deadline_time - view.db_time).total_seconds()
                pause = min(remaining, self._notifier.recheck_s, max(to_deadline, 0) + 0.001)
                await self._notifier.wait(changed, pause)
