"""The blocking client is the asyncio client run on a private loop: same logic, its own names."""

from __future__ import annotations

import threading

import pytest

from coordd_client import AsyncMemory, Client


def test_a_bad_call_names_the_blocking_method(client: Client) -> None:
    with pytest.raises(TypeError, match=r"^Memory\.put\(\) missing a required argument: 'key'"):
        client.memory.put("acme/kb")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Claims\.acquire\(\) got an unexpected keyword"):
        client.claims.acquire("acme/docs", "doc-1", ttl=5, lease=5)  # type: ignore[call-arg]
    assert client.memory.put.__qualname__ == "Memory.put"
    assert client.memory.put.__doc__ == AsyncMemory.put.__doc__


def test_once_runs_the_work_in_the_calling_thread(client: Client) -> None:
    ran_in: list[threading.Thread] = []

    def work() -> dict[str, int]:
        ran_in.append(threading.current_thread())
        return {"n": 1}

    assert client.idempotency.once("acme/jobs", "job-1", {"a": 1}, work) == {"n": 1}
    assert client.idempotency.once("acme/jobs", "job-1", {"a": 1}, work) == {"n": 1}
    assert ran_in == [threading.current_thread()]


def test_once_releases_the_key_when_the_work_raises_in_the_calling_thread(client: Client) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        client.idempotency.once("acme/jobs", "job-2", {}, boom)
    assert client.idempotency.once("acme/jobs", "job-2", {}, lambda: 7) == 7
