"""The session cache's rules, with a fake watch (no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

from coordd.v1 import common_pb2
from coordd.v1 import memory_service_pb2 as pb
from coordd.v1 import watch_service_pb2 as wpb
from coordd_client import CacheConfig, Session
from coordd_client._cache import GET_MEMORY, LIST_MEMORY, SessionCache

NS = "acme/unit"


class FakeWatch:
    """Records the watches opened; each stays open until closed."""

    def __init__(self) -> None:
        self.opened: list[wpb.WatchRequest] = []
        self._gate = asyncio.Event()

    def __call__(self, request: wpb.WatchRequest) -> Any:
        self.opened.append(request)
        return self._stream()

    async def _stream(self) -> Any:
        await self._gate.wait()
        raise RuntimeError("stream broken")
        yield  # pragma: no cover

    def close(self) -> None:
        self._gate.set()


def get(key: str) -> pb.GetMemoryRequest:
    return pb.GetMemoryRequest(namespace=NS, key=key)


def answer(key: str, revision: int, value: str = "1") -> pb.GetMemoryResponse:
    return pb.GetMemoryResponse(
        header=common_pb2.ResponseHeader(namespace=NS, revision=revision),
        found=True,
        entry=pb.MemoryEntry(namespace=NS, key=key, value_json=value, revision=revision),
    )


def event(revision: int, key: str, kind: str = "memory") -> wpb.ChangeEvent:
    return wpb.ChangeEvent(namespace=NS, revision=revision, kind=kind, key=key, op="put")


async def test_hits_only_at_or_above_the_session_and_until_a_change() -> None:
    session, watch = Session(), FakeWatch()
    cache = SessionCache(CacheConfig(), session, watch)
    assert cache.lookup(GET_MEMORY, get("k")) is None  # cold
    assert cache.store(GET_MEMORY, get("k"), answer("k", 5))
    await asyncio.sleep(0)  # the watch starts after the answer's revision
    assert watch.opened[0].after.revisions[NS] == 5
    session.observe(NS, 5)
    assert cache.lookup(GET_MEMORY, get("k")) is not None
    session.observe(NS, 7)  # the session saw revision 7 (e.g. its own write elsewhere)
    assert cache.lookup(GET_MEMORY, get("k")) is None
    assert cache.stats.session_forced == 1
    cache.apply((NS, False), [event(6, "other"), event(7, "other")])
    assert cache.lookup(GET_MEMORY, get("k")) is not None  # applied up to 7, k untouched
    cache.apply((NS, False), [event(8, "k")])
    assert cache.lookup(GET_MEMORY, get("k")) is None  # invalidated
    assert cache.stats.invalidations == 1
    # An answer older than what the cache has applied is not kept.
    assert not cache.store(GET_MEMORY, get("k"), answer("k", 7))
    assert cache.store(GET_MEMORY, get("k"), answer("k", 8, "2"))
    watch.close()
    await cache.close()


async def test_lists_depend_on_every_key_and_on_the_session_below_the_prefix() -> None:
    session, watch = Session(), FakeWatch()
    cache = SessionCache(CacheConfig(), session, watch)
    req = pb.ListMemoryRequest(namespace_prefix=NS)
    resp = pb.ListMemoryResponse(header=common_pb2.ResponseHeader(namespace=NS, revision=3))
    session.observe(f"{NS}/sub", 4)
    assert cache.store(LIST_MEMORY, req, resp, floors=cache.floors(LIST_MEMORY, req))
    assert cache.lookup(LIST_MEMORY, req) is not None
    session.observe(f"{NS}/sub", 5)  # newer below the prefix than the list reflects
    assert cache.lookup(LIST_MEMORY, req) is None
    assert cache.store(LIST_MEMORY, req, resp, floors=cache.floors(LIST_MEMORY, req))
    cache.apply((NS, True), [event(4, "any-key")])
    assert cache.lookup(LIST_MEMORY, req) is None
    watch.close()
    await cache.close()


async def test_a_broken_watch_quarantines_and_bytes_are_bounded() -> None:
    session, watch = Session(), FakeWatch()
    cache = SessionCache(CacheConfig(max_bytes=2000), session, watch)
    for i in range(10):
        cache.store(GET_MEMORY, get(f"k{i}"), answer(f"k{i}", 1, '"' + "x" * 100 + '"'))
    assert cache.stats.bytes <= 2000 and cache.stats.evictions > 0
    assert cache.lookup(GET_MEMORY, get("k9")) is not None
    watch.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert cache.lookup(GET_MEMORY, get("k9")) is None  # never served as fresh again
    stale = cache.stale(GET_MEMORY, get("k9"), max_age_s=60)
    assert stale is not None and stale.age_s >= 0
    await cache.close()


async def test_negative_control_flag_serves_below_the_session() -> None:
    session, watch = Session(), FakeWatch()
    cache = SessionCache(CacheConfig(_skip_version_checks=True), session, watch)
    cache.store(GET_MEMORY, get("k"), answer("k", 5))
    session.observe(NS, 9)
    assert cache.lookup(GET_MEMORY, get("k")) is not None
    watch.close()
    await cache.close()
