"""Memory search and ingest: coordd (in-process hnswlib) vs pgvector HNSW, same PostgreSQL.

Same data on both sides (N x 384 clustered vectors: 200 Gaussian centres, sigma 0.35, as in the
anchors' comparison; queries are data points moved by a little noise), loaded the same way
(COPY). pgvector then builds its HNSW index (m=16, ef_construction=64, its defaults); coordd
builds its index at start (m=16, ef_construction=100, its defaults) — the cold start — and again
from the snapshot it saved at shutdown. Search is compared at equal recall@10 against exact
brute force: each side at the smallest ef reaching ~0.95 and ~0.99, 1 and 8 clients, through
coordd's gRPC API vs psycopg with binary vectors (pgvector.psycopg). Both sides return the ids
of the ten nearest and nothing else (pgvector `SELECT id`, coordd `memory.search_refs`:
SEARCH_VIEW_REF, namespace, key and revision), each sending the query as float32 bytes.
Ingest: new vectors through PutMemory vs INSERT into the indexed pgvector table, 8 clients
each, one per call (ingest_ratio_unbatched) and in batches of 100: PutMemories vs a 100-row
INSERT (ingest_ratio).
The floor beside the search rows: a bare grpc.aio server echoing 96 bytes per message on one
open bidirectional stream per client, run as coordd runs gRPC (the wake drain on both ends, the
server on ``coordd serve``'s I/O engine), at 1 and 8 clients (its p50 is the mean, clients /
rate): what the session stream's transport alone costs a search, handler aside.

    python -m bench memory [--n 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import psycopg

from bench._cli import scenario_args
from bench._cpu import CpuWindow, postmaster_pid
from bench._echo import echo_server, run_echo
from bench._harness import (
    Progress,
    Stats,
    log,
    machine,
    postgres,
    print_table,
    result_line,
)

DIM = 384
NS = "bench/memory"
SEARCH_COLUMNS = [
    *("recall", "clients", "side", "ef", "recall@10", "QPS", "p50"),
    *("daemon us", "client us", "pg us", "load"),
]
# The ef values tried, the same for both sides (each side runs at the smallest reaching the
# target recall): steps of about 25 % so neither side overshoots its target by much.
EF_STEPS = [16, 20, 24, 32, 40, 48, 64, 80, 100, 128, 160, 200, 256, 320, 400, 512, 640, 1000]
_SERVING = re.compile(r"coordd serving on (\S+)")


def dataset(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    data = (centres[rng.integers(0, 200, n)] + 0.35 * rng.normal(size=(n, DIM))).astype(np.float32)
    picked = data[rng.integers(0, n, queries)]
    return data, (picked + 0.05 * rng.normal(size=picked.shape)).astype(np.float32)


def truth(data: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for start in range(0, len(q), 50):
        dist = 1 - q[start : start + 50] @ unit.T
        out += [set(map(int, np.argpartition(d, k)[:k])) for d in dist]
    return out


def load(dsn: str, data: np.ndarray) -> None:
    """COPY the vectors into coordd's memory table and into a pgvector table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"CREATE TABLE pv (id int PRIMARY KEY, embedding vector({DIM}))")
        from pgvector.psycopg import register_vector

        register_vector(conn)
        progress = Progress("COPY into coordd.memory and pgvector", len(data) * 2)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY coordd.memory (namespace, key, tier, value, embedding, dim, revision,"
                " create_revision, agent_id, role, write_time, valid_from) FROM STDIN"
            ) as copy:
                for i, v in enumerate(data):
                    copy.write_row(
                        (
                            NS,
                            f"v{i}",
                            3,
                            "{}",
                            v.astype("<f4").tobytes(),
                            DIM,
                            i + 1,
                            i + 1,
                            "loader",
                            "",
                            "now",
                            "now",
                        )
                    )
                    if i % 10000 == 9999:
                        progress.add(10000)
            conn.execute(
                "INSERT INTO coordd.namespaces (name, revision) VALUES (%s, %s)", (NS, len(data))
            )
            with cur.copy("COPY pv (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                for i, v in enumerate(data):
                    copy.write_row((i, v))
                    if i % 10000 == 9999:
                        progress.add(10000)
        log.info("pgvector: building its HNSW index (m=16, ef_construction=64)")
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(
            "CREATE INDEX pv_hnsw ON pv USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = 16, ef_construction = 64)"
        )
        log.info("pgvector: index built in %.1fs", time.perf_counter() - started)


def start_daemon(dsn: str, index_dir: Path) -> tuple[subprocess.Popen[str], str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordd", "serve", "--dsn", dsn, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COORDD_INDEX_DIR": str(index_dir)},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "vector index" in line:
            log.info("daemon: %s", line.strip().split(": ", 1)[-1])
        if m := _SERVING.search(line):
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, m.group(1), time.perf_counter() - started
    raise RuntimeError("daemon did not start")


def stop_daemon(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(60)


C = TypeVar("C")


async def _drive(
    conns: list[C],
    queries: np.ndarray,
    seconds: float | None,
    cpu: CpuWindow | None,
    top10: Callable[[C, np.ndarray], Awaitable[set[int]]],
) -> tuple[list[set[int]], Stats]:
    """Run *queries* through every connection of *conns* at once (connection n takes queries
    n, n + len(conns), ...): once each, or round and round for *seconds*; the top-10 ids
    found per query, and the latency of each. Closes the connections."""
    results: list[set[int]] = [set()] * len(queries)
    lat: list[float] = []
    stop = time.perf_counter() + seconds if seconds else None

    async def run(c: C, offset: int) -> None:
        i = offset
        while (stop is None and i < len(queries)) or (stop and time.perf_counter() < stop):
            q = queries[i % len(queries)]
            t = time.perf_counter()
            found = await top10(c, q)
            lat.append(time.perf_counter() - t)
            results[i % len(queries)] = found
            i += len(conns)

    started = time.perf_counter()
    with cpu or contextlib.nullcontext():
        await asyncio.gather(*(run(c, n) for n, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()  # type: ignore[attr-defined]
    return results, Stats(len(lat), elapsed, lat)


async def coordd_search(
    address: str,
    queries: np.ndarray,
    ef: int,
    clients: int,
    seconds: float | None,
    cpu: CpuWindow | None = None,
) -> tuple[list[set[int]], Stats]:
    from coordd_client import AsyncClient

    async def top10(c: AsyncClient, q: np.ndarray) -> set[int]:
        # The ids only, as pgvector's SELECT id returns; the float32 array's bytes as they are,
        # as pgvector's binary vector parameter sends them.
        hits = await c.memory.search_refs(q, 10, NS, ef=ef)  # type: ignore[arg-type]
        return {int(h.key[1:]) for h in hits}

    conns = [await AsyncClient.connect(address, agent_id=f"s{i}") for i in range(clients)]
    return await _drive(conns, queries, seconds, cpu, top10)


async def pgvector_search(
    dsn: str,
    queries: np.ndarray,
    ef: int,
    clients: int,
    seconds: float | None,
    cpu: CpuWindow | None = None,
) -> tuple[list[set[int]], Stats]:
    from pgvector.psycopg import register_vector_async

    async def top10(c: psycopg.AsyncConnection[tuple[object, ...]], q: np.ndarray) -> set[int]:
        cur = await c.execute("SELECT id FROM pv ORDER BY embedding <=> %s LIMIT 10", (q,))
        return {int(r[0]) for r in await cur.fetchall()}  # type: ignore[call-overload]

    conns = []
    for _ in range(clients):
        c = await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)
        await register_vector_async(c)
        await c.execute(f"SET hnsw.ef_search = {int(ef)}")
        conns.append(c)
    return await _drive(conns, queries, seconds, cpu, top10)


def recall(found: list[set[int]], gt: list[set[int]]) -> float:
    return float(np.mean([len(f & g) / 10 for f, g in zip(found, gt, strict=True)]))


def pick_ef(search, target: float, efs: list[int], gt: list[set[int]]) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The smallest ef whose recall reaches *target* (the largest tried, if none does)."""
    best = (efs[-1], 0.0)
    for ef in efs:
        r = recall(asyncio.run(search(ef))[0], gt)
        log.info("  ef %d: recall@10 %.3f", ef, r)
        if r >= target:
            return ef, r
        best = (ef, r)
    return best


async def ingest_coordd(
    address: str, data: np.ndarray, clients: int, batch: int = 1, tag: str = "new"
) -> float:
    """Vectors per second through PutMemory (*batch* 1) or PutMemories of *batch* entries."""
    from coordd_client import AsyncClient, MemoryPut

    conns = [await AsyncClient.connect(address, agent_id=f"w{i}") for i in range(clients)]
    queue = list(range(len(data)))
    started = time.perf_counter()

    async def run(c: AsyncClient) -> None:
        while queue:
            if batch == 1:
                i = queue.pop()
                await c.memory.put(NS, f"{tag}{i}", {}, embedding=data[i].tolist())
                continue
            take = [queue.pop() for _ in range(min(batch, len(queue)))]
            await c.memory.put_many(
                [
                    MemoryPut(namespace=NS, key=f"{tag}{i}", value={}, embedding=data[i].tolist())
                    for i in take
                ]
            )

    await asyncio.gather(*(run(c) for c in conns))
    rate = len(data) / (time.perf_counter() - started)
    for c in conns:
        await c.close()
    return rate


async def ingest_pgvector(
    dsn: str, data: np.ndarray, clients: int, batch: int = 1, first_id: int = 10_000_000
) -> float:
    """Rows per second INSERTed into the HNSW-indexed table, *batch* rows per statement."""
    from pgvector.psycopg import register_vector_async

    conns = []
    for _ in range(clients):
        c = await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)
        await register_vector_async(c)
        conns.append(c)
    queue = list(range(len(data)))
    started = time.perf_counter()

    async def run(c: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        while queue:
            take = [queue.pop() for _ in range(min(batch, len(queue)))]
            values = ", ".join(["(%s, %s)"] * len(take))
            params = [x for i in take for x in (first_id + i, data[i])]
            await c.execute(f"INSERT INTO pv (id, embedding) VALUES {values}", params)

    await asyncio.gather(*(run(c) for c in conns))
    rate = len(data) / (time.perf_counter() - started)
    for c in conns:
        await c.close()
    return rate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="vectors loaded")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0, help="per QPS run")
    parser.add_argument("--ingest", type=int, default=3000, help="vectors ingested per side")
    parser.add_argument(
        "--ingest-batched", type=int, default=10_000, help="vectors ingested per side in batches"
    )
    parser.add_argument("--quick", action="store_true", help="10k vectors, short runs")
    args = scenario_args(
        parser, argv, n=10_000, queries=100, seconds=2.0, ingest=500, ingest_batched=2000
    )
    print(f"machine: {machine()}")
    data, queries = dataset(args.n, args.queries)
    log.info("exact top-10 of %d queries over %d vectors", len(queries), len(data))
    gt = truth(data, queries)
    figures: dict[str, float] = {}
    rows = []
    with postgres() as dsn, tempfile.TemporaryDirectory() as tmp:
        load(dsn, data)
        pg = postmaster_pid(dsn)
        trees = {"postgres": pg} if pg else {}
        proc, address, rebuild_s = start_daemon(dsn, Path(tmp) / "index")
        log.info("coordd cold start, rebuilding the index from PostgreSQL: %.1fs", rebuild_s)
        stop_daemon(proc)  # saves the snapshot
        proc, address, snapshot_s = start_daemon(dsn, Path(tmp) / "index")
        log.info("coordd cold start from its snapshot: %.1fs", snapshot_s)
        try:
            for target, label in ((0.95, "r95"), (0.99, "r99")):
                log.info("coordd: smallest ef reaching recall %.2f", target)
                ef_c, r_c = pick_ef(
                    lambda ef: coordd_search(address, queries, ef, 1, None),
                    target,
                    EF_STEPS,
                    gt,
                )
                log.info("pgvector: smallest ef_search reaching recall %.2f", target)
                ef_p, r_p = pick_ef(
                    lambda ef: pgvector_search(dsn, queries, ef, 1, None),
                    target,
                    EF_STEPS,
                    gt,
                )
                for clients in (1, 8):
                    cc = CpuWindow({"daemon": proc.pid}, trees=trees)
                    _, sc = asyncio.run(
                        coordd_search(address, queries, ef_c, clients, args.seconds, cc)
                    )
                    cp = CpuWindow(trees=trees)
                    _, sp = asyncio.run(
                        pgvector_search(dsn, queries, ef_p, clients, args.seconds, cp)
                    )
                    rows.append(
                        [
                            label,
                            clients,
                            "coordd",
                            ef_c,
                            r_c,
                            sc.throughput,
                            sc.p50,
                            cc.per_call_us("daemon", sc.ops),
                            cc.per_call_us("client", sc.ops),
                            cc.per_call_us("postgres", sc.ops),
                            cc.load,
                        ]
                    )
                    rows.append(
                        [
                            label,
                            clients,
                            "pgvector",
                            ef_p,
                            r_p,
                            sp.throughput,
                            sp.p50,
                            "",
                            cp.per_call_us("client", sp.ops),
                            cp.per_call_us("postgres", sp.ops),
                            cp.load,
                        ]
                    )
                    if label == "r95" and clients == 8:
                        figures["daemon_cpu_us_per_search"] = cc.per_call_us("daemon", sc.ops)
                    figures[f"qps_ratio_{label}_c{clients}"] = sc.throughput / sp.throughput
            with echo_server(wake_drain=True) as echo:
                for clients in (1, 8):
                    run = asyncio.run(
                        run_echo(echo, clients, args.seconds, streamed=True, wake_drain=True)
                    )
                    rows.append(
                        [
                            "floor",
                            clients,
                            "stream echo",
                            "",
                            "",
                            run.rate,
                            clients / run.rate * 1e3,
                            run.server_us,
                            run.client_us,
                            "",
                            run.window.load,
                        ]
                    )
                    figures[f"echo_stream_qps_c{clients}"] = run.rate
                    figures[f"echo_stream_server_us_c{clients}"] = run.server_us
            log.info("ingest: %d new vectors per side, 8 clients", args.ingest)
            fresh = dataset(args.n + args.ingest, 1)[0][args.n :]
            rate_c = asyncio.run(ingest_coordd(address, fresh, 8))
            rate_p = asyncio.run(ingest_pgvector(dsn, fresh, 8))
            log.info("ingest in batches of 100: %d new vectors per side", args.ingest_batched)
            more = dataset(args.n + args.ingest + args.ingest_batched, 1)[0][args.n + args.ingest :]
            batch_c = asyncio.run(ingest_coordd(address, more, 8, batch=100, tag="bulk"))
            batch_p = asyncio.run(ingest_pgvector(dsn, more, 8, batch=100, first_id=20_000_000))
        finally:
            stop_daemon(proc)
    print_table(
        f"search, {args.n} x {DIM}, k=10 (QPS and p50 ms; floor: the session stream's transport)",
        SEARCH_COLUMNS,
        rows,
    )
    print(
        f"\ningest (8 clients), one vector per call: coordd {rate_c:.0f}/s, pgvector"
        f" {rate_p:.0f}/s ({rate_c / rate_p:.2f}x); in batches of 100 (PutMemories vs a"
        f" 100-row INSERT): coordd {batch_c:.0f}/s, pgvector {batch_p:.0f}/s"
        f" ({batch_c / batch_p:.2f}x)"
    )
    print(f"cold start: rebuild {rebuild_s:.1f}s, from snapshot {snapshot_s:.1f}s")
    print(
        result_line(
            "memory",
            qps_ratio_r95=figures["qps_ratio_r95_c8"],
            qps_ratio_r99=figures["qps_ratio_r99_c8"],
            ingest_ratio=batch_c / batch_p,
            ingest_ratio_unbatched=rate_c / rate_p,
            cold_start_s=snapshot_s,
            cold_start_rebuild_s=rebuild_s,
            qps_ratio_r95_c1=figures["qps_ratio_r95_c1"],
            qps_ratio_r99_c1=figures["qps_ratio_r99_c1"],
            daemon_cpu_us_per_search=figures["daemon_cpu_us_per_search"],
            echo_stream_qps_c1=figures["echo_stream_qps_c1"],
            echo_stream_qps_c8=figures["echo_stream_qps_c8"],
            echo_stream_server_us_c8=figures["echo_stream_server_us_c8"],
        )
    )
    return 0
