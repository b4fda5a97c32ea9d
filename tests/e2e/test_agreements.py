"""Agreements end to end: proposal, seats, votes, one final decision, deadlines, waiting."""

from __future__ import annotations

import asyncio

import pytest

from coordd_client import (
    AgreementDecidedError,
    AgreementExistsError,
    AgreementState,
    AsyncClient,
    Client,
    InvalidArgumentError,
    NotAParticipantError,
    NotFoundError,
    Participant,
    VoteAlreadyCastError,
)
from tests.fix_daemon import DaemonThread
from tests.fix_db import DbClock

NS = "acme/release"


async def test_two_agents_agree_and_everyone_sees_commit(connect, pg_conn) -> None:
    a: AsyncClient = await connect("agent-a")
    b: AsyncClient = await connect("agent-b")
    handle = await a.agreements.propose(
        NS,
        "deploy-42",
        participants=["agent-a", "agent-b"],
        deadline=30,
        transition={"action": "deploy", "version": "1.4.2"},
    )
    assert handle.created and handle.agreement.state is AgreementState.PENDING
    assert handle.agreement.proposer_agent_id == "agent-a"
    assert handle.agreement.seats == 2 and handle.agreement.accepted == 1  # a accepted with it
    assert handle.agreement.transition == {"action": "deploy", "version": "1.4.2"}

    after = await b.agreements.vote(NS, "deploy-42", accept=True, reason="tests green")
    assert after.committed and after.cause == "all_accepted"
    assert after.decided_by_agent_id == "agent-b"
    assert after.decide_revision > after.create_revision > 0
    assert [(v.agent_id, v.accept, v.participant_index) for v in after.votes] == [
        ("agent-a", True, 0),
        ("agent-b", True, 1),
    ]
    assert (await handle.wait(timeout=5)).committed
    assert (await b.agreements.get(NS, "deploy-42")).decide_revision == after.decide_revision
    cur = await pg_conn.execute(
        "SELECT revision, seq, op, agent_id FROM coordd.changes"
        " WHERE namespace = %s AND kind = 'agreement' ORDER BY revision, seq",
        (NS,),
    )
    r0 = after.create_revision
    assert await cur.fetchall() == [
        (r0, 0, "propose", "agent-a"),
        (r0, 1, "vote", "agent-a"),
        (r0 + 1, 0, "vote", "agent-b"),
        (r0 + 1, 1, "commit", "agent-b"),
    ]


