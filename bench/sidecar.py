"""Reads through the session cache: direct vs sidecar vs embedded, and the tracing tax.

Workload (the issue's): 4 agents, 95% GetMemory / 5% PutMemory over 10k keys chosen by a
Zipf(0.99) law, each agent with ``--concurrency`` calls in flight. Three ways to reach the
daemon (a separate process), measured in the same run:

  direct    each agent's client talks to the daemon
  sidecar   each agent talks to its own ``coordd-sidecar`` process (session cache)
  embedded  each agent's client keeps the session cache in-process (``cache=CacheConfig()``)

Reported per mode: aggregate read throughput, read p50/p99, hit ratio, and the daemon's CPU per
request (from /proc, over the measured window). Then the embedded hit latency alone (one agent
reading cached keys), and the tracing tax: the claims workload (acquire + release) against a
daemon tracing into a no-op exporter vs one with tracing off, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import time
from dataclasses import dataclass
from typing import Any

from bench._cli import scenario_args
from bench._cpu import CpuWindow
from bench._harness import (
    Stats,
    log,
    machine,
    postgres,
    print_table,
    result_line,
)
from bench._procs import daemon_process

KEYS = 10_000
AGENTS = 4


def zipf_sampler(n: int, s: float, rng: random.Random) -> Any:
    """A function drawing ranks 0..n-1 with P(k) proportional to 1/(k+1)^s."""
    weights = [1 / (k + 1) ** s for k in range(n)]
    total = sum(weights)
    cdf, acc = [], 0.0
    for w in weights:
        acc += w / total
        cdf.append(acc)
    return lambda: min(bisect.bisect_left(cdf, rng.random()), n - 1)


def key_of(rank: int, namespaces: int) -> tuple[str, str]:
    return f"bench/sidecar/n{rank % namespaces:02d}", f"key-{rank}"


@dataclass
class ModeResult:
    mode: str
    reads: Stats
    writes: int
    hits: int
    misses: int
    forced: int
    cpu: CpuWindow

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def daemon_us_per_request(self) -> float:
        return self.cpu.per_call_us("daemon", self.reads.ops + self.writes)


async def drive(
    clients: list[Any], seconds: float, concurrency: int, namespaces: int, seed: int, cpu: CpuWindow
) -> tuple[Stats, int]:
    """Run the 95/5 Zipf workload on *clients* for *seconds*; read stats and write count."""
    latencies: list[float] = []
    writes = 0

    async def agent(i: int, client: Any) -> None:
        nonlocal writes
        rng = random.Random(seed * 1000 + i)
        draw = zipf_sampler(KEYS, 0.99, rng)
        while time.perf_counter() < stop_at:
            ns, key = key_of(draw(), namespaces)
            if rng.random() < 0.05:
                await client.memory.put(ns, key, {"v": rng.random()}, tier="episodic")
                writes += 1
            else:
                t0 = time.perf_counter()
                await client.memory.get(ns, key)
                latencies.append(time.perf_counter() - t0)

    with cpu:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(agent(i, c) for i, c in enumerate(clients) for _ in range(concurrency))
        )
    return Stats(len(latencies), cpu.seconds, latencies), writes


async def seed(address: str, namespaces: int) -> None:
    from coordd_client import AsyncClient

    async with await AsyncClient.connect(address, agent_id="seeder") as c:
        sem = asyncio.Semaphore(32)

        async def put(rank: int) -> None:
            async with sem:
                ns, key = key_of(rank, namespaces)
                await c.memory.put(ns, key, {"v": rank}, tier="episodic")

        await asyncio.gather(*(put(r) for r in range(KEYS)))


async def run_mode(mode: str, daemon: Any, args: argparse.Namespace) -> ModeResult:
    from coordd_client import AsyncClient, CacheConfig
    from tests.fix_sidecar import launch_sidecar

    sidecars = []
    if mode == "sidecar":
        sidecars = [launch_sidecar(daemon.address, f"agent-{i}") for i in range(AGENTS)]
        for sc in sidecars:
            sc.wait_ready()
    cache = CacheConfig() if mode == "embedded" else None
    clients = [
        await AsyncClient.connect(
            sidecars[i].address if sidecars else daemon.address, agent_id=f"agent-{i}", cache=cache
        )
        for i in range(AGENTS)
    ]
    try:
        # Warm up (fills caches; not measured), then the measured window.
        await drive(clients, args.warmup, args.concurrency, args.namespaces, 1, CpuWindow())
        before = [c._core.cache.stats for c in clients] if cache else []
        base = [(s.hits, s.misses) for s in before]
        forced0 = sum(s.session_forced for s in before)
        cpu = CpuWindow({"daemon": daemon.pid})
        reads, writes = await drive(
            clients, args.seconds, args.concurrency, args.namespaces, 2, cpu
        )
        hits = misses = forced = 0
        if cache:
            hits = sum(s.hits - h for s, (h, _) in zip(before, base, strict=True))
            misses = sum(s.misses - m for s, (_, m) in zip(before, base, strict=True))
            forced = sum(s.session_forced for s in before) - forced0
    finally:
        for c in clients:
            await c.close()
        for sc in sidecars:
            sc.stop()
    if sidecars:  # their counters cover warm-up and window together
        hits = sum(sc.stats.get("hits", 0) for sc in sidecars)
        misses = sum(sc.stats.get("misses", 0) for sc in sidecars)
        forced = sum(sc.stats.get("session_forced", 0) for sc in sidecars)
    return ModeResult(mode, reads, writes, hits, misses, forced, cpu)


async def embedded_hit_latency(address: str, namespaces: int, n: int) -> Stats:
    """One agent reading keys it has cached, nothing else running: the hit path alone."""
    from coordd_client import AsyncClient, CacheConfig

    async with await AsyncClient.connect(address, agent_id="hit", cache=CacheConfig()) as c:
        keys = [key_of(r, namespaces) for r in range(100)]
        for ns, key in keys:
            await c.memory.get(ns, key)
        latencies = []
        t_start = time.perf_counter()
        for i in range(n):
            ns, key = keys[i % len(keys)]
            t0 = time.perf_counter()
            await c.memory.get(ns, key)
            latencies.append(time.perf_counter() - t0)
        stats = c._core.cache.stats
        assert stats.hits >= n, "the hit-latency loop missed the cache"
        return Stats(n, time.perf_counter() - t_start, latencies)


async def tracing_tax(dsn: str, args: argparse.Namespace) -> tuple[list[Any], float, float]:
    """Claims cycles/s against an untraced daemon, one tracing every call and one sampling
    10% of traces (as Dapr's published figures do), interleaved in rounds; the taxes."""
    from bench.claims import CoorddWorker, run_clients

    rows = []
    labels = ("off", "on", "on 10%")
    totals = {label: [0.0, 0.0] for label in labels}  # cycles, seconds
    cpu_us: dict[str, list[float]] = {label: [] for label in labels}
    sampled = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    with (
        daemon_process(dsn) as plain,
        daemon_process(dsn, module="bench._traced") as traced,
        daemon_process(dsn, module="bench._traced", env=sampled) as traced_10,
    ):
        for rnd in range(args.tax_rounds):
            for label, d in zip(labels, (plain, traced, traced_10), strict=True):
                cpu = CpuWindow({"daemon": d.pid})
                run = await run_clients(
                    16, args.tax_seconds, lambda i, a=d.address: CoorddWorker.create(a, i), cpu
                )
                totals[label][0] += run.cycles.ops
                totals[label][1] += run.cycles.seconds
                cpu_us[label].append(cpu.per_call_us("daemon", run.cycles.ops))
                rows.append(
                    [rnd, label, run.cycles.throughput, run.cycles.p50, cpu_us[label][-1], cpu.load]
                )
    rate = {label: totals[label][0] / totals[label][1] for label in labels}
    return rows, 1 - rate["on"] / rate["off"], 1 - rate["on 10%"] / rate["off"]


async def run(args: argparse.Namespace, dsn: str) -> int:
    print(f"machine: {machine()}")
    with daemon_process(dsn) as daemon:
        log.info("seeding %d keys over %d namespaces", KEYS, args.namespaces)
        await seed(daemon.address, args.namespaces)
        results = []
        for mode in ("direct", "sidecar", "embedded"):
            log.info("mode %s: %.0f s warm-up, %.0f s measured", mode, args.warmup, args.seconds)
            results.append(await run_mode(mode, daemon, args))
        hit = await embedded_hit_latency(daemon.address, args.namespaces, args.hit_calls)
        log.info("tracing tax: %d rounds of %.0f s per side", args.tax_rounds, args.tax_seconds)
        tax_rows, tax, tax_sampled = await tracing_tax(dsn, args)
    direct = next(r for r in results if r.mode == "direct")
    sidecar = next(r for r in results if r.mode == "sidecar")
    print_table(
        f"95% Get / 5% Put, Zipf 0.99 over {KEYS} keys in {args.namespaces} namespaces, "
        f"{AGENTS} agents x {args.concurrency} in flight, {args.seconds:.0f} s each",
        [
            "mode",
            "reads/s",
            "read p50 ms",
            "read p99 ms",
            "hit ratio",
            "forced/miss",
            "daemon us/req",
            "load",
        ],
        [
            [
                r.mode,
                r.reads.throughput,
                r.reads.p50,
                r.reads.p99,
                r.hit_ratio,
                r.forced / r.misses if r.misses else 0.0,
                r.daemon_us_per_request(),
                r.cpu.load,
            ]
            for r in results
        ],
    )
    print_table(
        "embedded cache hit alone (one agent, cached keys)",
        ["calls", "p50 us", "p99 us"],
        [[hit.ops, hit.p50 * 1000, hit.p99 * 1000]],
    )
    print_table(
        "tracing tax: claims (acquire+release), 16 clients; daemon tracing into a no-op exporter"
        " (all calls, or 10% of traces sampled)",
        ["round", "tracing", "cycles/s", "p50 ms", "daemon us/cycle", "load"],
        tax_rows,
    )
    ratio = sidecar.reads.throughput / direct.reads.throughput
    print(
        result_line(
            "sidecar",
            embedded_hit_p50_us=hit.p50 * 1000,
            sidecar_ratio=ratio,
            hit_ratio=sidecar.hit_ratio,
            embedded_hit_ratio=next(r for r in results if r.mode == "embedded").hit_ratio,
            tracing_tax=tax,
            tracing_tax_sampled_10pct=tax_sampled,
        )
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sidecar", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per mode")
    parser.add_argument("--warmup", type=float, default=4.0, help="warm-up per mode")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight per agent")
    parser.add_argument(
        "--namespaces", type=int, default=16, help="namespaces the 10k keys are spread over"
    )
    parser.add_argument("--hit-calls", type=int, default=20_000)
    parser.add_argument("--tax-rounds", type=int, default=3)
    parser.add_argument("--tax-seconds", type=float, default=4.0)
    args = scenario_args(parser, argv)
    with postgres() as dsn:
        return asyncio.run(run(args, dsn))
