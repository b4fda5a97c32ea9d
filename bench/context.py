"""Context: post -> read -> ack through coordd vs a raw SKIP LOCKED queue; delivery latency.

Throughput: N clients each loop post one item, take one item, acknowledge it. coordd side:
PostContext (ANY delivery to a role), ReadContext (unread, one entry: takes it under a lease),
AckContext. Raw side, what an agent would write with psycopg on the same PostgreSQL: INSERT;
UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING (take with a lease);
UPDATE ... SET acked (ack). Unbatched on both sides; interleaved reps; daemon in its own process.

Batched: a queue of --batched-items entries for one role, drained by the last level's clients
each taking --batch entries and acknowledging them in one call (coordd: context.take(ns, n) +
one AckContext; raw: UPDATE ... WHERE id IN (SELECT ... SKIP LOCKED LIMIT n) + one UPDATE ...
WHERE id = ANY(...)): RESULT ratio_batched. Its reps alternate the sides too (each rep drains a
queue filled afresh) and the figures are their medians: one drain lasts about a second, so a
lone run was at the mercy of whatever else ran in it (autovacuum after the unbatched part).

Latency: 10 subscribers (SubscribeContext streams), one poster at a steady rate; time from
just before PostContext to each subscriber receiving the entry.

    python -m bench context [--seconds 6] [--reps 2] [--clients 1,8] [--quick]
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg

from bench._cli import ab_parser, client_levels, scenario_args
from bench._cpu import CpuWindow, postmaster_pid
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

QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_queue (
    id bigserial PRIMARY KEY,
    to_role text NOT NULL,
    payload jsonb NOT NULL,
    taker text,
    lease_until timestamptz,
    acked boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS raw_queue_open ON raw_queue (to_role, id) WHERE NOT acked;
"""
RAW_POST = "INSERT INTO raw_queue (to_role, payload) VALUES ('worker', %s) RETURNING id"
RAW_TAKE = """
UPDATE raw_queue SET taker = %s, lease_until = now() + interval '60 seconds'
WHERE id = (
    SELECT id FROM raw_queue
    WHERE to_role = 'worker' AND NOT acked AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, payload
"""
RAW_ACK = "UPDATE raw_queue SET acked = true WHERE id = %s AND taker = %s"
NS = "bench/context"


async def _raw_worker(dsn: str, stop_at: float, lat: list[float]) -> int:
    from psycopg.types.json import Jsonb

    me = f"raw-{uuid.uuid4().hex[:8]}"
    n = 0
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, prepare_threshold=0
    ) as conn:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await conn.execute(RAW_POST, (Jsonb({"n": n}),))
            cur = await conn.execute(RAW_TAKE, (me,))
            row = await cur.fetchone()
            if row is not None:
                await conn.execute(RAW_ACK, (row[0], me))
                n += 1
            lat.append(time.perf_counter() - t0)
    return n


async def _coordd_worker(address: str, stop_at: float, lat: list[float]) -> int:
    from coordd_client import AsyncClient

    n = 0
    async with await AsyncClient.connect(
        address, agent_id=f"w-{uuid.uuid4().hex[:8]}", role="worker"
    ) as client:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await client.context.post(
                NS, {"n": n}, to_role="worker", context_type="job", delivery="any"
            )
            got = await client.context.inbox(NS, limit=1)
            if got:
                await client.context.ack(NS, got[0].id)
                n += 1
            lat.append(time.perf_counter() - t0)
    return n


RAW_TAKE_MANY = """
UPDATE raw_queue SET taker = %s, lease_until = now() + interval '60 seconds'
WHERE id IN (
    SELECT id FROM raw_queue
    WHERE to_role = 'batcher' AND NOT acked AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT %s)
RETURNING id, payload
"""
RAW_ACK_MANY = "UPDATE raw_queue SET acked = true WHERE id = ANY(%s) AND taker = %s"