async def test_one_reject_aborts_and_later_votes_are_told(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    c = await connect("agent-c")
    await a.agreements.propose(NS, "x", participants=["agent-a", "agent-b", "agent-c"], deadline=30)
    rejected = await b.agreements.vote(NS, "x", accept=False, reason="schema not migrated")
    assert rejected.aborted and rejected.cause == "rejected"
    assert rejected.reason == "schema not migrated" and rejected.decided_by_agent_id == "agent-b"
    with pytest.raises(AgreementDecidedError) as late:
        await c.agreements.vote(NS, "x", accept=True)
    assert late.value.state == "aborted" and late.value.cause == "rejected"
    assert late.value.decision_reason == "schema not migrated"
    assert late.value.decide_revision == rejected.decide_revision
    final = await a.agreements.get(NS, "x")
    assert final.aborted and [v.agent_id for v in final.votes] == ["agent-a", "agent-b"]


async def test_votes_are_final_retries_are_harmless(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    await a.agreements.propose(NS, "y", participants=["agent-a", "agent-b", "agent-c"], deadline=30)
    first = await b.agreements.vote(NS, "y", accept=True)
    again = await b.agreements.vote(NS, "y", accept=True)  # a retry: same answer, no new vote
    assert again.accepted == first.accepted == 2 and len(again.votes) == 2
    with pytest.raises(VoteAlreadyCastError) as err:
        await b.agreements.vote(NS, "y", accept=False)
    assert err.value.accept is True
    assert (await a.agreements.get(NS, "y")).state is AgreementState.PENDING


async def test_non_participant_is_refused_and_roles_have_seats(connect) -> None:
    lead = await connect("lead", role="planner")
    r1 = await connect("rev-1", role="reviewer")
    r2 = await connect("rev-2", role="reviewer")
    r3 = await connect("rev-3", role="reviewer")
    outsider = await connect("outsider", role="worker")
    await lead.agreements.propose(
        NS,
        "merge-7",
        participants=[Participant(role="reviewer", count=2), Participant(agent_id="lead")],
        deadline=30,
    )
    with pytest.raises(NotAParticipantError) as err:
        await outsider.agreements.vote(NS, "merge-7", accept=False)
    assert err.value.agent_id == "outsider" and err.value.role == "worker"
    assert (await r1.agreements.vote(NS, "merge-7", accept=True)).accepted == 2
    last = await r2.agreements.vote(NS, "merge-7", accept=True)
    assert last.committed and {v.participant_index for v in last.votes} == {0, 1}
    with pytest.raises(AgreementDecidedError):
        await r3.agreements.vote(NS, "merge-7", accept=False)

    # Once the role's seats are taken, a third agent of the role is not a participant.
    await lead.agreements.propose(
        NS,
        "merge-8",
        participants=[Participant(role="reviewer", count=2), "lead"],
        deadline=30,
        accept=False,
    )
    await r1.agreements.vote(NS, "merge-8", accept=True)
    await r2.agreements.vote(NS, "merge-8", accept=True)
    with pytest.raises(NotAParticipantError):
        await r3.agreements.vote(NS, "merge-8", accept=False)
    assert (await lead.agreements.get(NS, "merge-8")).state is AgreementState.PENDING


async def test_proposer_withdraws_even_without_a_seat(connect) -> None:
    orchestrator = await connect("orchestrator")
    await orchestrator.agreements.propose(NS, "w", participants=["agent-a"], deadline=30)
    with pytest.raises(NotAParticipantError):  # it may not accept for others
        await orchestrator.agreements.vote(NS, "w", accept=True)
    withdrawn = await orchestrator.agreements.vote(NS, "w", accept=False, reason="plan changed")
    assert withdrawn.aborted and withdrawn.cause == "withdrawn"
    assert withdrawn.votes[0].participant_index == -1


async def test_deadline_with_missing_vote_aborts_and_late_vote_is_refused(
    connect, db_clock: DbClock
) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    await a.agreements.propose(NS, "d", participants=["agent-a", "agent-b"], deadline=10)
    db_clock.advance(11)  # b never voted in time
    with pytest.raises(AgreementDecidedError) as late:
        await b.agreements.vote(NS, "d", accept=True)
    assert late.value.state == "aborted" and late.value.cause == "deadline_passed"
    seen = await a.agreements.get(NS, "d")
    assert seen.aborted and seen.cause == "deadline_passed"
    assert seen.decide_time == seen.deadline_time and seen.decide_revision > 0
    assert seen.reason == "the deadline passed with 1 of 2 seats accepted"
    assert [v.agent_id for v in seen.votes] == ["agent-a"]  # the late vote changed nothing


async def test_reads_record_a_passed_deadline_before_the_sweeper(
    connect, daemon: DaemonThread, db_clock: DbClock
) -> None:
    a = await connect("agent-a")
    await a.agreements.propose(NS, "e1", participants=["agent-a", "agent-b"], deadline=5)
    await a.agreements.propose(NS, "e2", participants=["agent-a", "agent-b"], deadline=5)
    await a.agreements.propose(NS, "e3", participants=["agent-a", "agent-b"], deadline=60)
    db_clock.advance(6)
    got = await a.agreements.get(NS, "e1")  # no sweep ran: the read records the expiry
    assert got.aborted and got.decide_revision == a.session.revision(NS)
    listed = await a.agreements.list(NS)
    assert [(x.id, x.state) for x in listed.agreements] == [
        ("e1", AgreementState.ABORTED),
        ("e2", AgreementState.ABORTED),
        ("e3", AgreementState.PENDING),
    ]
    assert daemon.sweep()["agreements_expired"] == 0  # nothing left for the sweeper
    db_clock.advance(60)
    assert daemon.sweep()["agreements_expired"] == 1
    assert (await a.agreements.get(NS, "e3")).cause == "deadline_passed"


async def test_sweeper_aborts_and_wakes_waiters(
    connect, daemon: DaemonThread, db_clock: DbClock
) -> None:
    a = await connect("agent-a")
    await a.agreements.propose(NS, "s", participants=["agent-a", "agent-b"], deadline=30)
    waiting = asyncio.create_task(a.agreements.wait(NS, "s", timeout=30))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    db_clock.advance(31)
    assert daemon.sweep()["agreements_expired"] == 1
    decided = await asyncio.wait_for(waiting, 10)
    assert decided.aborted and decided.cause == "deadline_passed"


async def test_wait_returns_when_another_agent_decides(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    handle = await a.agreements.propose(NS, "w1", participants=["agent-a", "agent-b"], deadline=60)
    waiting = asyncio.create_task(handle.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    loop = asyncio.get_running_loop()
    voted_at = loop.time()
    await b.agreements.vote(NS, "w1", accept=True)
    decided = await asyncio.wait_for(waiting, 10)
    assert decided.committed
    assert loop.time() - voted_at < 2  # woken by the vote, not by a periodic re-check
    pending = await a.agreements.propose(NS, "w2", participants=["agent-a", "agent-b"], deadline=60)
    started = loop.time()
    still = await pending.wait(timeout=0.3)
    assert still.state is AgreementState.PENDING and 0.3 <= loop.time() - started < 5


async def test_wait_across_daemons(connect, start_daemon) -> None:
    other: DaemonThread = start_daemon()
    a = await connect("agent-a")
    b = await connect("agent-b", address=other.address)
    await a.agreements.propose(NS, "far", participants=["agent-a", "agent-b"], deadline=60)
    waiting = asyncio.create_task(a.agreements.wait(NS, "far"))
    await asyncio.sleep(0.3)  # the waiter has registered its interest in the namespace
    loop = asyncio.get_running_loop()
    voted_at = loop.time()
    assert (await b.agreements.vote(NS, "far", accept=True)).committed
    assert (await asyncio.wait_for(waiting, 10)).committed
    assert loop.time() - voted_at < 3  # woken by NOTIFY, well before the 5 s re-check


async def test_identical_proposal_is_a_retry_and_a_different_one_is_refused(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    kwargs = {"participants": ["agent-a", "agent-b"], "deadline": 30, "transition": {"x": 1}}
    first = await a.agreements.propose(NS, "p", **kwargs)
    again = await a.agreements.propose(NS, "p", **kwargs)
    assert first.created and not again.created
    assert again.agreement.create_revision == first.agreement.create_revision
    with pytest.raises(AgreementExistsError):
        await a.agreements.propose(NS, "p", participants=["agent-a"], deadline=30)
    with pytest.raises(AgreementExistsError):
        await b.agreements.propose(NS, "p", **kwargs)  # same request, another proposer


async def test_list_filters_and_pages(connect) -> None:
    a = await connect("agent-a")
    b = await connect("agent-b")
    for i in range(4):
        await a.agreements.propose(
            NS, f"l{i}", participants=["agent-a"], deadline=30, accept=i % 2 == 0
        )
    await b.agreements.propose(NS, "zz", participants=["agent-a"], deadline=30)
    committed = await a.agreements.list(NS, state="committed")
    assert [x.id for x in committed.agreements] == ["l0", "l2"]
    page1 = await a.agreements.list(NS, page_size=3)
    page2 = await a.agreements.list(NS, page_size=3, page_token=page1.next_page_token)
    assert [x.id for x in page1.agreements + page2.agreements] == ["l0", "l1", "l2", "l3", "zz"]
    assert page2.next_page_token == ""
    by_b = await a.agreements.list(NS, proposer_agent_id="agent-b")
    assert [x.id for x in by_b.agreements] == ["zz"]


async def test_bad_requests_name_the_field(connect) -> None:
    a = await connect("agent-a")
    cases = [
        ({"participants": [], "deadline": 30}, "participants"),
        (
            {"participants": [Participant(agent_id="x", role="y")], "deadline": 30},
            "participants[0]",
        ),
        ({"participants": ["x", "x"], "deadline": 30}, "participants[1].agent_id"),
        (
            {"participants": [Participant(role="r", count=300)], "deadline": 30},
            "participants[0].count",
        ),
        ({"participants": ["x"], "deadline": 0}, "deadline"),
        ({"participants": ["x"], "deadline": 86400 * 8}, "deadline"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidArgumentError) as err:
            await a.agreements.propose(NS, "bad", **kwargs)
        assert err.value.violations[0].field == field, kwargs
    with pytest.raises(NotFoundError):
        await a.agreements.vote(NS, "nope", accept=True)
    with pytest.raises(NotFoundError):
        await a.agreements.get(NS, "nope")


async def test_exception_in_with_block_withdraws(connect) -> None:
    a = await connect("agent-a")
    with pytest.raises(RuntimeError):
        async with a.agreements.propose(NS, "cm", participants=["agent-a", "agent-b"], deadline=30):
            raise RuntimeError("lost the plot")
    got = await a.agreements.get(NS, "cm")
    assert got.aborted and got.cause == "withdrawn" and "RuntimeError" in got.reason


def test_blocking_client_two_agents(daemon: DaemonThread) -> None:
    with (
        Client.connect(daemon.address, agent_id="planner") as planner,
        Client.connect(daemon.address, agent_id="executor") as executor,
    ):
        with planner.agreements.propose(
            NS, "go", participants=["planner", "executor"], deadline=30, transition={"go": True}
        ) as ag:
            assert executor.agreements.get(NS, ag.id).transition == {"go": True}
            executor.agreements.vote(NS, ag.id, accept=True)
            outcome = ag.wait(timeout=10)
        assert outcome.committed and executor.agreements.wait(NS, "go").committed
