"""Limits answer with their reason and the limit, and lose nothing already written."""

from __future__ import annotations

import pytest

from coordd_client import (
    AsyncClient,
    InvalidArgumentError,
    MessageTooLargeError,
    QuotaExceededError,
)


@pytest.fixture
def small_daemon(start_daemon):
    return start_daemon(max_message_bytes=256 * 1024)


async def test_a_message_over_the_limit_is_message_too_large(small_daemon, pg_conn) -> None:
    client = await AsyncClient.connect(small_daemon.address, agent_id="a")
    try:
        await client.memory.put("acme/l", "kept", {"v": 1})
        with pytest.raises(MessageTooLargeError) as err:  # over the limit, under gRPC's ceiling
            await client.memory.put("acme/l", "big", {"blob": "x" * 600_000})
        assert err.value.limit == 256 * 1024 and err.value.size > 600_000
        assert err.value.reason == "MESSAGE_TOO_LARGE"
        with pytest.raises(MessageTooLargeError):  # past gRPC's own ceiling: still typed
            await client.memory.put("acme/l", "huge", {"blob": "x" * 1_200_000})
        assert (await client.memory.get("acme/l", "kept")) is not None
    finally:
        await client.close()
    cur = await pg_conn.execute("SELECT key FROM coordd.memory ORDER BY key")
    assert await cur.fetchall() == [("kept",)]


async def test_embedding_dimensions_are_one_per_namespace(aclient, pg_conn) -> None:
    await aclient.memory.put("acme/e", "a", {"v": 1}, embedding=[1.0, 0.0, 0.0])
    with pytest.raises(InvalidArgumentError) as err:
        await aclient.memory.put("acme/e", "b", {"v": 2}, embedding=[1.0, 0.0])
    assert [v.field for v in err.value.violations] == ["embedding"]
    assert "2 dimensions" in err.value.message and "have 3" in err.value.message
    await aclient.memory.put("acme/other", "b", {"v": 2}, embedding=[1.0, 0.0])  # its own
    await aclient.memory.put("acme/e", "a", {"v": 3}, embedding=[0.0, 1.0])  # sole entry: ok
    cur = await pg_conn.execute("SELECT namespace, key, dim FROM coordd.memory ORDER BY 1, 2")
    assert await cur.fetchall() == [("acme/e", "a", 2), ("acme/other", "b", 2)]


async def test_a_search_in_a_dimension_nothing_has_says_so(aclient) -> None:
    await aclient.memory.put("acme/s", "a", {"v": 1}, embedding=[1.0, 0.0, 0.0])
    assert len(await aclient.memory.search([1.0, 0.0, 0.0], 5, "acme")) == 1
    with pytest.raises(InvalidArgumentError, match="no stored entry has embeddings"):
        await aclient.memory.search([1.0, 0.0, 0.0, 0.0], 5, "acme")


QUOTAS = """
[[grants]]
role = "worker"
namespaces = ["**"]
operations = ["read", "write", "claim"]

[[quotas]]
namespace = "q/a"
memory_entries = 2
context_entries = 1
idempotency_entries = 1

[[quotas]]
namespace = "q/b"
memory_bytes = 200
"""


async def test_quotas_refuse_the_write_that_would_pass_them(start_daemon, tmp_path, pg_conn):
    from tests.fix_daemon import write_policy

    d = start_daemon(policy_file=write_policy(tmp_path, QUOTAS))
    c = await AsyncClient.connect(d.address, agent_id="w", role="worker")
    try:
        await c.memory.put("q/a", "k1", {"v": 1})
        await c.memory.put("q/a", "k2", {"v": 2})
        await c.memory.put("q/a", "k1", {"v": 3})  # a new version of k1: no new entry
        with pytest.raises(QuotaExceededError) as err:
            await c.memory.put("q/a", "k3", {"v": 4})
        assert (err.value.reason, err.value.limit_name) == ("QUOTA_EXCEEDED", "memory_entries")
        assert (err.value.namespace, err.value.quota, err.value.usage) == ("q/a", 2, 2)
        await c.memory.delete("q/a", "k2")
        await c.memory.put("q/a", "k3", {"v": 4})  # room again
        await c.context.post("q/a", {"x": 1}, to_role="worker", context_type="note")
        with pytest.raises(QuotaExceededError, match="context_entries"):
            await c.context.post("q/a", {"x": 2}, to_role="worker", context_type="note")
        await c.idempotency.begin("q/a", "job-1", b"f")
        with pytest.raises(QuotaExceededError, match="idempotency_entries"):
            await c.idempotency.begin("q/a", "job-2", b"f")
        await c.memory.put("q/b", "small", {"v": "x" * 50})
        with pytest.raises(QuotaExceededError) as err:
            await c.memory.put("q/b", "big", {"v": "x" * 200})
        assert err.value.limit_name == "memory_bytes" and err.value.quota == 200
        await c.memory.put("q/c", "free", {"v": "x" * 500})  # no quota there
    finally:
        await c.close()
    cur = await pg_conn.execute(
        "SELECT namespace, count(*) FROM coordd.memory GROUP BY 1 ORDER BY 1"
    )
    assert await cur.fetchall() == [("q/a", 2), ("q/b", 1), ("q/c", 1)]
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.context_entries")
    assert await cur.fetchone() == (1,)
    cur = await pg_conn.execute(
        "SELECT n.revision, count(DISTINCT c.revision) FROM coordd.namespaces n"
        " JOIN coordd.changes c ON c.namespace = n.name WHERE n.name = 'q/a' GROUP BY 1"
    )
    revision, logged = await cur.fetchone()  # type: ignore[misc]
    assert revision == logged, "refused writes took no revision"
