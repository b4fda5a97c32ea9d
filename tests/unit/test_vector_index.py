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
        assert [(h.namespace, h.key) for h in hits] == [(NS, "k3")]


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
        [hit] = index.search(element(key, seed).vector, 1, f)
        assert (hit.namespace, hit.key) == (NS, key) and hit.distance < 1e-4


def timed(key: str, seed: int, namespace: str = NS, expire: float = math.inf) -> Element:
    vector = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return Element(namespace, key, 1, frozenset(), "", expire, math.inf, normalize(vector))


def test_a_filter_that_admits_everything_is_known_from_counts() -> None:
    """Without a mask when the filter passes all (every namespace present readable, nothing
    expired yet); with one as soon as it does not."""
    index = VectorIndex(exact_limit=0)
    index.apply([timed(f"k{i}", i) for i in range(20)], [])
    index.apply([timed("soon", 99, expire=100.0), timed("other", 98, namespace="acme/x")], [])
    both = frozenset({NS, "acme/x"})
    query = timed("soon", 99).vector
    [graph] = index._graphs.values()
    assert graph.admits_all(SearchFilter(namespaces=both, now=50.0))
    assert not graph.admits_all(SearchFilter(namespaces=both, now=100.0))
    assert not graph.admits_all(SearchFilter(namespaces=frozenset({NS}), now=50.0))
    hits = index.search(query, 3, SearchFilter(namespaces=both, now=50.0))
    assert hits[0].key == "soon" and hits[0].timed
    hits = index.search(query, 22, SearchFilter(namespaces=both, now=100.0))
    assert "soon" not in {h.key for h in hits} and len(hits) == 21
    index.apply([], [(NS, "soon"), ("acme/x", "other")])
    assert graph.admits_all(SearchFilter(namespaces=frozenset({NS}), now=100.0))
    assert graph.alive_count == 20 and graph.timed_count == 0


def test_a_filter_passing_most_elements_returns_only_those_it_passes() -> None:
    """Most elements pass: the graph is asked for more neighbours and the refused ones are
    dropped in bulk; the answer holds k of the passing ones, the nearest first."""
    index = VectorIndex(exact_limit=0)
    index.apply([timed(f"a{i}", i) for i in range(150)], [])
    index.apply([timed(f"b{i}", 1000 + i, namespace="acme/hidden") for i in range(50)], [])
    f = SearchFilter(namespaces=frozenset({NS}))
    for seed in range(10):
        query = timed("q", 5000 + seed).vector
        hits = index.search(query, 10, f, ef=200)
        assert len(hits) == 10 and all(h.namespace == NS for h in hits)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_namespaces_under_a_prefix_follow_every_put_remove_and_snapshot(tmp_path) -> None:
    """A search finds the namespaces under its prefixes by bisection in an ordered list the
    index keeps as namespaces appear and go: it must agree with :func:`under` throughout,
    whole segments only ("a/b" holds "a/b/c", not "a/bc", "a/b-x" nor "a/b.x")."""
    from coordd.domain.memory import under

    names = ["a", "a/b", "a/bc", "a/b-x", "a/b.x", "a/b:x", "a/b/c", "a/b/c/d", "a/b0", "ab", "b"]
    names += [f"t/{i}" for i in range(200)]  # enough at once to take the one-sort path
    prefixes = ["a", "a/b", "a/b/c", "a/bc", "a/b-x", "ab", "b", "t", "t/1", "zz", "a/b/c/d/e"]
    index = VectorIndex()
    rng = np.random.default_rng(11)
    held: dict[str, set[str]] = {}

    def check(ix: VectorIndex) -> None:
        present = {ns for ns, keys in held.items() if keys}
        for p in prefixes:
            want = {ns for ns in present if under(p, ns)}
            assert ix.namespaces_under([p]) == want, p
        assert ix.namespaces_under(["a/b", "b"]) == {
            ns for ns in present if under("a/b", ns) or under("b", ns)
        }

    index.apply([timed("k0", 0, namespace=ns) for ns in names], [])
    held = {ns: {"k0"} for ns in names}
    check(index)
    for step in range(300):
        ns = names[int(rng.integers(0, 11))] if step % 3 else f"t/{int(rng.integers(0, 200))}"
        key = f"k{int(rng.integers(0, 2))}"
        if key in held[ns]:
            index.apply([], [(ns, key)])
            held[ns].discard(key)
        else:
            index.apply([timed(key, step, namespace=ns)], [])
            held[ns].add(key)
        check(index)
    gone = [(ns, k) for ns in names[11:] for k in held[ns]]  # many go at once (a purge)
    index.apply([], gone)
    for ns in names[11:]:
        held[ns].clear()
    check(index)
    index.save(tmp_path / "snap", "db")
    loaded = VectorIndex()
    assert loaded.load(tmp_path / "snap", "db")
    check(loaded)


def test_a_few_namespaces_pass_the_same_labels_as_the_mask_over_the_whole_graph(tmp_path) -> None:
    """A search of namespaces holding few of the graph's elements takes their labels from
    per-namespace sets: through puts, re-puts into another namespace, removes and a snapshot
    reload, those labels are exactly the ones the mask over every label passes."""
    index = VectorIndex()
    rng = np.random.default_rng(5)
    spaces = [f"n{i}" for i in range(40)]
    for step in range(1500):
        ns, key = spaces[int(rng.integers(0, 40))], f"k{int(rng.integers(0, 300))}"
        if rng.random() < 0.25:
            index.apply([], [(ns, key)])
            continue
        e = Element(
            ns,
            key,
            int(rng.integers(0, 3)),
            frozenset({"t"}) if rng.random() < 0.5 else frozenset(),
            "task" if rng.random() < 0.5 else "",
            float(rng.integers(0, 100)) if rng.random() < 0.3 else math.inf,
            float(rng.integers(0, 100)) if rng.random() < 0.3 else math.inf,
            timed(key, step).vector,
        )
        index.apply([e], [(ns, key)] if rng.random() < 0.1 else [])

    def agree(ix: VectorIndex) -> int:
        [graph] = ix._graphs.values()
        checked = 0
        for i in range(60):
            f = SearchFilter(
                namespaces=frozenset(spaces[j] for j in rng.choice(40, size=1 + i % 4)),
                tier=int(rng.integers(0, 3)) * (i % 2),
                tags=frozenset({"t"}) if i % 3 == 0 else frozenset(),
                task_id="task" if i % 5 == 0 else "",
                include_stale=i % 7 == 0,
                now=float(rng.integers(0, 110)),
            )
            few = graph.few_passing(f)
            if few is not None:
                checked += 1
                assert sorted(few.tolist()) == np.flatnonzero(graph.mask(f)).tolist()
        return checked

    assert agree(index) > 30
    index.save(tmp_path / "snap", "db")
    loaded = VectorIndex()
    assert loaded.load(tmp_path / "snap", "db")
    assert agree(loaded) > 30
