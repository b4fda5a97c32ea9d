"""The in-process nearest-neighbour index: hnswlib, one graph per embedding dimension.

PostgreSQL holds every vector; this index is derived data. Each element carries its entry's
metadata in numpy arrays indexed by label, so a query's filters (namespaces the caller may read,
tier, tags, task, expiry, staleness) become one boolean mask built before ranking:

- mask selects few vectors (``exact_limit`` floats or fewer): exact cosine over just those,
  so a selective filter still returns k results whenever k entries match;
- mask selects everything alive: a plain native hnswlib query;
- otherwise: hnswlib with the mask as its filter (checked per candidate).

hnswlib is not safe for concurrent add and query, but queries may run together: a
readers-writer lock lets searches share the index and gives writers (adds, removes, snapshots)
it alone, held only around native calls (which release the GIL). Deleted elements are marked
deleted and their labels reused.
"""

from __future__ import annotations

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

from coordd.domain.models import SearchFilter as Filter

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


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
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.tags: list[frozenset[str]] = [frozenset()] * capacity
        self.tasks: list[str] = [""] * capacity
        self.keys: list[tuple[str, str] | None] = [None] * capacity
        self.ns_ids: dict[str, int] = {}

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
            self.alive[label] = True
            self.tier[label] = e.tier
            self.expire[label] = e.expire
            self.review[label] = e.review
            self.ns[label] = self.ns_ids.setdefault(e.namespace, len(self.ns_ids))
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
        self.alive[label] = False
        self.keys[label] = None
        self.free.append(label)

    def mask(self, f: Filter) -> npt.NDArray[np.bool_]:
        n = self.next_label
        wanted = [i for ns, i in self.ns_ids.items() if ns in f.namespaces]
        m = self.alive[:n] & np.isin(self.ns[:n], wanted) & (self.expire[:n] > f.now)
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
        ef_construction: int = 200,
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
        self.lock = ReadWriteLock()
        self._query_lock = threading.Lock()
        self.cursors: dict[str, int] = {}  # namespace -> revision reflected

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._where)

    def namespaces(self) -> set[str]:
        return set(self._per_namespace)

    def holds_dimension(self, dim: int) -> bool:
        """Whether any indexed vector has *dim* dimensions, or none has any (an empty index
        says nothing about dimensions). A scan: for empty results only."""
        dims = set(self._where.values())
        return not dims or dim in dims

    def _count(self, namespace: str, delta: int) -> None:
        n = self._per_namespace.get(namespace, 0) + delta
        if n > 0:
            self._per_namespace[namespace] = n
        else:
            self._per_namespace.pop(namespace, None)

    def apply(self, puts: Iterable[Element], removes: Iterable[tuple[str, str]]) -> None:
        """Add or replace elements and remove keys (under the lock)."""
        by_dim: dict[int, list[Element]] = {}
        with self.lock:
            for ns, key in removes:
                dim = self._where.pop((ns, key), None)
                if dim is not None:
                    self._graphs[dim].remove(ns, key)
                    self._count(ns, -1)
            for e in puts:
                old = self._where.get((e.namespace, e.key))
                if old is None:
                    self._count(e.namespace, 1)
                elif old != e.vector.shape[0]:
                    self._graphs[old].remove(e.namespace, e.key)
                self._where[(e.namespace, e.key)] = e.vector.shape[0]
                by_dim.setdefault(e.vector.shape[0], []).append(e)
            for dim, elements in by_dim.items():
                graph = self._graphs.get(dim)
                if graph is None:
                    graph = self._graphs[dim] = _Graph(dim, self._m, self._ef_construction)
                graph.put(elements)

    def try_search(
        self, query: FloatArray, k: int, f: Filter, ef: int = 0
    ) -> list[tuple[str, str, float]] | None:
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

    def search(
        self, query: FloatArray, k: int, f: Filter, ef: int = 0
    ) -> list[tuple[str, str, float]]:
        """The k nearest (namespace, key, cosine distance) among elements passing *f*."""
        self.lock.read()
        try:
            return self._search(query, k, f, ef)
        finally:
            self.lock.release_read()

    def _search(
        self, query: FloatArray, k: int, f: Filter, ef: int
    ) -> list[tuple[str, str, float]]:
        graph = self._graphs.get(query.shape[0])
        if graph is None:
            return []
        q = normalize(query)
        mask = graph.mask(f)
        allowed = int(mask.sum())
        if allowed == 0:
            return []
        k = min(k, allowed)
        if allowed * graph.dim <= self.exact_limit:
            labels = np.flatnonzero(mask)
            dist = 1.0 - graph.vectors[labels] @ q
            top = np.argpartition(dist, k - 1)[:k] if k < len(labels) else np.arange(len(labels))
            top = top[np.argsort(dist[top])]
            found = [(int(labels[i]), float(dist[i])) for i in top]
        else:
            everything = allowed == int(graph.alive[: graph.next_label].sum())
            # ef is the graph's state, not the query's: readers set it and query under one
            # short lock (a native call), so concurrent searches keep their own ef.
            with self._query_lock:
                graph.hnsw.set_ef(max(ef or self.ef_search, k))
                ids, dists = graph.hnsw.knn_query(
                    q,
                    k=k,
                    num_threads=1,
                    filter=None if everything else (lambda label: bool(mask[label])),
                )
            found = [(int(i), float(d)) for i, d in zip(ids[0], dists[0], strict=True)]
        out = []
        for label, distance in found:
            key = graph.keys[label]
            if key is not None:
                out.append((key[0], key[1], distance))
        return out

    # -- snapshots ------------------------------------------------------------------------

    def save(self, folder: Path, identity: str) -> None:
        """Write the index and what it reflects to *folder* (atomically replaced)."""
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        with self.lock:
            meta: dict[str, Any] = {
                "identity": identity,
                "cursors": dict(self.cursors),
                "graphs": {},
            }
            for dim, g in self._graphs.items():
                g.hnsw.save_index(str(tmp / f"hnsw-{dim}.bin"))
                state = {k: v for k, v in vars(g).items() if k != "hnsw"}
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
        graphs: dict[int, _Graph] = {}
        for dim, state in meta["graphs"].items():
            g = _Graph.__new__(_Graph)
            vars(g).update(state)
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
                self._count(ns, 1)
            self.cursors = meta["cursors"]
        return True
