"""A search's cost against the number of namespaces the index holds, in process.

An agent searches its own prefix (``agents/a0``: ten namespaces, one per task, ten entries
each) while the index holds N other namespaces elsewhere (``agents/aI/tJ``, ``--entries`` each),
under a token-mode policy (``agents/{agent}/**``: every namespace a real decision). Measured:
CPU per ``MemorySearch.search_refs`` (the domain's search: readable namespaces, the index's
filter and ranking; no gRPC, no PostgreSQL, nothing hydrated), with none and with N others,
and with the same number of elements in a few namespaces, to tell namespaces from elements.

Then the same through a daemon process on a private PostgreSQL (unless ``--no-daemon``): the
daemon's CPU per ``search_refs`` at one client, with the agent's namespaces only, and again
after the other namespaces are written.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time

import numpy as np

from bench._cpu import process_cpu_s
from bench._harness import postgres
from bench._procs import daemon_process
from coordd.domain.access import Grant, Operation, Policy
from coordd.domain.memory import IndexHit, MemoryEntry, MemorySearch, SearchQuery
from coordd.domain.models import Identity
from coordd.storage.vector_index import Element, VectorIndex, normalize
from coordd_client import AsyncClient, MemoryPut

DIM = 64
OWN = [f"agents/a0/t{t}" for t in range(10)]


class _Indexer:
    """The daemon's indexer as the search sees it: caught up, no clock offset."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.clock_offset_s = 0.0

    async def ensure(self, minimum: dict[str, int], wait_s: float) -> None:
        return None


class _NoEntries:
    async def hits(
        self, refs: list[tuple[str, str]]
    ) -> tuple[float, dict[tuple[str, str], MemoryEntry]]:
        raise AssertionError("untimed hits in the ref view are never read from PostgreSQL")


def _index(others: int, per: int, rng: np.random.Generator) -> VectorIndex:
    def element(ns: str, key: str) -> Element:
        vector = normalize(rng.standard_normal(DIM).astype(np.float32))
        return Element(ns, key, 0, frozenset(), "", math.inf, math.inf, vector, 1)

    index = VectorIndex()
    index.apply([element(ns, f"k{i}") for ns in OWN for i in range(10)], [])
    rest = [
        element(f"agents/a{1 + n // 10}/t{n % 10}", f"k{j}")
        for n in range(others)
        for j in range(per)
    ]
    for i in range(0, len(rest), 1000):
        index.apply(rest[i : i + 1000], [])
    return index


