"""The client decodes a search hit's entry once per distinct message."""

from __future__ import annotations

from coordd.v1 import memory_service_pb2 as pb
from coordd_client._memory import _DecodedHits


def message(key: str, revision: int, value: str = "{}") -> pb.MemoryEntry:
    return pb.MemoryEntry(namespace="acme/kb", key=key, tier=3, value_json=value, revision=revision)


def test_an_unchanged_entry_is_decoded_once_a_changed_one_again() -> None:
    hits = _DecodedHits()
    first = hits.entry(message("k", 1, '{"v": 1}'))
    assert hits.entry(message("k", 1, '{"v": 1}')) is first
    again = hits.entry(message("k", 2, '{"v": 2}'))
    assert again is not first and again.value == {"v": 2} and again.revision == 2


def test_the_bytes_kept_are_bounded_oldest_out_first() -> None:
    size = len(message("k0", 1).SerializeToString())
    hits = _DecodedHits(max_bytes=2 * size)
    first = hits.entry(message("k0", 1))
    hits.entry(message("k1", 1))
    hits.entry(message("k2", 1))  # k0 goes
    assert hits.entry(message("k0", 1)) is not first
