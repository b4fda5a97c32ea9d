"""The domain calls that add no rule of their own: each hands storage exactly what it was
given, with the caller, and returns what storage answered (so servicers can all read
authorize -> request -> domain, and a forward that drops or swaps an argument fails here).
The calls with rules have their own tests (test_<service>_service.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from coordd.domain.agreements import (
    AgreementKey,
    AgreementListing,
    AgreementService,
    Proposal,
    VoteCast,
)
from coordd.domain.claims import ClaimKey, ClaimListing, ClaimService
from coordd.domain.idempotency import Begin, IdempotencyService
from coordd.domain.memory import MemorySearch, MemoryService, TaskStart
from coordd.domain.models import Identity, NamespacePolicy

WHO = Identity(agent_id="a1", role="worker")
ANSWER = object()


class Recorder:
    """A store whose every method records its arguments and answers ANSWER."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
        async def method(*args: Any) -> object:
            self.calls.append((name, args))
            return ANSWER

        return method


def claims(store: Any) -> ClaimService:
    return ClaimService(store)


def idempotency(store: Any) -> IdempotencyService:
    return IdempotencyService(store)


def memory(store: Any) -> MemoryService:
    search: Any = MemorySearch  # not called by these
    return MemoryService(store, search)


def agreements(store: Any) -> AgreementService:
    notifier: Any = None  # not called by these
    return AgreementService(store, notifier)


CLAIM_KEY = ClaimKey(namespace="ns", resource="r")
CLAIM_PAGE = ClaimListing(namespace="ns", holder="", after="", limit=10)
BEGIN = Begin(
    namespace="ns",
    key="k",
    fingerprint=b"f",
    lease=timedelta(seconds=30),
    retention=timedelta(hours=1),
)
TASK = TaskStart(namespace="ns", task_id="t", lease=timedelta(minutes=5))
POLICY = NamespacePolicy(forbid_unconditional=True)
PROPOSAL = Proposal(
    namespace="ns",
    id="ag",
    participants=[],
    transition_json="{}",
    writes=[],
    deadline=timedelta(seconds=10),
    accept=True,
    retention=timedelta(hours=1),
    fingerprint=b"f",
)
VOTE = VoteCast(namespace="ns", id="ag", accept=False, reason="no")
AGREEMENT_PAGE = AgreementListing(namespace="ns", state=None, proposer="", after="", limit=10)

FORWARDS: list[tuple[Callable[[Any], Any], str, tuple[Any, ...], tuple[Any, ...]]] = [
    # (service, method, arguments given, what storage receives)
    (memory, "put", (WHO, "trace", "write"), (WHO, "trace", "write")),
    (memory, "put_many", (WHO, "trace", ["w1", "w2"]), (WHO, "trace", ["w1", "w2"])),
    (memory, "start_task", (WHO, TASK), (WHO, "ns", "t", timedelta(minutes=5))),
    (memory, "set_policy", (WHO, "ns", POLICY), (WHO, "ns", POLICY)),
    (memory, "get_policy", ("ns",), ("ns",)),
    (agreements, "propose", (WHO, PROPOSAL), (WHO, PROPOSAL)),
    (agreements, "vote", (WHO, VOTE), (WHO, VOTE)),
    (agreements, "get", (AgreementKey(namespace="ns", id="ag"),), ("ns", "ag")),
    (agreements, "list", (AGREEMENT_PAGE,), (AGREEMENT_PAGE,)),
]


@pytest.mark.parametrize(
    ("service", "name", "given", "stored"),
    FORWARDS,
    ids=[f"{s.__name__}.{n}" for s, n, _, _ in FORWARDS],
)
async def test_a_forward_hands_storage_what_it_was_given(
    service: Callable[[Any], Any], name: str, given: tuple[Any, ...], stored: tuple[Any, ...]
) -> None:
    store = Recorder()
    answer = await getattr(service(store), name)(*given)
    assert answer is ANSWER
    assert store.calls == [(name, stored)]
