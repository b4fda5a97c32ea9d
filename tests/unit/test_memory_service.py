"""MemoryService without I/O: pages and their tokens, reads at a minimum revision, and the
keys a compaction names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from coordd.domain.memory import (
    Compaction,
    HistoryRead,
    KeyRead,
    Listing,
    MemorySearch,
    MemoryService,
)
from coordd.domain.models import Identity, MemoryEntry
from coordd.errors import RevisionNotReachedError
from coordd.vocabulary import Tier

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WHO = Identity(agent_id="a1", role="writer")


def entry(namespace: str, key: str, revision: int = 1) -> MemoryEntry:
    return MemoryEntry(
        namespace=namespace,
        key=key,
        tier=Tier.EPISODIC,
        value_json="{}",
        text="",
        embedding=b"",
        tags=[],
        task_id="",
        revision=revision,
        create_revision=revision,
        agent_id="a1",
        role="writer",
        write_time=T0,
        trace_id="",
        request_id="",
        derived_from=[],
        expire_time=None,
        valid_from=T0,
        valid_to=None,
        review_time=None,
        confidence=0.0,
    )


@dataclass
class FakeStore:
    """Answers from *entries* (in order) at *revision*; records what it was asked."""

    entries: list[MemoryEntry] = field(default_factory=list)
    revisions: list[int] = field(default_factory=lambda: [7])
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def _revision(self) -> int:
        return self.revisions.pop(0) if len(self.revisions) > 1 else self.revisions[0]

    async def get(self, namespace: str, key: str, as_of: datetime | None) -> Any:
        self.calls.append(("get", (namespace, key, as_of)))
        return self._revision(), None

    async def list_entries(self, q: Listing, after: tuple[str, str], limit: int) -> Any:
        self.calls.append(("list_entries", (q, after, limit)))
        later = [e for e in self.entries if (e.namespace, e.key) > after]
        return self._revision(), later[:limit]

    async def history(self, namespace: str, key: str, before: int, limit: int) -> Any:
        self.calls.append(("history", (namespace, key, before, limit)))
        older = sorted((e for e in self.entries if e.revision < before), key=lambda e: -e.revision)
        return self._revision(), older[:limit]

    async def compact(self, *args: Any) -> Any:
        self.calls.append(("compact", args))
        _who, _trace, c = args
        return entry(c.namespace, c.summary_key)


def service(store: FakeStore) -> MemoryService:
    search: Any = MemorySearch  # never called here: search has its own tests (e2e)
    return MemoryService(store, search)  # type: ignore[arg-type]


def listing(after: str = "", limit: int = 2, min_revision: int = 0) -> Listing:
    return Listing(
        prefix="p",
        tier=0,
        tags=[],
        task_id="",
        include_stale=False,
        after=after,
        limit=limit,
        min_revision=min_revision,
    )


async def test_list_pages_resume_where_the_last_page_ended() -> None:
    store = FakeStore(entries=[entry("p", "a"), entry("p", "b"), entry("p/q", "a")])
    memory = service(store)
    first = await memory.list(listing(), wait_s=0)
    assert [(e.namespace, e.key) for e in first.entries] == [("p", "a"), ("p", "b")]
    assert first.next_after == "p\x00b"
    assert store.calls[-1][1][-1] == 3  # one more than the page, to know whether more follow
    second = await memory.list(listing(after=first.next_after), wait_s=0)
    assert [(e.namespace, e.key) for e in second.entries] == [("p/q", "a")]
    assert second.next_after is None


async def test_history_pages_newest_first_by_revision_token() -> None:
    store = FakeStore(entries=[entry("n", "k", r) for r in (1, 2, 3)])
    memory = service(store)
    read = HistoryRead(namespace="n", key="k", after="", limit=2, min_revision=0)
    first = await memory.history(read, wait_s=0)
    assert [e.revision for e in first.entries] == [3, 2]
    assert first.next_after == "2"
    second = await memory.history(
        HistoryRead(namespace="n", key="k", after="2", limit=2, min_revision=0), wait_s=0
    )
    assert [e.revision for e in second.entries] == [1]
    assert second.next_after is None
    # A token that is not a revision starts from the newest version again.
    again = await memory.history(
        HistoryRead(namespace="n", key="k", after="x", limit=2, min_revision=0), wait_s=0
    )
    assert [e.revision for e in again.entries] == [3, 2]


async def test_get_rereads_until_the_minimum_revision_is_reflected() -> None:
    store = FakeStore(revisions=[4, 5, 6])
    read = KeyRead(namespace="n", key="k", as_of=None, min_revision=6)
    revision, found = await service(store).get(read, wait_s=5)
    assert (revision, found) == (6, None)
    assert [c[0] for c in store.calls] == ["get", "get", "get"]


async def test_get_refuses_rather_than_answer_older() -> None:
    store = FakeStore(revisions=[4])
    read = KeyRead(namespace="n", key="k", as_of=None, min_revision=6)
    with pytest.raises(RevisionNotReachedError):
        await service(store).get(read, wait_s=0)


async def test_compaction_names_each_episode_once() -> None:
    store = FakeStore()
    memory = service(store)
    await memory.compact(
        WHO,
        "trace",
        Compaction(
            namespace="n",
            keys=["e2", "e1", "e2"],
            summary_key="s",
            summary_json="{}",
            summary_text="",
            embedding=b"",
            dim=0,
            tags=[],
        ),
    )
    # memory_compact counts the episodes it finds against the keys: each key once.
    assert store.calls[-1][1][2].keys == ["e1", "e2"]
