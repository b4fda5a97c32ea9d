"""The in-process nearest-neighbour index: hnswlib, one graph per embedding dimension.

PostgreSQL holds every vector; this index is derived data. Each element carries its entry's
metadata in numpy arrays indexed by label, so a query's filters (namespaces the caller may read,
tier, tags, task, expiry, staleness) become one boolean mask built before ranking:

- the filter admits every element of the graph (known from counts kept on every write, without
  building a mask: every namespace present is readable, no tier, tag or task filter, and no
  element has yet expired or gone stale): a plain native hnswlib query;
- the filter's namespaces hold at most an eighth of the graph: their labels come from
  per-namespace label sets (not a pass over every label), then as below;
- mask selects few vectors (``exact_limit`` floats or fewer): exact cosine over just those,
  so a selective filter still returns k results whenever k entries match;
- mask selects at least half the graph: a native query for more neighbours than asked, the
  ones the mask refuses dropped in bulk (no Python per candidate); if too few remain,
- otherwise: hnswlib with the mask as its filter (checked per candidate).

hnswlib is not safe for concurrent add and query, but queries may run together: a
readers-writer lock lets searches share the index and gives writers (adds, removes, snapshots)
it alone, held only around native calls (which release the GIL). Deleted elements are marked
deleted and their labels reused.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import pickle
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt

from coordd.domain.memory import IndexHit, namespaces_under
from coordd.domain.models import SearchFilter as Filter

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
SNAPSHOT_FORMAT = 2
"""Raised whenever what a graph keeps changes (2: revisions and filter counts)."""


class ReadWriteLock:
    """Many readers or one writer; a waiting writer stops new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def try_read(self) -> bool:
        """Enter as a reader if that needs no waiting."""
        with self._cond:
            if self._writer or self._writers_waiting:
                return False
            self._readers += 1
            return True

    def read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    def __enter__(self) -> ReadWriteLock:
        """``with lock:`` holds it as the writer."""
        self.write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_write()


@dataclass(frozen=True, slots=True)
class Element:
    """What the index keeps of one entry."""

    namespace: str
    key: str
    tier: int
    tags: frozenset[str]
    task_id: str
    expire: float  # epoch seconds, inf if never
    review: float  # epoch seconds, inf if never stale
    vector: FloatArray  # unit length
    revision: int = 0  # the entry's revision (which version of it this is)

    @property
    def timed(self) -> bool:
        """Whether the clock can change what a search makes of it (expiry, staleness)."""
        return self.expire != math.inf or self.review != math.inf


def normalize(vector: FloatArray) -> FloatArray:
    # In float64: the squares of large float32 components (up to 3.4e38) overflow float32.
    wide = vector.astype(np.float64)
    return (wide / float(np.linalg.norm(wide))).astype(np.float32)


