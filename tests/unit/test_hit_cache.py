"""The search's hit cache answers only for the exact version the index holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordd.domain.memory import HitCache, IndexHit
from coordd.domain.models import MemoryEntry, Tier

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(key: str, revision: int, value: str = "{}", **changes: object) -> MemoryEntry:
    fields: dict[str, object] = {
        "namespace": "acme/kb",
        "key": key,
        "tier": Tier.SEMANTIC,
        "value_json": value,
        "text": "",
        "embedding": b"",
        "tags": [],
        "task_id": "",
        "revision": revision,
        "create_revision": revision,
        "agent_id": "a",
        "role": "",
        "write_time": NOW,
        "trace_id": "",
        "request_id": "",
        "derived_from": [],
        "expire_time": None,
        "valid_from": NOW,
        "valid_to": None,
        "review_time": None,
        "confidence": 0.0,
        **changes,
    }
    return MemoryEntry(**fields)  # type: ignore[arg-type]


def hit(key: str, revision: int, timed: bool = False) -> IndexHit:
    return IndexHit("acme/kb", key, 0.1, revision, timed)


def test_a_hit_is_answered_only_at_the_revision_the_index_holds() -> None:
    cache = HitCache()
    cache.put(entry("k", 3))
    assert cache.get(hit("k", 3)) is not None
    assert cache.get(hit("k", 4)) is None  # the index has a newer version
    assert cache.get(hit("other", 3)) is None


def test_entries_the_clock_decides_about_are_never_kept() -> None:
    cache = HitCache()
    cache.put(entry("ttl", 1, expire_time=NOW + timedelta(seconds=60)))
    cache.put(entry("review", 2, review_time=NOW))
    assert cache.get(hit("ttl", 1)) is None and cache.get(hit("review", 2)) is None
    cache.put(entry("k", 3))
    assert cache.get(hit("k", 3, timed=True)) is None  # the index says it has a time now


def test_an_emptied_or_rebuilt_index_voids_everything_kept() -> None:
    """A database emptied under the daemon starts its revisions again: revision 3 of "k"
    after that is another entry."""
    cache = HitCache()
    cache.follow(1)
    cache.put(entry("k", 3))
    cache.follow(1)
    assert cache.get(hit("k", 3)) is not None
    cache.follow(2)
    assert cache.get(hit("k", 3)) is None


def test_the_bytes_kept_are_bounded_least_recently_used_out_first() -> None:
    cache = HitCache(max_bytes=3 * (1000 + 512))
    for i in range(3):
        cache.put(entry(f"k{i}", 1, value="x" * 1000))
    assert cache.get(hit("k0", 1)) is not None  # k0 used: k1 is now the oldest
    cache.put(entry("k3", 1, value="x" * 1000))
    assert cache.get(hit("k1", 1)) is None
    assert all(cache.get(hit(k, 1)) is not None for k in ("k0", "k2", "k3"))