async def _us_per_search(others: int, per: int, searches: int, reps: int) -> float:
    rng = np.random.default_rng(1)
    grant = Grant(
        patterns=("agents/{agent}/**",), operations=frozenset({Operation.READ}), role="agent"
    )
    search = MemorySearch(_Indexer(_index(others, per, rng)), _NoEntries(), Policy(grants=(grant,)))
    who = Identity(agent_id="a0", role="agent")
    query = SearchQuery(
        embedding=rng.standard_normal(DIM).astype("<f4").tobytes(),
        dim=DIM,
        k=10,
        namespace_prefixes=["agents/a0"],
        tier=None,
        tags=[],
        task_id="",
        include_stale=False,
        min_revisions={},
        refs_only=True,
    )
    _, hits = await search.search_refs(who, query, 0.0)
    assert len(hits) == 10 and all(isinstance(h, IndexHit) and h.namespace in OWN for h in hits)
    times = []
    for _ in range(reps):
        start = time.process_time()
        for _ in range(searches):
            await search.search_refs(who, query, 0.0)
        times.append((time.process_time() - start) / searches * 1e6)
    return sorted(times)[len(times) // 2]


async def _write(address: str, namespaces: list[str], entries: int) -> None:
    rng = np.random.default_rng(2)
    writes = [
        MemoryPut(namespace=ns, key=f"k{j}", value=j, embedding=rng.standard_normal(DIM).tolist())
        for ns in namespaces
        for j in range(entries)
    ]
    async with await AsyncClient.connect(address, agent_id="loader") as client:
        for i in range(0, len(writes), 500):
            await client.memory.put_many(writes[i : i + 500])
        # Read through this client's session: the index reflects every write above.
        await client.memory.search_refs(writes[-1].embedding or [], 1, writes[-1].namespace)


async def _daemon_us_per_search(address: str, pid: int, seconds: float) -> tuple[float, float]:
    """Searches per second and the daemon's CPU µs per search, one client, after warm-up."""
    query = np.random.default_rng(3).standard_normal(DIM).tolist()
    async with await AsyncClient.connect(address, agent_id="a0") as client:
        for _ in range(200):
            hits = await client.memory.search_refs(query, 10, "agents/a0")
        assert len(hits) == 10 and all(h.namespace in OWN for h in hits)
        cpu, start, searches = process_cpu_s(pid), time.monotonic(), 0
        while time.monotonic() - start < seconds:
            await client.memory.search_refs(query, 10, "agents/a0")
            searches += 1
        elapsed = time.monotonic() - start
        return searches / elapsed, (process_cpu_s(pid) - cpu) / searches * 1e6


def _through_daemon(others: list[str], entries: int, seconds: float) -> tuple[float, float]:
    with postgres() as dsn, daemon_process(dsn) as d:
        asyncio.run(_write(d.address, OWN, 10))
        print("| daemon, 1 client | namespaces | searches/s | daemon µs CPU/search |")
        print("|---|---:|---:|---:|")
        figures = []
        for name, more in (("own only", []), ("+ others", others)):
            if more:
                asyncio.run(_write(d.address, more, entries))
            qps, us = asyncio.run(_daemon_us_per_search(d.address, d.pid, seconds))
            figures.append(us)
            print(f"| {name} | {len(OWN) + len(more)} | {qps:.0f} | {us:.0f} |")
        return figures[0], figures[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench namespaces", description=__doc__)
    parser.add_argument("--namespaces", type=int, default=5000, help="other namespaces held")
    parser.add_argument("--entries", type=int, default=1, help="entries per other namespace")
    parser.add_argument("--searches", type=int, default=3000, help="searches per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (the median is kept)")
    parser.add_argument("--seconds", type=float, default=8, help="per daemon measurement")
    parser.add_argument("--no-daemon", action="store_true", help="in process only")
    parser.add_argument(
        "--quick", action="store_true", help="500 namespaces, 300 searches, 2 s per daemon run"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.namespaces, args.searches, args.seconds = 500, 300, 2
    n, per = args.namespaces, args.entries
    few_ns = 5  # as many elements as the many-namespace case, in a handful of namespaces
    cases = [
        ("own only", 0, 1),
        ("+ others", n, per),
        ("+ as many elements", few_ns, n * per // few_ns),
    ]
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| case | namespaces | elements | µs/search (CPU, median) |\n|---|---:|---:|---:|")
    figures = []
    for name, others, each in cases:
        us = asyncio.run(_us_per_search(others, each, args.searches, args.reps))
        figures.append(us)
        print(f"| {name} | {len(OWN) + others} | {100 + others * each} | {us:.1f} |")
    print(f"load average {os.getloadavg()[0]:.2f}")
    own, many, elements = figures
    result = (
        f"RESULT namespaces us_own={own:.1f} us_many_namespaces={many:.1f} "
        f"us_many_elements={elements:.1f} namespace_growth={many / own:.2f} "
    )
    if not args.no_daemon:
        others = [f"agents/a{1 + i // 10}/t{i % 10}" for i in range(n)]
        d_own, d_many = _through_daemon(others, per, args.seconds)
        print(f"load average {os.getloadavg()[0]:.2f}")
        result += f"daemon_us_own={d_own:.0f} daemon_us_many_namespaces={d_many:.0f} "
    print(result + f"namespaces={n} entries={per}")
    return 0
