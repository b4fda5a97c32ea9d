"""gRPC server model: grpc.aio + async psycopg pool vs thread-pool server + sync psycopg pool.

Both servers run the same real handler: coordd's claim SQL (acquire_claim then release_claim,
one round trip each) in a random namespace, behind a generic unary method. The clients are the
same grpc.aio load generator in a separate process, 1 and 32 concurrent calls. This is the
measurement behind coordd's choice of server model (DESIGN.md §12).

    python -m bench server [--seconds 6] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import time
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc

from bench._cli import scenario_args
from bench._cpu import CpuWindow, rss_mb
from bench._harness import Stats, log, machine, postgres, print_table, result_line

METHOD = "/bench.Claims/AcquireRelease"
# Each call uses its own namespace, so the server model, not one namespace's lock, is measured.
ACQUIRE = "SELECT fencing_token FROM coordd.acquire_claim(%s, 'r', 'a', '', %s, '')"
RELEASE = "SELECT status FROM coordd.release_claim(%s, 'r', 'a', %s)"
TTL = timedelta(seconds=300)


def _pool_options(pool_size: int) -> dict[str, Any]:
    """Both servers' pool: *pool_size* connections, autocommit, no prepared statements."""
    return {
        "min_size": pool_size,
        "max_size": pool_size,
        "kwargs": {"autocommit": True, "prepare_threshold": 0},
    }


def _listen(server: grpc.Server | grpc.aio.Server, handler: Any) -> int:
    """Serve *handler* as ``bench.Claims/AcquireRelease`` on a loopback port; the port."""
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Claims", {"AcquireRelease": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    return server.add_insecure_port("127.0.0.1:0")


def _serve_aio(dsn: str, port_q: mp.Queue[int], pool_size: int) -> None:
    import psycopg_pool

    async def main() -> None:
        pool = psycopg_pool.AsyncConnectionPool(dsn, open=False, **_pool_options(pool_size))
        await pool.open(wait=True)

        async def handler(req: bytes, ctx: object) -> bytes:
            resource = req.decode()
            async with pool.connection() as conn:
                cur = await conn.execute(ACQUIRE, (resource, TTL))
                row = await cur.fetchone()
                assert row is not None
                await conn.execute(RELEASE, (resource, row[0]))
            return b"ok"

        server = grpc.aio.server()
        port_q.put(_listen(server, handler))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _serve_sync(dsn: str, port_q: mp.Queue[int], pool_size: int) -> None:
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(dsn, open=True, **_pool_options(pool_size))
    pool.wait()

    def handler(req: bytes, ctx: object) -> bytes:
        resource = req.decode()
        with pool.connection() as conn:
            row = conn.execute(ACQUIRE, (resource, TTL)).fetchone()
            assert row is not None
            conn.execute(RELEASE, (resource, row[0]))
        return b"ok"

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=pool_size))
    port_q.put(_listen(server, handler))
    server.start()
    server.wait_for_termination()


async def _load(port: int, clients: int, seconds: float) -> Stats:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(clients)]
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(ch: grpc.aio.Channel) -> None:
        call = ch.unary_unary(METHOD)
        rng = random.Random()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await call(f"r{rng.getrandbits(48)}".encode())
            lat.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(ch) for ch in channels))
    elapsed = time.perf_counter() - started
    for ch in channels:
        await ch.close(None)
    return Stats(len(lat), elapsed, lat)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench server", description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--quick", action="store_true")
    args = scenario_args(parser, argv, seconds=2.0)
    print(f"machine: {machine()}")
    rows = []
    figures: dict[str, float] = {}
    ctx = mp.get_context("spawn")
    with postgres() as dsn:
        for model, target in (("aio", _serve_aio), ("sync", _serve_sync)):
            port_q: mp.Queue[int] = ctx.Queue()
            proc = ctx.Process(target=target, args=(dsn, port_q, 16), daemon=True)
            proc.start()
            port = port_q.get(timeout=60)
            try:
                for clients in (1, 32):
                    log.info("%s server, %d client(s), %.0fs", model, clients, args.seconds)
                    assert proc.pid is not None
                    cpu = CpuWindow({"server": proc.pid})
                    with cpu:
                        stats = asyncio.run(_load(port, clients, args.seconds))
                    server_us = cpu.per_call_us("server", stats.ops)
                    rows.append(
                        [
                            model,
                            clients,
                            stats.throughput,
                            stats.p50,
                            stats.p99,
                            server_us,
                            rss_mb(proc.pid),
                            cpu.load,
                        ]
                    )
                    figures[f"{model}_c{clients}_rps"] = stats.throughput
                    figures[f"{model}_c{clients}_cpu_us"] = server_us
            finally:
                proc.terminate()
                proc.join(10)
    print_table(
        "acquire+release handler, calls/s and latency (ms)",
        ["server", "clients", "calls/s", "p50", "p99", "server us/call", "RSS MiB", "load"],
        rows,
    )
    figures["sync_over_aio_c32"] = figures["sync_c32_rps"] / figures["aio_c32_rps"]
    figures["sync_over_aio_c1"] = figures["sync_c1_rps"] / figures["aio_c1_rps"]
    print(result_line("server", **figures))
    return 0
