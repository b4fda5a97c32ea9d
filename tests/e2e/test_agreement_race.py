"""History check: 2, 5 and 20 participants vote concurrently, through two daemons, over many
rounds with random rejects, missing votes and deadlines passing mid-vote. Every participant must
see the same outcome, and nobody may ever see COMMITTED while anyone sees ABORTED."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from coordd_client import (
    AgreementDecidedError,
    AgreementState,
    AsyncClient,
    NotAParticipantError,
    Participant,
)
from tests.fix_daemon import DaemonThread
from tests.fix_db import DbClock

NS = "acme/quorum"
PENDING = AgreementState.PENDING
COMMITTED = AgreementState.COMMITTED
ABORTED = AgreementState.ABORTED


@dataclass
class Voter:
    client: AsyncClient
    seen: list[AgreementState] = field(default_factory=list)
    """Every state this voter observed, in order (vote answers, refusals, waits)."""
    vote: bool | None = None
    """The vote it cast and the daemon accepted (None: did not vote or was refused)."""


async def _participant(voter: Voter, agreement_id: str, plan: str, rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0, 0.02))
    if plan != "absent":
        accept = plan == "accept"
        try:
            after = await voter.client.agreements.vote(NS, agreement_id, accept)
            voter.vote = accept
            voter.seen.append(after.state)
        except AgreementDecidedError as late:
            voter.seen.append(AgreementState(late.state))
        except NotAParticipantError:
            pass  # a spare agent of the role: every seat of its role was taken first
    final = await voter.client.agreements.wait(NS, agreement_id, timeout=30)
    voter.seen.append(final.state)


async def _pass_deadline(db_clock: DbClock, daemon: DaemonThread, delay: float) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(db_clock.advance, 31)
    await asyncio.to_thread(daemon.sweep)  # wakes the waiters of both daemons


@pytest.mark.parametrize(("n", "rounds"), [(2, 14), (5, 10), (20, 5)])
async def test_all_participants_see_one_outcome(
    n: int, rounds: int, connect, daemon: DaemonThread, start_daemon, db_clock: DbClock, pg_conn
) -> None:
    other: DaemonThread = start_daemon()
    rng = random.Random(n)
    # Named agents, plus (from 5 participants on) a role with two seats and three agents
    # racing for them.
    named = n if n < 5 else n - 2
    clients = [
        await connect(f"agent-{i}", address=(daemon if i % 2 else other).address)
        for i in range(named)
    ]
    reviewers = [
        await connect(f"reviewer-{i}", role="reviewer", address=(daemon, other)[i % 2].address)
        for i in range(3 if n >= 5 else 0)
    ]
    participants: list[Participant | str] = [c.agent_id for c in clients]
    if reviewers:
        participants.append(Participant(role="reviewer", count=2))
    outcomes = {COMMITTED: 0, ABORTED: 0}
    scenarios = (["all_accept", "one_rejects", "one_absent", "deadline_race"] * rounds)[:rounds]
    rng.shuffle(scenarios)  # every scenario runs, in a random order

    for round_no, scenario in enumerate(scenarios):
        agreement_id = f"round-{round_no}"
        handle = await clients[0].agreements.propose(
            NS,
            agreement_id,
            participants=participants,
            deadline=30,
            accept=False,
            transition={"round": round_no},
        )
        voters = [Voter(c) for c in clients + reviewers]
        plans = ["accept"] * len(voters)
        if scenario == "one_rejects":
            plans[rng.randrange(len(voters))] = "reject"
        elif scenario == "one_absent":
            plans[rng.randrange(named)] = "absent"  # a named seat stays empty
        tasks = [
            _participant(v, agreement_id, plan, rng) for v, plan in zip(voters, plans, strict=True)
        ]
        clock = None
        if scenario in ("one_absent", "deadline_race"):
            delay = 0.3 if scenario == "one_absent" else rng.uniform(0, 0.05)
            clock = _pass_deadline(db_clock, daemon, delay)
        await asyncio.wait_for(asyncio.gather(*tasks, *([clock] if clock else [])), 60)

        final = await clients[-1].agreements.get(NS, agreement_id)
        assert final.decided, scenario
        outcomes[final.state] += 1
        everything = {s for v in voters for s in v.seen}
        assert not {COMMITTED, ABORTED} <= everything, f"{agreement_id}: split decision"
        for v in voters:
            assert v.seen[-1] == final.state, f"{v.client.agent_id} saw {v.seen}"
            decided_at = next(i for i, s in enumerate(v.seen) if s != PENDING)
            assert all(s == final.state for s in v.seen[decided_at:]), v.seen
        assert (await handle.wait(timeout=5)).state == final.state
        if final.state == COMMITTED:
            assert final.accepted == final.seats == len(final.votes)
            assert all(b.accept and b.vote_time < final.deadline_time for b in final.votes)
            assert all(v.vote is not False for v in voters), "a recorded reject was ignored"
        if any(v.vote is False for v in voters):
            assert final.state == ABORTED and final.cause in ("rejected", "withdrawn")
        if scenario == "all_accept":
            assert final.state == COMMITTED
        if scenario == "one_absent" and "reject" not in plans:
            assert final.state == ABORTED and final.cause == "deadline_passed"
        # Exactly one decision was recorded, in one revision.
        cur = await pg_conn.execute(
            "SELECT revision FROM coordd.changes WHERE namespace = %s AND kind = 'agreement'"
            " AND key = %s AND op IN ('commit', 'abort')",
            (NS, agreement_id),
        )
        assert await cur.fetchall() == [(final.decide_revision,)]
    assert outcomes[COMMITTED] > 0 and outcomes[ABORTED] > 0, outcomes