async def _prefill(side: str, target: str, items: int) -> None:
    """Queue *items* entries for the role "batcher" (not timed)."""
    if side == "raw":
        async with await psycopg.AsyncConnection.connect(target, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO raw_queue (to_role, payload)"
                " SELECT 'batcher', jsonb_build_object('n', n) FROM generate_series(1, %s) n",
                (items,),
            )
        return
    from coordd_client import AsyncClient

    async def post(share: int) -> None:
        async with await AsyncClient.connect(target, agent_id=f"p-{uuid.uuid4().hex[:6]}") as c:
            for n in range(share):
                await c.context.post(
                    NS, {"n": n}, to_role="batcher", context_type="job", delivery="any"
                )

    await asyncio.gather(*(post(items // 8) for _ in range(8)))


async def _drain(side: str, target: str, clients: int, batch: int, cpu: CpuWindow) -> Stats:
    """*clients* workers take *batch* entries and acknowledge them in one call each, until
    the queue is empty: items per second."""
    lat: list[float] = []

    async def raw() -> int:
        me, n = f"raw-{uuid.uuid4().hex[:8]}", 0
        async with await psycopg.AsyncConnection.connect(
            target, autocommit=True, prepare_threshold=0
        ) as conn:
            while True:
                t0 = time.perf_counter()
                rows = await (await conn.execute(RAW_TAKE_MANY, (me, batch))).fetchall()
                if not rows:
                    return n
                await conn.execute(RAW_ACK_MANY, ([r[0] for r in rows], me))
                n += len(rows)
                lat.append(time.perf_counter() - t0)

    async def coordd() -> int:
        from coordd_client import AsyncClient

        n = 0
        async with await AsyncClient.connect(
            target, agent_id=f"b-{uuid.uuid4().hex[:8]}", role="batcher"
        ) as client:
            while True:
                t0 = time.perf_counter()
                got = await client.context.take(NS, batch)
                if not got:
                    return n
                await client.context.ack(NS, [e.id for e in got])
                n += len(got)
                lat.append(time.perf_counter() - t0)

    with cpu:
        done = await asyncio.gather(*((raw if side == "raw" else coordd)() for _ in range(clients)))
    return Stats(sum(done), cpu.seconds, lat)


async def _throughput(
    side: str, target: str, clients: int, seconds: float, cpu: CpuWindow
) -> Stats:
    lat: list[float] = []
    worker = _raw_worker if side == "raw" else _coordd_worker
    with cpu:
        stop_at = time.perf_counter() + seconds
        done = await asyncio.gather(*(worker(target, stop_at, lat) for _ in range(clients)))
    return Stats(sum(done), cpu.seconds, lat)


async def _delivery(address: str, subscribers: int, posts: int, interval_s: float) -> Stats:
    from coordd_client import AsyncClient

    sent_at: dict[int, float] = {}
    lat: list[float] = []
    clients = [
        await AsyncClient.connect(address, agent_id=f"s{i}", role="listener")
        for i in range(subscribers)
    ]
    poster = await AsyncClient.connect(address, agent_id="poster", role="planner")
    start = (await poster.context.post(NS, -1, to_role="nobody", context_type="mark")).id

    async def listen(c: AsyncClient) -> None:
        async for entry in c.context.subscribe(NS, after_id=start):
            lat.append(time.perf_counter() - sent_at[entry.content])
            if entry.content == posts - 1:
                return

    tasks = [asyncio.create_task(listen(c)) for c in clients]
    await asyncio.sleep(0.5)  # let every stream reach its live phase
    for n in range(posts):
        sent_at[n] = time.perf_counter()
        await poster.context.post(NS, n, to_role="listener", context_type="tick")
        await asyncio.sleep(interval_s)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for c in [*clients, poster]:
        await c.close()
    return Stats(len(lat), 0.0, lat)


def main(argv: list[str]) -> int:
    parser = ab_parser(
        "context", __doc__, seconds=6.0, reps=2, clients="1,8", quick="2 s runs, 1 rep, 60 posts"
    )
    parser.add_argument("--posts", type=int, default=300, help="posts in the latency run")
    parser.add_argument("--batch", type=int, default=100, help="entries per take and ack")
    parser.add_argument(
        "--batched-items", type=int, default=8000, help="entries queued for the batched run"
    )
    parser.add_argument(
        "--parts",
        default="unbatched,batched,delivery",
        help="which parts to run, comma-separated (the RESULT line has the figures of those)",
    )
    args = scenario_args(parser, argv, seconds=2.0, reps=1, posts=60, batched_items=2000)
    levels = client_levels(args)
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"unbatched", "batched", "delivery"}:
        parser.error("--parts: a comma-separated subset of unbatched, batched, delivery")
    print(f"machine: {machine()}")
    results: dict[tuple[str, int], list[tuple[Stats, CpuWindow]]] = {}
    with postgres() as dsn, daemon_process(dsn) as daemon:
        address = daemon.address
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(QUEUE_SCHEMA)
        pg = postmaster_pid(dsn)
        trees = {"postgres": pg} if pg else {}
        for n in levels if "unbatched" in parts else []:
            for rep in range(args.reps):
                for side, target in (("raw", dsn), ("coordd", address)):
                    log.info("%s, %d client(s), rep %d/%d", side, n, rep + 1, args.reps)
                    cpu = CpuWindow({"daemon": daemon.pid} if side == "coordd" else {}, trees=trees)
                    stats = asyncio.run(_throughput(side, target, n, args.seconds, cpu))
                    results.setdefault((side, n), []).append((stats, cpu))
        batched: dict[str, list[tuple[Stats, CpuWindow]]] = {}
        for rep in range(args.reps if "batched" in parts else 0):
            for side, target in (("raw", dsn), ("coordd", address)):
                log.info("%s: queueing %d entries for the batched run", side, args.batched_items)
                asyncio.run(_prefill(side, target, args.batched_items))
                log.info(
                    "%s: %d clients take-and-ack %d at a time, rep %d/%d",
                    *(side, levels[-1], args.batch, rep + 1, args.reps),
                )
                cpu = CpuWindow({"daemon": daemon.pid} if side == "coordd" else {}, trees=trees)
                stats = asyncio.run(_drain(side, target, levels[-1], args.batch, cpu))
                batched.setdefault(side, []).append((stats, cpu))
        delivery = None
        if "delivery" in parts:
            log.info("delivery latency: 10 subscribers, %d posts", args.posts)
            delivery = asyncio.run(_delivery(address, 10, args.posts, 0.01))
    rows = []
    figures: dict[str, float] = {}
    for n in levels if "unbatched" in parts else []:
        raw = results[("raw", n)]
        co = results[("coordd", n)]
        raw_tp = median([s.throughput for s, _ in raw])
        co_tp = median([s.throughput for s, _ in co])
        # CPU per item: one item is three RPCs through coordd, three statements raw.
        rows.append(
            [
                n,
                "raw SKIP LOCKED",
                raw_tp,
                median([s.p50 for s, _ in raw]),
                "",
                "",
                median([c.per_call_us("client", s.ops) for s, c in raw]),
                median([c.per_call_us("postgres", s.ops) for s, c in raw]),
                median([c.load for _, c in raw]),
            ]
        )
        daemon_us = median([c.per_call_us("daemon", s.ops) for s, c in co])
        rows.append(
            [
                n,
                "coordd",
                co_tp,
                median([s.p50 for s, _ in co]),
                f"{co_tp / raw_tp:.2f}x",
                daemon_us,
                median([c.per_call_us("client", s.ops) for s, c in co]),
                median([c.per_call_us("postgres", s.ops) for s, c in co]),
                median([c.load for _, c in co]),
            ]
        )
        figures[f"ratio_c{n}"] = co_tp / raw_tp
        if n == levels[-1]:
            figures["daemon_cpu_us_per_item"] = daemon_us
    batched_tp = {side: median([st.throughput for st, _ in runs]) for side, runs in batched.items()}
    if batched:
        figures["ratio_batched"] = batched_tp["coordd"] / batched_tp["raw"]
    for side, runs in batched.items():
        rows.append(
            [
                f"{levels[-1]} x{args.batch}",
                "coordd take+ack" if side == "coordd" else "raw take+ack",
                batched_tp[side],
                median([st.p50 for st, _ in runs]),
                f"{figures['ratio_batched']:.2f}x" if side == "coordd" else "",
                median([c.per_call_us("daemon", st.ops) for st, c in runs])
                if side == "coordd"
                else "",
                median([c.per_call_us("client", st.ops) for st, c in runs]),
                median([c.per_call_us("postgres", st.ops) for st, c in runs]),
                median([c.load for _, c in runs]),
            ]
        )
    print_table(
        "post->read->ack items/s (median of reps); cycle p50 ms; CPU us per item"
        f" (last rows: a queue of {args.batched_items} taken and acknowledged {args.batch} at"
        " a time, no posting; median of reps)",
        ["clients", "side", "items/s", "p50", "ratio", "daemon us", "client us", "pg us", "load"],
        rows,
    )
    if "unbatched" in parts:
        figures = {"ratio": figures[f"ratio_c{levels[-1]}"], **figures}
    if delivery is not None:
        print(
            f"\nsubscribe delivery, 10 subscribers: p50 {delivery.p50:.2f} ms,"
            f" p99 {delivery.p99:.2f} ms over {delivery.ops} deliveries"
        )
        figures.update(deliver_p50_ms=delivery.p50, deliver_p99_ms=delivery.p99)
    print(result_line("context", **figures))
    return 0
