"""The vector index keeps its labels and hnswlib's in step through deletes and label reuse."""

from __future__ import annotations

import math

import numpy as np

from coordd.domain.models import SearchFilter
from coordd.storage.vector_index import Element, VectorIndex, normalize

NS = "acme/kb"


def element(key: str, seed: int) -> Element:
    vector = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return Element(NS, key, 1, frozenset(), "", math.inf, math.inf, normalize(vector))


def test_reused_labels_never_drop_a_live_entry() -> None:
    """Deleting, reusing labels and deleting again (the churn of a long-lived daemon).

    hnswlib's replace_deleted put a reused label into whichever deleted slot came first,
    unmapping the label that slot used to carry, by then a live entry's: deleting that entry
    later raised "Label not found" (an INTERNAL error, and a catch-up failing forever).
    """
    index = VectorIndex(exact_limit=0)  # always the graph, never the exact path
    index.apply([element(f"k{i}", i) for i in range(4)], [])
    index.apply([], [(NS, "k0")])
    index.apply([], [(NS, "k1")])
    index.apply([element("k4", 4)], [])  # reuses a freed label
    index.apply([element("k5", 5)], [])  # reuses the other one
    index.apply([element("k2", 22)], [])  # a live entry re-put in place
    index.apply([], [(NS, "k4"), (NS, "k5"), (NS, "k2")])
    assert sorted(index.keys()) == [(NS, "k3")]
    f = SearchFilter(namespaces=frozenset({NS}))
    for seed in range(8):
        hits = index.search(element("q", 100 + seed).vector, 4, f)
        assert [(ns, key) for ns, key, _ in hits] == [(NS, "k3")]


def test_every_live_entry_is_found_after_churn() -> None:
    index = VectorIndex(exact_limit=0)
    rng = np.random.default_rng(7)
    live: dict[str, int] = {}
    for step in range(400):
        key = f"k{int(rng.integers(0, 40))}"
        if key in live and rng.random() < 0.5:
            index.apply([], [(NS, key)])
            del live[key]
        else:
            live[key] = step
            index.apply([element(key, step)], [])
    assert sorted(key for _, key in list(index.keys())) == sorted(live)
    f = SearchFilter(namespaces=frozenset({NS}))
    for key, seed in live.items():  # each entry is its own nearest neighbour
        [(ns, found, distance)] = index.search(element(key, seed).vector, 1, f)
        assert (ns, found) == (NS, key) and distance < 1e-4
