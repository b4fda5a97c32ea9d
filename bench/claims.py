"""Claims: coordd AcquireClaim+ReleaseClaim vs the seed's raw claim SQL through psycopg.

What an agent would do without coordd (the seed article): one ``INSERT ... ON CONFLICT`` that
also takes an expired claim, one ``DELETE`` to release, on the same PostgreSQL. Both sides use
the same asyncio load generator with N concurrent clients (each its own connection or channel),
random uncontended resources, and run interleaved A/B/A/B in one process run; the daemon runs
as its own process, as deployed. A further coordd side has all N callers share one client (one
session stream), as concurrent tasks of one agent process would: there, requests and answers
ready together share session-stream messages.

    python -m bench claims [--seconds 8] [--reps 2] [--clients 1,32] [--quick]
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench._cli import ab_parser, client_levels, scenario_args
from bench._cpu import CpuWindow, postmaster_pid, rss_mb
from bench._echo import EchoRun, echo_server, run_echo
from bench._harness import (
    Stats,
    log,
    machine,
    median,
    postgres,
    print_table,
    result_line,
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


@dataclass
class Run:
    """One measured run: cycle stats, per-operation stats and the CPU used meanwhile."""

    cycles: Stats
    ops: Stats
    cpu: CpuWindow
    per_message: tuple[float, float] | None = None
    """Session stream: requests per message sent, answers per message received."""


async def run_clients(n: int, seconds: float, make_worker, cpu: CpuWindow) -> Run:  # type: ignore[no-untyped-def]
    """Run *n* workers for *seconds* inside the CPU window *cpu*."""
    cycles: list[float] = []
    ops: list[float] = []
    workers = [await make_worker(i) for i in range(n)]

    async def loop(cycle) -> None:  # type: ignore[no-untyped-def]
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            t1 = await cycle()
            t2 = time.perf_counter()
            cycles.append(t2 - t0)
            ops.extend((t1 - t0, t2 - t1))

    with cpu:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(loop(w.cycle) for w in workers))
    channels = {id(c): c for w in workers if (c := getattr(w, "session_channel", None))}
    per_message = None
    if channels:
        sums = [sum(getattr(c.stats, k) for c in channels.values()) for k in _STREAM_COUNTS]
        if sums[0] and sums[2]:
            per_message = (sums[1] / sums[0], sums[3] / sums[2])
    for w in workers:
        await w.close()
    return Run(
        Stats(len(cycles), cpu.seconds, cycles), Stats(len(ops), cpu.seconds, ops), cpu, per_message
    )


SIDES = (
    "raw",
    "coordd",
    "coordd-unary",
    "coordd-shared",
    "echo",
    "echo-stream",
    "echo-matched",
    "echo-drain",
)
"""Each rep runs these in turn. "echo" and "echo-stream" are bare grpc.aio (the floor);
"echo-matched" is the unary echo paced to the call rate the daemon served unary calls at in
the same rep (the echo alone runs 4-5x faster, and gRPC's CPU per call falls as more calls
share each wake-up); "echo-drain" is the stream echo as coordd runs gRPC: the wake drain on
both ends (coordd_client._grpc_wakeups), the server on coordd serve's I/O engine."""
_STREAM_COUNTS = ("messages_sent", "requests_sent", "messages_received", "answers_received")


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
    """One agent using the coordd client (its own channel, unless *shared*)."""

    def __init__(self, client, agent: str, owner: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.rng = random.Random(agent)
        self.owner = owner
        channel = client._core.channel
        self.session_channel = channel if hasattr(channel, "stats") else None

    ttl = 300

    @classmethod
    async def create(
        cls, address: str, i: int, ttl: float = 300, session_stream: bool = True
    ) -> CoorddWorker:
        from coordd_client import AsyncClient

        agent = f"agent-{i}-{uuid.uuid4().hex[:6]}"
        client = await AsyncClient.connect(address, agent_id=agent, session_stream=session_stream)
        worker = cls(client, agent)
        worker.ttl = ttl
        return worker

    async def cycle(self) -> float:
        resource = f"res-{self.rng.getrandbits(48)}"
        got = await self.client.claims.acquire("bench/claims", resource, ttl=self.ttl)
        assert got.acquired and got.claim is not None, "uncontended claim must succeed"
        t1 = time.perf_counter()
        await self.client.claims.release("bench/claims", resource, got.claim.fencing_token)
        return t1

    async def close(self) -> None:
        if self.owner:
            await self.client.close()

    @classmethod
    def shared(cls, address: str) -> Callable[[int], Awaitable[CoorddWorker]]:
        """A factory of workers that all use one client (one channel, one session stream):
        concurrent callers in one process, such as an agent's parallel tools."""
        clients: list[Any] = []

        async def make(i: int) -> CoorddWorker:
            from coordd_client import AsyncClient

            if not clients:
                agent = f"shared-{uuid.uuid4().hex[:6]}"
                clients.append(await AsyncClient.connect(address, agent_id=agent))
            return cls(clients[0], f"shared-{i}-{uuid.uuid4().hex[:6]}", owner=i == 0)

        return make


def _per_message(runs: list[Run]) -> str:
    """Requests per message sent / answers per message received on the session stream."""
    per = [r.per_message for r in runs if r.per_message]
    if not per:
        return ""
    return f"{median([p[0] for p in per]):.2f}/{median([p[1] for p in per]):.2f}"


def main(argv: list[str]) -> int:
    parser = ab_parser(
        "claims", __doc__, seconds=8.0, reps=2, clients="1,32", quick="2 s runs, 1 rep (smoke test)"
    )
    args = scenario_args(parser, argv, seconds=2.0, reps=1)
    levels = client_levels(args)
    print(f"machine: {machine()}")
    results: dict[tuple[str, int], list[Run]] = {}
    echoes: dict[tuple[str, int], list[EchoRun]] = {}
    with (
        postgres() as dsn,
        daemon_process(dsn) as daemon,
        echo_server() as echo,
        echo_server(wake_drain=True) as echo_drained,
    ):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SEED_SCHEMA)
        pg = postmaster_pid(dsn)
        trees = {"postgres": pg} if pg else {}
        for n in levels:
            for rep in range(args.reps):
                for side in SIDES:
                    log.info("%s, %d client(s), rep %d/%d", side, n, rep + 1, args.reps)
                    if side.startswith("echo"):
                        rate = None
                        if side == "echo-matched":
                            unary = results[("coordd-unary", n)][-1]
                            rate = unary.ops.ops / unary.cpu.seconds
                        drain = side == "echo-drain"
                        run = asyncio.run(
                            run_echo(
                                echo_drained if drain else echo,
                                n,
                                args.seconds / 2,
                                streamed=side in ("echo-stream", "echo-drain"),
                                rate=rate,
                                wake_drain=drain,
                            )
                        )
                        echoes.setdefault((side, n), []).append(run)
                        continue
                    if side == "raw":
                        make = lambda i: RawWorker.create(dsn, i)  # noqa: E731
                        cpu = CpuWindow(trees=trees)
                    elif side == "coordd-shared":
                        make = CoorddWorker.shared(daemon.address)
                        cpu = CpuWindow({"daemon": daemon.pid}, trees=trees)
                    else:
                        streamed = side == "coordd"
                        make = lambda i, s=streamed: CoorddWorker.create(  # noqa: E731
                            daemon.address, i, session_stream=s
                        )
                        cpu = CpuWindow({"daemon": daemon.pid}, trees=trees)
                    res = asyncio.run(run_clients(n, args.seconds, make, cpu))
                    results.setdefault((side, n), []).append(res)

        daemon_rss, echo_rss = rss_mb(daemon.pid), rss_mb(echo.pid)
    rows = []
    floor_rows = []
    figures: dict[str, float] = {}
    for n in levels:
        raw = results[("raw", n)]
        raw_tp = median([r.cycles.throughput for r in raw])
        rows.append(
            [
                n,
                "raw SQL",
                raw_tp,
                median([r.ops.p50 for r in raw]),
                median([r.ops.p99 for r in raw]),
                "",
                "",
                median([r.cpu.per_call_us("client", r.ops.ops) for r in raw]),
                median([r.cpu.per_call_us("postgres", r.ops.ops) for r in raw]),
                "",
                median([r.cpu.load for r in raw]),
            ]
        )
        cpu: dict[str, dict[str, float]] = {}
        for side, label in (
            ("coordd", "coordd session"),
            ("coordd-unary", "coordd unary"),
            ("coordd-shared", "coordd, one client"),
        ):
            co = results[(side, n)]
            tp = median([r.cycles.throughput for r in co])
            # Per RPC (two per cycle) for coordd, per statement (two per cycle) for raw SQL.
            cpu[side] = {
                who: median([r.cpu.per_call_us(who, r.ops.ops) for r in co])
                for who in ("daemon", "client", "postgres")
            }
            rows.append(
                [
                    n,
                    label,
                    tp,
                    median([r.ops.p50 for r in co]),
                    median([r.ops.p99 for r in co]),
                    f"{tp / raw_tp:.2f}x",
                    cpu[side]["daemon"],
                    cpu[side]["client"],
                    cpu[side]["postgres"],
                    _per_message(co),
                    median([r.cpu.load for r in co]),
                ]
            )
            suffix = {"coordd": "", "coordd-unary": "_unary", "coordd-shared": "_shared"}[side]
            figures[f"ratio{suffix}_c{n}"] = tp / raw_tp
            if n == levels[0] and side == "coordd":
                figures["p50_added_ms"] = median([r.ops.p50 for r in co]) - median(
                    [r.ops.p50 for r in raw]
                )
                figures["p99_added_ms"] = median([r.ops.p99 for r in co]) - median(
                    [r.ops.p99 for r in raw]
                )
        for side, label in (
            ("echo", "echo unary"),
            ("echo-stream", "echo stream msg"),
            ("echo-matched", "echo unary, daemon's rate"),
            ("echo-drain", "echo stream msg, as coordd runs gRPC"),
        ):
            runs = echoes[(side, n)]
            floor_rows.append(
                [
                    n,
                    label,
                    median([r.rate for r in runs]),
                    median([r.server_us for r in runs]),
                    median([r.client_us for r in runs]),
                    median([r.window.load for r in runs]),
                ]
            )
        if n == levels[-1]:
            echo_us = median([r.server_us for r in echoes[("echo", n)]])
            figures["daemon_cpu_us"] = cpu["coordd"]["daemon"]
            figures["echo_cpu_us"] = echo_us
            figures["unary_overhead"] = cpu["coordd-unary"]["daemon"] / echo_us
            # The same ratio against the echo paced to the daemon's unary call rate: what the
            # daemon adds above gRPC's per-call cost at the rate it actually serves.
            matched_us = median([r.server_us for r in echoes[("echo-matched", n)]])
            figures["echo_cpu_us_matched"] = matched_us
            figures["unary_overhead_matched"] = cpu["coordd-unary"]["daemon"] / matched_us
            figures["client_cpu_us"] = cpu["coordd"]["client"]
            figures["daemon_unary_cpu_us"] = cpu["coordd-unary"]["daemon"]
            figures["client_unary_cpu_us"] = cpu["coordd-unary"]["client"]
            figures["stream_echo_cpu_us"] = median(
                [r.server_us for r in echoes[("echo-stream", n)]]
            )
            drained = echoes[("echo-drain", n)]
            figures["stream_echo_drain_cpu_us"] = median([r.server_us for r in drained])
            figures["stream_echo_client_us"] = median(
                [r.client_us for r in echoes[("echo-stream", n)]]
            )
            figures["stream_echo_drain_client_us"] = median([r.client_us for r in drained])
            figures["pg_cpu_us"] = cpu["coordd"]["postgres"]
            figures["daemon_shared_cpu_us"] = cpu["coordd-shared"]["daemon"]
            figures["client_shared_cpu_us"] = cpu["coordd-shared"]["client"]
            for side, suffix in (("coordd", ""), ("coordd-shared", "_shared")):
                per = [r.per_message for r in results[(side, n)] if r.per_message]
                if per:
                    figures[f"req_per_msg{suffix}"] = median([p[0] for p in per])
                    figures[f"ans_per_msg{suffix}"] = median([p[1] for p in per])
    print_table(
        "acquire+release cycles/s; per-operation latency (ms); CPU per call (us); median of reps",
        [
            "clients",
            "side",
            "cycles/s",
            "op p50",
            "op p99",
            "ratio",
            "daemon us",
            "client us",
            "pg us",
            "req/msg",
            "load",
        ],
        rows,
    )
    print_table(
        "the floor: bare grpc.aio echo, same load generator (CPU us per call or message);"
        " 'as coordd runs gRPC': the wake drain on both ends, the server on coordd serve's"
        " I/O engine (COORDD_GRPC_IO)",
        ["clients", "side", "calls/s", "server us", "client us", "load"],
        floor_rows,
    )
    print(
        f"(added latency is per operation, at {levels[0]} client(s); CPU per call is per RPC"
        " or per SQL statement, two per cycle; req/msg: session-stream requests per message"
        " sent / answers per message received; 'one client': all callers share one client;"
        " \"echo unary, daemon's rate\": the echo paced to the daemon's unary calls/s of the same"
        " rep, the floor of unary_overhead_matched)"
    )
    print(
        f"resident memory after the runs: daemon {daemon_rss:.0f} MiB, bare echo server"
        f" {echo_rss:.0f} MiB"
    )
    print(result_line("claims", **figures))
    return 0
