"""Limits answer with their reason and the limit, and lose nothing already written."""

from __future__ import annotations

import pytest

from coordd_client import AsyncClient, InvalidArgumentError, MessageTooLargeError


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