class _Graph:
    """One hnswlib index and its per-label metadata, for one dimension."""

    def __init__(self, dim: int, m: int, ef_construction: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.hnsw = hnswlib.Index(space="cosine", dim=dim)
        self.hnsw.init_index(
            max_elements=capacity, ef_construction=ef_construction, M=m, allow_replace_deleted=True
        )
        self.capacity = capacity
        self.labels: dict[tuple[str, str], int] = {}
        self.free: list[int] = []
        self.next_label = 0
        self.alive = np.zeros(capacity, dtype=bool)
        self.tier = np.zeros(capacity, dtype=np.int8)
        self.expire = np.full(capacity, math.inf)
        self.review = np.full(capacity, math.inf)
        self.ns = np.zeros(capacity, dtype=np.int32)
        self.revision = np.zeros(capacity, dtype=np.int64)
        self.timed = np.zeros(capacity, dtype=bool)
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.tags: list[frozenset[str]] = [frozenset()] * capacity
        self.tasks: list[str] = [""] * capacity
        self.keys: list[tuple[str, str] | None] = [None] * capacity
        self.ns_ids: dict[str, int] = {}
        self.ns_names: list[str] = []  # by namespace id
        # Counts kept on every put and remove, so a search can tell that its filter admits
        # everything without building a mask over every element.
        self.alive_count = 0
        self.timed_count = 0
        self.ns_alive: dict[int, int] = {}  # namespace id -> alive elements
        # namespace id -> its alive labels: a search of a few small namespaces takes their
        # labels from here instead of filtering every label of the graph. Not in snapshots
        # (rebuilt on load from the labels' namespaces).
        self.ns_labels: dict[int, set[int]] = {}
        self.earliest = math.inf  # no alive element expires or goes stale before (lower bound)

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        new = max(need, self.capacity * 2)
        self.hnsw.resize_index(new)
        extra = new - self.capacity
        self.alive = np.concatenate([self.alive, np.zeros(extra, dtype=bool)])
        self.tier = np.concatenate([self.tier, np.zeros(extra, dtype=np.int8)])
        self.expire = np.concatenate([self.expire, np.full(extra, math.inf)])
        self.review = np.concatenate([self.review, np.full(extra, math.inf)])
        self.ns = np.concatenate([self.ns, np.zeros(extra, dtype=np.int32)])
        self.revision = np.concatenate([self.revision, np.zeros(extra, dtype=np.int64)])
        self.timed = np.concatenate([self.timed, np.zeros(extra, dtype=bool)])
        self.vectors = np.concatenate([self.vectors, np.zeros((extra, self.dim), np.float32)])
        self.tags += [frozenset()] * extra
        self.tasks += [""] * extra
        self.keys += [None] * extra
        self.capacity = new

    def put(self, elements: list[Element]) -> None:
        labels = []
        for e in elements:
            key = (e.namespace, e.key)
            label = self.labels.get(key)
            if label is None:
                if self.free:
                    # A freed label still names its own (deleted) slot in hnswlib: revive that
                    # slot and overwrite it. (add_items' replace_deleted would take any deleted
                    # slot and unmap whichever label it carried, possibly a live entry's.)
                    label = self.free.pop()
                    self.hnsw.unmark_deleted(label)
                else:
                    label = self.next_label
                    self.next_label += 1
                    self._grow(label + 1)
                self.labels[key] = label
            labels.append(label)
            if self.alive[label]:
                self._forget(label)
            ns_id = self.ns_ids.get(e.namespace)
            if ns_id is None:
                ns_id = self.ns_ids[e.namespace] = len(self.ns_names)
                self.ns_names.append(e.namespace)
            self.alive[label] = True
            self.alive_count += 1
            self.ns_alive[ns_id] = self.ns_alive.get(ns_id, 0) + 1
            self.ns_labels.setdefault(ns_id, set()).add(label)
            self.tier[label] = e.tier
            self.expire[label] = e.expire
            self.review[label] = e.review
            self.ns[label] = ns_id
            self.revision[label] = e.revision
            self.timed[label] = e.timed
            if e.timed:
                self.timed_count += 1
                self.earliest = min(self.earliest, e.expire, e.review)
            self.vectors[label] = e.vector
            self.tags[label] = e.tags
            self.tasks[label] = e.task_id
            self.keys[label] = key
        if labels:
            data = np.stack([e.vector for e in elements])
            ids = np.asarray(labels)
            # Every label names its own slot: a re-put or revived label is updated in place.
            self.hnsw.add_items(data, ids)

    def remove(self, namespace: str, key: str) -> None:
        label = self.labels.pop((namespace, key), None)
        if label is None:
            return
        self.hnsw.mark_deleted(label)
        self._forget(label)
        self.alive[label] = False
        self.keys[label] = None
        self.free.append(label)

    def _forget(self, label: int) -> None:
        """Take an alive element out of the counts (before it is removed or replaced)."""
        self.alive_count -= 1
        ns_id = int(self.ns[label])
        left = self.ns_alive[ns_id] - 1
        if left:
            self.ns_alive[ns_id] = left
            self.ns_labels[ns_id].discard(label)
        else:
            del self.ns_alive[ns_id]
            del self.ns_labels[ns_id]
        if self.timed[label]:
            self.timed_count -= 1
            self.timed[label] = False

    def admits_all(self, f: Filter) -> bool:
        """Whether *f* passes every alive element (then no mask is needed)."""
        if f.tier or f.tags or f.task_id:
            return False
        if self.timed_count and f.now >= self.earliest:
            n = self.next_label
            timed = self.alive[:n] & self.timed[:n]
            self.earliest = float(
                min(
                    self.expire[:n][timed].min(initial=math.inf),
                    self.review[:n][timed].min(initial=math.inf),
                )
            )
            if f.now >= self.earliest:
                return False
        if len(self.ns_alive) > len(f.namespaces):
            return False  # some namespace present is not readable: no need to find which
        names = self.ns_names
        return all(names[i] in f.namespaces for i in self.ns_alive)

    def index_labels(self) -> None:
        """Rebuild :attr:`ns_labels` from the alive labels' namespaces (after a load)."""
        self.ns_labels = {}
        for label in np.flatnonzero(self.alive[: self.next_label]).tolist():
            self.ns_labels.setdefault(int(self.ns[label]), set()).add(label)

    def few_passing(self, f: Filter) -> npt.NDArray[np.int64] | None:
        """The labels passing *f* when its namespaces hold at most an eighth of the graph's
        elements, found from those namespaces' own labels: the work follows what the caller
        may read, not the rest of the graph. None when they hold more (:meth:`mask` then)."""
        ids = [i for ns in f.namespaces if (i := self.ns_ids.get(ns)) in self.ns_alive]
        held = sum(self.ns_alive[i] for i in ids)
        if 8 * held > self.alive_count:
            return None
        chained = itertools.chain.from_iterable(self.ns_labels[i] for i in ids)
        labels = np.fromiter(chained, dtype=np.int64, count=held)
        keep = self.expire[labels] > f.now
        if not f.include_stale:
            keep &= self.review[labels] > f.now
        if f.tier:
            keep &= self.tier[labels] == f.tier
        labels = labels[keep]
        if f.tags or f.task_id:
            labels = np.array(
                [
                    label
                    for label in labels.tolist()
                    if (not f.tags or f.tags <= self.tags[label])
                    and (not f.task_id or self.tasks[label] == f.task_id)
                ],
                dtype=np.int64,
            )
        return labels

    def mask(self, f: Filter) -> npt.NDArray[np.bool_]:
        n = self.next_label
        readable = np.zeros(len(self.ns_names), dtype=bool)
        ids = self.ns_ids  # by the readable namespaces, not every namespace the graph knows
        readable[[i for ns in f.namespaces if (i := ids.get(ns)) is not None]] = True
        m = self.alive[:n] & readable[self.ns[:n]] & (self.expire[:n] > f.now)
        if not f.include_stale:
            m &= self.review[:n] > f.now
        if f.tier:
            m &= self.tier[:n] == f.tier
        if f.tags or f.task_id:
            for label in np.flatnonzero(m):
                if (f.tags and not f.tags <= self.tags[label]) or (
                    f.task_id and self.tasks[label] != f.task_id
                ):
                    m[label] = False
        return m


class VectorIndex:
    """All graphs, the change-log positions they reflect, and their snapshot on disk."""

    def __init__(
        self,
        m: int = 16,
        # 100, not hnswlib's 200: on 100k x 384 clustered vectors it reaches the same recall
        # (0.956 at ef 16, 0.997 at ef 48) for half the CPU per insert (bench/RESULTS.md).
        ef_construction: int = 100,
        ef_search: int = 128,
        exact_limit: int = 2_000_000,
    ) -> None:
        self._m = m
        self._ef_construction = ef_construction
        self.ef_search = ef_search
        self.exact_limit = exact_limit
        self._graphs: dict[int, _Graph] = {}
        self._where: dict[tuple[str, str], int] = {}  # (namespace, key) -> dim
        self._per_namespace: dict[str, int] = {}  # namespace -> elements (kept, not recounted)
        # The same namespaces in order, for a search to find those under its prefixes by
        # bisection: replaced, never changed in place, so searches read it without the lock.
        self._sorted_namespaces: list[str] = []
        self.lock = ReadWriteLock()
        self._query_lock = threading.Lock()
        self.cursors: dict[str, int] = {}  # namespace -> revision reflected
        self.epoch = 0
        """Moved whenever the index is emptied or rebuilt (what was derived from it is void)."""

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._where)

    def namespaces_under(self, prefixes: Iterable[str]) -> set[str]:
        """The namespaces holding elements at or below any of *prefixes*: a bisection per
        prefix, whatever the number of namespaces elsewhere."""
        return namespaces_under(self._sorted_namespaces, prefixes)

    def holds_dimension(self, dim: int) -> bool:
        """Whether any indexed vector has *dim* dimensions, or none has any (an empty index
        says nothing about dimensions). A scan: for empty results only."""
        dims = set(self._where.values())
        return not dims or dim in dims

    def _count(self, namespace: str, delta: int, moved: set[str]) -> None:
        """Count *delta* elements in *namespace*; add it to *moved* if it appears or goes."""
        before = self._per_namespace.get(namespace, 0)
        n = before + delta
        if n > 0:
            self._per_namespace[namespace] = n
        else:
            self._per_namespace.pop(namespace, None)
        if (before > 0) != (n > 0):
            moved.add(namespace)

    def _sort_namespaces(self, moved: set[str]) -> None:
        """Publish the ordered namespaces after *moved* appeared or went (a new list)."""
        if not moved:
            return
        if len(moved) > 64:  # many at once (a catch-up, a purge): one sort
            self._sorted_namespaces = sorted(self._per_namespace)
            return
        names = self._sorted_namespaces.copy()
        for ns in moved:
            at = bisect.bisect_left(names, ns)
            present = at < len(names) and names[at] == ns
            if ns in self._per_namespace and not present:
                names.insert(at, ns)
            elif ns not in self._per_namespace and present:
                del names[at]
        self._sorted_namespaces = names

    def apply(self, puts: Iterable[Element], removes: Iterable[tuple[str, str]]) -> None:
        """Add or replace elements and remove keys (under the lock)."""
        by_dim: dict[int, list[Element]] = {}
        moved: set[str] = set()
        with self.lock:
            for ns, key in removes:
                dim = self._where.pop((ns, key), None)
                if dim is not None:
                    self._graphs[dim].remove(ns, key)
                    self._count(ns, -1, moved)
            for e in puts:
                old = self._where.get((e.namespace, e.key))
                if old is None:
                    self._count(e.namespace, 1, moved)
                elif old != e.vector.shape[0]:
                    self._graphs[old].remove(e.namespace, e.key)
                self._where[(e.namespace, e.key)] = e.vector.shape[0]
                by_dim.setdefault(e.vector.shape[0], []).append(e)
            for dim, elements in by_dim.items():
                graph = self._graphs.get(dim)
                if graph is None:
                    graph = self._graphs[dim] = _Graph(dim, self._m, self._ef_construction)
                graph.put(elements)
            self._sort_namespaces(moved)

    def try_search(
        self, query: FloatArray, k: int, f: Filter, ef: int = 0
    ) -> list[IndexHit] | None:
        """Search now if no writer holds the index, else None (without waiting).

        A search takes well under a millisecond: callers on an event loop run it inline,
        because handing it to a thread costs up to the interpreter's 5 ms switch interval to
        get the answer back.
        """
        if not self.lock.try_read():
            return None
        try:
            return self._search(query, k, f, ef)
        finally:
            self.lock.release_read()

    def search(self, query: FloatArray, k: int, f: Filter, ef: int = 0) -> list[IndexHit]:
        """The k nearest elements passing *f*, nearest first, by cosine distance."""
        self.lock.read()
        try:
            return self._search(query, k, f, ef)
        finally:
            self.lock.release_read()

    def _search(self, query: FloatArray, k: int, f: Filter, ef: int) -> list[IndexHit]:
        graph = self._graphs.get(query.shape[0])
        if graph is None or not graph.alive_count:
            return []
        q = normalize(query)
        ef = ef or self.ef_search
        if graph.admits_all(f):
            if graph.alive_count * graph.dim <= self.exact_limit:
                alive = np.flatnonzero(graph.alive[: graph.next_label])
                return self._hits(graph, *self._exact(graph, alive, q, k))
            return self._hits(graph, *self._knn(graph, q, min(k, graph.alive_count), ef))
        few = graph.few_passing(f)
        if few is not None:
            return self._search_few(graph, few, q, k, ef)
        mask = graph.mask(f)
        allowed = int(mask.sum())
        if allowed == 0:
            return []
        k = min(k, allowed)
        if allowed * graph.dim <= self.exact_limit:
            return self._hits(graph, *self._exact(graph, np.flatnonzero(mask), q, k))
        if 2 * allowed >= graph.alive_count:
            # Most elements pass: ask the graph for enough more neighbours that k of them
            # pass (twice the expected number), and drop the refused ones in bulk.
            wide = min(graph.alive_count, math.ceil(2 * k * graph.alive_count / allowed))
            labels, distances = self._knn(graph, q, wide, max(ef, wide))
            passing = mask[labels]
            if int(passing.sum()) >= k:
                return self._hits(graph, labels[passing][:k], distances[passing][:k])
        return self._hits(graph, *self._knn(graph, q, k, ef, mask))

    def _search_few(
        self, graph: _Graph, labels: npt.NDArray[np.int64], q: FloatArray, k: int, ef: int
    ) -> list[IndexHit]:
        """The k nearest of *labels* (the few that pass the filter)."""
        if not len(labels):
            return []
        k = min(k, len(labels))
        if len(labels) * graph.dim <= self.exact_limit:
            return self._hits(graph, *self._exact(graph, labels, q, k))
        mask = np.zeros(graph.next_label, dtype=bool)
        mask[labels] = True
        return self._hits(graph, *self._knn(graph, q, k, ef, mask))

    @staticmethod
    def _exact(
        graph: _Graph, labels: npt.NDArray[np.int64], q: FloatArray, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        k = min(k, len(labels))
        dist = 1.0 - graph.vectors[labels] @ q
        top = np.argpartition(dist, k - 1)[:k] if k < len(labels) else np.arange(len(labels))
        top = top[np.argsort(dist[top])]
        return labels[top], dist[top]

    def _knn(
        self,
        graph: _Graph,
        q: FloatArray,
        k: int,
        ef: int,
        mask: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        # ef is the graph's state, not the query's: readers set it and query under one short
        # lock (a native call), so concurrent searches keep their own ef.
        with self._query_lock:
            graph.hnsw.set_ef(max(ef, k))
            ids, dists = graph.hnsw.knn_query(
                q,
                k=k,
                num_threads=1,
                filter=None if mask is None else (lambda label: bool(mask[label])),
            )
        return ids[0].astype(np.int64), dists[0]

    @staticmethod
    def _hits(
        graph: _Graph, labels: npt.NDArray[np.int64], distances: npt.NDArray[np.float32]
    ) -> list[IndexHit]:
        keys = graph.keys
        new = tuple.__new__  # IndexHit's own __new__ is a Python call: 10 hits 10 -> 4 us
        return [
            new(IndexHit, (*key, distance, revision, timed))
            for label, distance, revision, timed in zip(
                labels.tolist(),
                distances.tolist(),
                graph.revision[labels].tolist(),
                graph.timed[labels].tolist(),
                strict=True,
            )
            if (key := keys[label]) is not None
        ]

    # -- snapshots ------------------------------------------------------------------------

    def save(self, folder: Path, identity: str) -> None:
        """Write the index and what it reflects to *folder* (atomically replaced)."""
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        with self.lock:
            meta: dict[str, Any] = {
                "format": SNAPSHOT_FORMAT,
                "identity": identity,
                "cursors": dict(self.cursors),
                "graphs": {},
            }
            for dim, g in self._graphs.items():
                g.hnsw.save_index(str(tmp / f"hnsw-{dim}.bin"))
                state = {k: v for k, v in vars(g).items() if k not in ("hnsw", "ns_labels")}
                meta["graphs"][dim] = state
            meta["where"] = dict(self._where)
        with open(tmp / "meta.pickle", "wb") as fh:
            pickle.dump(meta, fh, protocol=pickle.HIGHEST_PROTOCOL)
        if folder.exists():
            old = folder.with_name(folder.name + ".old")
            folder.rename(old)
            tmp.rename(folder)
            for p in old.iterdir():
                p.unlink()
            old.rmdir()
        else:
            tmp.rename(folder)

    def load(self, folder: Path, identity: str) -> bool:
        """Load a snapshot of this database; False if there is none (or it is another's)."""
        meta_path = folder / "meta.pickle"
        if not meta_path.exists():
            return False
        with open(meta_path, "rb") as fh:
            meta = pickle.load(fh)
        if meta.get("identity") != identity:
            logger.warning("index snapshot in %s is of another database; rebuilding", folder)
            return False
        if meta.get("format") != SNAPSHOT_FORMAT:
            logger.warning("index snapshot in %s is of an older coordd; rebuilding", folder)
            return False
        graphs: dict[int, _Graph] = {}
        for dim, state in meta["graphs"].items():
            g = _Graph.__new__(_Graph)
            vars(g).update(state)
            g.index_labels()
            g.hnsw = hnswlib.Index(space="cosine", dim=dim)
            g.hnsw.load_index(
                str(folder / f"hnsw-{dim}.bin"), max_elements=g.capacity, allow_replace_deleted=True
            )
            graphs[dim] = g
        with self.lock:
            self._graphs = graphs
            self._where = meta["where"]
            self._per_namespace = {}
            for ns, _ in self._where:
                self._count(ns, 1, set())
            self._sorted_namespaces = sorted(self._per_namespace)
            self.cursors = meta["cursors"]
        return True
