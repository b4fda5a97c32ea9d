"""Claims: coordd AcquireClaim+ReleaseClaim vs the seed's raw claim SQL through psycopg.

What an agent would do without coordd (the seed article): one ``INSERT ... ON CONFLICT`` that
also takes an expired claim, one ``DELETE`` to release, on the same PostgreSQL. Both sides use
the same asyncio load generator with N concurrent clients (each its own connection or channel),
random uncontended resources, and run interleaved A/B/A/B in one process run; the daemon runs
as its own process, as deployed.

    python -m bench claims [--seconds 8] [--reps 2] [--clients 1,32] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import psycopg

from bench._harness import (
    Stats,
    log,
    machine,
    median,
    postgres,
    print_table,
    result_line,
    setup_logging,
)
from bench._procs import daemon_process

SEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_claims (
    resource_id text PRIMARY KEY,
    agent_id text NOT NULL,
    claimed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
)
"""
SEED_CLAIM = """
INSERT INTO agent_claims (agent_id, resource_id, claimed_at, expires_at)
VALUES (%s, %s, now(), now() + interval '5 minutes')
ON CONFLICT (resource_id) DO UPDATE
SET agent_id = EXCLUDED.agent_id, claimed_at = EXCLUDED.claimed_at,
    expires_at = EXCLUDED.expires_at
WHERE agent_claims.expires_at < now()
RETURNING agent_id
"""
SEED_RELEASE = "DELETE FROM agent_claims WHERE agent_id = %s AND resource_id = %s"


async def _run_clients(n: int, seconds: float, make_worker) -> tuple[Stats, Stats]:  # type: ignore[no-untyped-def]
    """Run *n* workers for *seconds*; return (cycle stats, per-operation stats)."""
    cycles: list[float] = []
    ops: list[float] = []
    stop_at = time.perf_counter() + seconds
    workers = [await make_worker(i) for i in range(n)]

    async def loop(cycle) -> None:  # type: ignore[no-untyped-def]
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            t1 = await cycle()
            t2 = time.perf_counter()
            cycles.append(t2 - t0)
            ops.extend((t1 - t0, t2 - t1))

    started = time.perf_counter()
    await asyncio.gather(*(loop(w.cycle) for w in workers))
    elapsed = time.perf_counter() - started
    for w in workers:
        await w.close()
    return Stats(len(cycles), elapsed, cycles), Stats(len(ops), elapsed, ops)


class RawWorker:
    """One agent doing the seed's SQL on its own connection (autocommit, prepared)."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]], agent: str) -> None:
        self.conn = conn
        self.agent = agent
        self.rng = random.Random(agent)

    @classmethod
    async def create(cls, dsn: str, i: int) -> RawWorker:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)
        return cls(conn, f"raw-{i}-{uuid.uuid4().hex[:6]}")

    async def cycle(self) -> float:
        resource = f"res-{self.rng.getrandbits(48)}"
        cur = await self.conn.execute(SEED_CLAIM, (self.agent, resource))
        assert await cur.fetchone() is not None, "uncontended claim must succeed"
        t1 = time.perf_counter()
        await self.conn.execute(SEED_RELEASE, (self.agent, resource))
        return t1

    async def close(self) -> None:
        await self.conn.close()


class CoorddWorker:
    """One agent using the coordd client (its own channel)."""

    def __init__(self, client, agent: str) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.rng = random.Random(agent)

    @classmethod
    async def create(cls, address: str, i: int) -> CoorddWorker:
        from coordd_client import AsyncClient

        agent = f"agent-{i}-{uuid.uuid4().hex[:6]}"
        return cls(await AsyncClient.connect(address, agent_id=agent), agent)

    async def cycle(self) -> float:
        resource = f"res-{self.rng.getrandbits(48)}"
        got = await self.client.claims.acquire("bench/claims", resource, ttl=300)
        assert got.acquired and got.claim is not None, "uncontended claim must succeed"
        t1 = time.perf_counter()
        await self.client.claims.release("bench/claims", resource, got.claim.fencing_token)
        return t1

    async def close(self) -> None:
        await self.client.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench claims", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured run")
    parser.add_argument("--reps", type=int, default=2, help="A/B repetitions (interleaved)")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrency levels")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 rep (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.reps = 2.0, 1
    levels = [int(x) for x in args.clients.split(",")]
    setup_logging()
    print(f"machine: {machine()}")
    with postgres() as dsn, daemon_process(dsn) as address:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SEED_SCHEMA)
        results: dict[tuple[str, int], list[tuple[Stats, Stats]]] = {}
        for n in levels:
            for rep in range(args.reps):
                for side in ("raw", "coordd"):
                    log.info(
                        "%s, %d client(s), rep %d/%d (%.0fs)",
                        side,
                        n,
                        rep + 1,
                        args.reps,
                        args.seconds,
                    )
                    if side == "raw":
                        make = lambda i: RawWorker.create(dsn, i)  # noqa: E731
                    else:
                        make = lambda i: CoorddWorker.create(address, i)  # noqa: E731
                    res = asyncio.run(_run_clients(n, args.seconds, make))
                    results.setdefault((side, n), []).append(res)

    rows = []
    figures: dict[str, float] = {}
    for n in levels:
        raw = results[("raw", n)]
        co = results[("coordd", n)]
        raw_tp = median([c.throughput for c, _ in raw])
        co_tp = median([c.throughput for c, _ in co])
        raw_p50 = median([o.p50 for _, o in raw])
        co_p50 = median([o.p50 for _, o in co])
        raw_p99 = median([o.p99 for _, o in raw])
        co_p99 = median([o.p99 for _, o in co])
        rows.append([n, "raw SQL", raw_tp, raw_p50, raw_p99, ""])
        rows.append([n, "coordd", co_tp, co_p50, co_p99, f"{co_tp / raw_tp:.2f}x"])
        figures[f"ratio_c{n}"] = co_tp / raw_tp
        if n == levels[0]:
            figures["p50_added_ms"] = co_p50 - raw_p50
            figures["p99_added_ms"] = co_p99 - raw_p99
    print_table(
        "acquire+release cycles/s; per-operation latency (ms); median of reps",
        ["clients", "side", "cycles/s", "op p50", "op p99", "ratio"],
        rows,
    )
    print(f"(added latency is per operation, at {levels[0]} client(s))")
    print(result_line("claims", **figures))
    return 0
