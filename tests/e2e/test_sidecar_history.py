"""History checker: session guarantees through caching sidecars, across daemon replicas.

Four agents, each behind its own ``coordd-sidecar`` process, two sidecars per daemon replica,
both replicas on one PostgreSQL. They write and read a few shared keys concurrently and hand
context to each other. Every read is recorded with the agent's session floor for that
namespace just before it (what the agent had written, read, or learned from a context entry's
sender); afterwards every read is checked against the complete write history:

    a read of key k that returned version v under floor S is a violation if some write to k
    has a revision r with v < r <= S

(read-your-writes, monotonic reads and causality through context all reduce to this, because
the floor is the session's version vector). A negative control runs the same workload with
the sidecars' version checks disabled and must find violations: the checker can fail.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from coordd_client import AsyncClient
from tests.fix_sidecar import SidecarProcess, launch_sidecar

NAMESPACES = ("acme/hist/a", "acme/hist/b")
KEYS = ("k0", "k1", "k2")
INBOX = "acme/hist/ctx"
AGENTS = 4
OPS = 60


@dataclass
class History:
    writes: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    reads: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    """(agent, namespace, key, floor before the read, version returned (0 = absent))."""
    handoffs_read: int = 0
    cache_hits: int = 0

    def violations(self) -> list[str]:
        found = []
        for agent, ns, key, floor, version in self.reads:
            missed = [r for r in self.writes.get((ns, key), []) if version < r <= floor]
            if missed:
                found.append(f"{agent} read {ns}/{key}@{version} under floor {floor}: {missed}")
        return found


async def run_agent(me: int, client: AsyncClient, history: History, seed: int) -> None:
    rng = random.Random(seed * 100 + me)
    agent = f"agent-{me}"

    async def read(ns: str, key: str) -> None:
        floor = client.session.revision(ns)
        entry = await client.memory.get(ns, key)
        history.reads.append((agent, ns, key, floor, entry.revision if entry else 0))

    for n in range(OPS):
        ns, key = rng.choice(NAMESPACES), rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.45:  # read, write, read again: the pattern read-your-writes is about
            await read(ns, key)
            entry = await client.memory.put(ns, key, {"by": agent, "n": n}, tier="episodic")
            history.writes.setdefault((ns, key), []).append(entry.revision)
            await read(ns, key)
        elif roll < 0.8:
            await read(ns, key)
        elif roll < 0.9:  # hand off: "I wrote things; read them"
            to = rng.choice([i for i in range(AGENTS) if i != me])
            await client.context.post(
                INBOX, {"from": agent}, to_agent_id=f"agent-{to}", context_type="handoff"
            )
        else:  # take hand-offs, then read what their senders wrote
            entries = await client.context.inbox(INBOX)
            if entries:
                history.handoffs_read += len(entries)
                await client.context.ack(INBOX, [e.id for e in entries])
                for ns2 in NAMESPACES:
                    for key2 in KEYS:
                        await read(ns2, key2)


async def workload(upstreams: list[str], *flags: str, seed: int) -> History:
    procs: list[SidecarProcess] = []
    clients: list[AsyncClient] = []
    history = History()
    try:
        procs = [
            launch_sidecar(upstreams[i % len(upstreams)], f"agent-{i}", *flags)
            for i in range(AGENTS)
        ]
        for p in procs:
            p.wait_ready()
        clients = [
            await AsyncClient.connect(p.address, agent_id=f"agent-{i}", role="worker")
            for i, p in enumerate(procs)
        ]
        await asyncio.gather(*(run_agent(i, c, history, seed) for i, c in enumerate(clients)))
    finally:
        for c in clients:
            await c.close()
        for p in procs:
            p.stop()
            history.cache_hits += p.stats.get("hits", 0)
    return history


async def test_no_session_violations_through_sidecars_on_two_replicas(
    daemon: Any, start_daemon: Any
) -> None:
    other = start_daemon()
    history = await workload([daemon.address, other.address], seed=1)
    assert sum(len(w) for w in history.writes.values()) > 50
    assert len(history.reads) > 150 and history.handoffs_read > 0
    assert history.cache_hits > 20  # the caches answered: the check is not vacuous
    assert history.violations() == []
    print(f"reads={len(history.reads)} hits={history.cache_hits}")


async def test_negative_control_without_version_checks_finds_violations(
    daemon: Any, start_daemon: Any
) -> None:
    other = start_daemon()
    history = await workload(
        [daemon.address, other.address], "--unsafe-skip-version-checks", seed=1
    )
    assert history.cache_hits > 20
    assert history.violations(), "the checker found nothing with version checks off"
    print(f"violations={len(history.violations())} of reads={len(history.reads)}")
