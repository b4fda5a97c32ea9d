"""Idempotency end to end: replay, reuse, takeover, late completion, retention."""

from __future__ import annotations

import asyncio

import pytest

from coordd_client import (
    IdempotencyAttemptSupersededError,
    IdempotencyKeyReusedError,
    IdempotencyState,
    IdempotentTaskFailedError,
    NotFoundError,
    fingerprint,
)
from tests.fix_daemon import DaemonThread

NS = "acme/tasks"


async def test_sixteen_workers_one_run_one_result(connect) -> None:
    runs = 0

    async def work() -> dict[str, int]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)  # long enough that every worker begins while it runs
        return {"invoice": 42}

    workers = [await connect(f"w{i}") for i in range(16)]
    results = await asyncio.gather(
        *(w.idempotency.once(NS, "charge-7", {"amount": 10}, work) for w in workers)
    )
    assert runs == 1
    assert results == [{"invoice": 42}] * 16


async def test_retry_returns_stored_result_without_running(connect) -> None:
    a = await connect("agent-a")
    calls: list[int] = []
    first = await a.idempotency.once(NS, "k", {"p": 1}, lambda: calls.append(1) or "done")
    again = await a.idempotency.once(NS, "k", {"p": 1}, lambda: calls.append(2) or "other")
    assert first == again == "done" and calls == [1]
    with pytest.raises(IdempotencyKeyReusedError):
        await a.idempotency.once(NS, "k", {"p": 2}, lambda: "x")


async def test_dead_runner_is_taken_over_and_its_late_complete_refused(connect, db_clock) -> None:
    dead, live = await connect("runner-dead"), await connect("runner-live")
    first = await dead.idempotency.begin(NS, "job", b"fp", lease=10)
    assert first.state is IdempotencyState.ACQUIRED and first.attempt == 1
    busy = await live.idempotency.begin(NS, "job", b"fp", lease=10)
    assert busy.state is IdempotencyState.IN_PROGRESS and busy.attempt == 1
    db_clock.advance(11)  # the dead runner's lease lapses
    second = await live.idempotency.begin(NS, "job", b"fp", lease=10)
    assert second.state is IdempotencyState.ACQUIRED and second.attempt == 2
    await live.idempotency.complete(NS, "job", 2, b"from-live")
    with pytest.raises(IdempotencyAttemptSupersededError) as exc:
        await dead.idempotency.complete(NS, "job", 1, b"from-dead")
    assert exc.value.current_attempt == 2
    replay = await dead.idempotency.begin(NS, "job", b"fp")
    assert replay.state is IdempotencyState.COMPLETED and replay.result == b"from-live"


async def test_concurrent_takeover_has_exactly_one_winner(connect, db_clock) -> None:
    dead = await connect("runner-dead")
    await dead.idempotency.begin(NS, "job", b"fp", lease=5)
    db_clock.advance(6)
    contenders = [await connect(f"c{i}") for i in range(16)]
    outcomes = await asyncio.gather(
        *(c.idempotency.begin(NS, "job", b"fp", lease=30) for c in contenders)
    )
    states = sorted(o.state.value for o in outcomes)
    assert states.count("acquired") == 1 and states.count("in_progress") == 15
    assert {o.attempt for o in outcomes} == {2}


async def test_complete_is_idempotent_and_fail_paths(connect) -> None:
    a = await connect("agent-a")
    begun = await a.idempotency.begin(NS, "j1", b"")
    await a.idempotency.complete(NS, "j1", begun.attempt, b"r")
    rec = await a.idempotency.complete(NS, "j1", begun.attempt, b"r")  # a retried Complete
    assert rec.state is IdempotencyState.COMPLETED and rec.result == b"r"

    fp = fingerprint(None)  # what once(..., payload=None, ...) sends
    begun = await a.idempotency.begin(NS, "j2", fp)
    await a.idempotency.fail(NS, "j2", begun.attempt, retryable=True, error="timeout")
    retry = await a.idempotency.begin(NS, "j2", fp)
    assert retry.state is IdempotencyState.ACQUIRED and retry.attempt == 2
    await a.idempotency.fail(NS, "j2", retry.attempt, retryable=False, error="card declined")
    final = await a.idempotency.begin(NS, "j2", fp)
    assert final.state is IdempotencyState.FAILED and final.error == "card declined"
    with pytest.raises(IdempotentTaskFailedError) as exc:
        await a.idempotency.once(NS, "j2", None, lambda: "never")
    assert exc.value.error == "card declined"


async def test_once_releases_key_when_work_raises(connect) -> None:
    a = await connect("agent-a")

    def boom() -> None:
        raise RuntimeError("flaky")

    with pytest.raises(RuntimeError):
        await a.idempotency.once(NS, "j", {}, boom)
    assert await a.idempotency.once(NS, "j", {}, lambda: "second try") == "second try"
    rec = await a.idempotency.get(NS, "j")
    assert rec is not None and rec.attempt == 2


async def test_retention_purges_records(connect, db_clock, daemon: DaemonThread) -> None:
    a = await connect("agent-a")
    begun = await a.idempotency.begin(NS, "old", b"", retention=60)
    await a.idempotency.complete(NS, "old", begun.attempt, b"r")
    db_clock.advance(59)
    assert daemon.sweep()["idempotency_purged"] == 0
    db_clock.advance(2)
    assert daemon.sweep()["idempotency_purged"] == 1
    assert await a.idempotency.get(NS, "old") is None
    with pytest.raises(NotFoundError):
        await a.idempotency.complete(NS, "old", begun.attempt, b"r")
    fresh = await a.idempotency.begin(NS, "old", b"other payload is fine after purge")
    assert fresh.state is IdempotencyState.ACQUIRED and fresh.attempt == 1


def test_blocking_once(client) -> None:
    assert client.idempotency.once(NS, "sync", [1, 2], lambda: {"ok": True}) == {"ok": True}
    assert client.idempotency.once(NS, "sync", [1, 2], lambda: {"ok": False}) == {"ok": True}
