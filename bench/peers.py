"""Peers: the claims cycle on coordd, etcd 3.4 and Redis 7, side by side in one run.

The cycle a user would write on each system: acquire a lock on a fresh resource with a 30 s
lease, then release it.

- coordd: AcquireClaim (ttl 30 s) + ReleaseClaim, through the Python client.
- etcd: lease grant (30 s) + a transaction putting the key only if absent, with the lease;
  release by revoking the lease (three RPCs; etcd fsyncs every write).
- Redis: ``SET key owner NX PX 30000``; release by a compare-and-delete script. Twice: as
  shipped (no fsync) and with ``appendonly yes, appendfsync always`` (coordd and etcd both
  fsync before answering).

Each server is real, started by the bench on a loopback port in a temporary directory, and
driven by the same asyncio load generator (one connection per client) at 1 and 32 clients.
Servers come from Debian: ``apt-get install etcd-server redis-server``; Python clients from the
dev extra (aetcd, redis).

    python -m bench peers [--seconds 6] [--reps 1] [--clients 1,32] [--quick]
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._cli import ab_parser, client_levels, scenario_args
from bench._cpu import CpuWindow, postmaster_pid
from bench._harness import log, machine, median, postgres, print_table, result_line
from bench._procs import daemon_process, stop_process
from bench.claims import CoorddWorker, Run, run_clients

LEASE_S = 30
INSTALL_HINT = {
    "etcd": "etcd not found: install it with `apt-get install etcd-server`",
    "redis-server": "redis-server not found: install it with `apt-get install redis-server`",
}
PEER_COLUMNS = [
    *("clients", "side", "cycles/s", "op p50", "op p99"),
    *("vs coordd", "server us", "client us", "load"),
]
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    pid: int


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")


@contextmanager
def _process(cmd: list[str], port: int, what: str) -> Iterator[Server]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, what)
        yield Server(port, proc.pid)
    finally:
        stop_process(proc)


@contextmanager
def etcd_server(workdir: Path) -> Iterator[Server]:
    """A single-member etcd on loopback, data in *workdir*."""
    client, peer = free_port(), free_port()
    c_url, p_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    cmd = [
        *("etcd", "--name", "bench", "--data-dir", str(workdir / "etcd")),
        *("--listen-client-urls", c_url, "--advertise-client-urls", c_url),
        *("--listen-peer-urls", p_url, "--initial-advertise-peer-urls", p_url),
        *("--initial-cluster", f"bench={p_url}", "--logger", "zap", "--log-level", "error"),
    ]
    with _process(cmd, client, "etcd") as server:
        yield server


@contextmanager
def redis_server(workdir: Path, fsync: bool) -> Iterator[Server]:
    """Redis on loopback, data in *workdir*: as shipped, or fsyncing every write."""
    port = free_port()
    data = workdir / ("redis-fsync" if fsync else "redis")
    data.mkdir()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    if fsync:
        cmd += ["--appendonly", "yes", "--appendfsync", "always"]
    with _process(cmd, port, "redis-server") as server:
        yield server


class EtcdWorker:
    """One agent locking with an etcd lease and a put-if-absent transaction."""

    def __init__(self, client: Any, agent: str) -> None:
        self.client = client
        self.owner = agent.encode()
        self.rng = random.Random(agent)

    @classmethod
    async def create(cls, port: int, i: int) -> EtcdWorker:
        import aetcd

        client = aetcd.Client(host="127.0.0.1", port=port)
        await client.connect()
        return cls(client, f"etcd-{i}-{uuid.uuid4().hex[:6]}")

    async def cycle(self) -> float:
        key = f"/locks/res-{self.rng.getrandbits(48)}".encode()
        tx = self.client.transactions
        lease = await self.client.lease(LEASE_S)
        ok, _ = await self.client.transaction(
            compare=[tx.create(key) == 0],
            success=[tx.put(key, self.owner, lease=lease.id)],
            failure=[],
        )
        assert ok, "an uncontended lock must be taken"
        t1 = time.perf_counter()
        await self.client.revoke_lease(lease.id)
        return t1

    async def close(self) -> None:
        await self.client.close()


class RedisWorker:
    """One agent locking with SET NX PX and releasing with compare-and-delete."""

    def __init__(self, client: Any, agent: str) -> None:
        self.client = client
        self.owner = agent
        self.rng = random.Random(agent)
        self.release = client.register_script(RELEASE_SCRIPT)

    @classmethod
    async def create(cls, port: int, i: int) -> RedisWorker:
        import redis.asyncio

        client = redis.asyncio.Redis(host="127.0.0.1", port=port)
        await client.ping()
        return cls(client, f"redis-{i}-{uuid.uuid4().hex[:6]}")

    async def cycle(self) -> float:
        key = f"lock:res-{self.rng.getrandbits(48)}"
        ok = await self.client.set(key, self.owner, nx=True, px=LEASE_S * 1000)
        assert ok, "an uncontended lock must be taken"
        t1 = time.perf_counter()
        await self.release(keys=[key], args=[self.owner])
        return t1

    async def close(self) -> None:
        await self.client.aclose()


def _missing() -> list[str]:
    return [binary for binary in INSTALL_HINT if shutil.which(binary) is None]


def main(argv: list[str]) -> int:
    parser = ab_parser(
        "peers", __doc__, seconds=6.0, reps=1, clients="1,32", quick="2 s runs (smoke test)"
    )
    args = scenario_args(parser, argv, seconds=2.0, reps=1)
    levels = client_levels(args)
    for binary in _missing():
        print(INSTALL_HINT[binary])
    if _missing():
        return 2
    print(f"machine: {machine()}")
    results: dict[tuple[str, int], list[Run]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="coordd-peers-") as tmp,
        postgres() as dsn,
        daemon_process(dsn) as daemon,
        etcd_server(Path(tmp)) as etcd,
        redis_server(Path(tmp), fsync=False) as redis,
        redis_server(Path(tmp), fsync=True) as redis_fsync,
    ):
        pg = postmaster_pid(dsn)
        sides: dict[str, tuple[Any, CpuWindow]] = {
            "coordd": (
                lambda i: CoorddWorker.create(daemon.address, i, ttl=LEASE_S),
                CpuWindow({"daemon": daemon.pid}, trees={"postgres": pg} if pg else {}),
            ),
            "etcd": (lambda i: EtcdWorker.create(etcd.port, i), CpuWindow({"etcd": etcd.pid})),
            "redis": (lambda i: RedisWorker.create(redis.port, i), CpuWindow({"redis": redis.pid})),
            "redis_fsync": (
                lambda i: RedisWorker.create(redis_fsync.port, i),
                CpuWindow({"redis": redis_fsync.pid}),
            ),
        }
        for n in levels:
            for rep in range(args.reps):
                for side, (make, window) in sides.items():
                    log.info("%s, %d client(s), rep %d/%d", side, n, rep + 1, args.reps)
                    cpu = CpuWindow(dict(window.pids), dict(window.trees))
                    res = asyncio.run(run_clients(n, args.seconds, make, cpu))
                    results.setdefault((side, n), []).append(res)

    rows = []
    rate: dict[tuple[str, int], float] = {}
    for n in levels:
        for side in sides:
            runs = results[(side, n)]
            rate[(side, n)] = median([r.cycles.throughput for r in runs])
            server_us = median(
                [
                    sum(v for k, v in r.cpu.used.items() if k != "client") / r.cycles.ops * 1e6
                    for r in runs
                ]
            )
            rows.append(
                [
                    n,
                    side,
                    rate[(side, n)],
                    median([r.ops.p50 for r in runs]),
                    median([r.ops.p99 for r in runs]),
                    f"{rate[(side, n)] / rate[('coordd', n)]:.2f}x",
                    server_us,
                    median([r.cpu.per_call_us("client", r.cycles.ops) for r in runs]),
                    median([r.cpu.load for r in runs]),
                ]
            )
    print_table(
        f"claims cycle (acquire, {LEASE_S} s lease; release) per second; per-operation latency"
        " (ms); CPU us per cycle outside and inside the load generator",
        PEER_COLUMNS,
        rows,
    )
    print("(server us: coordd counts the daemon and PostgreSQL)")
    hi, lo = levels[-1], levels[0]
    print(
        result_line(
            "peers",
            coordd_c32=rate[("coordd", hi)],
            etcd_c32=rate[("etcd", hi)],
            redis_c32=rate[("redis", hi)],
            redis_fsync_c32=rate[("redis_fsync", hi)],
            etcd_ratio_c1=rate[("coordd", lo)] / rate[("etcd", lo)],
            etcd_ratio_c32=rate[("coordd", hi)] / rate[("etcd", hi)],
            redis_fsync_ratio_c32=rate[("coordd", hi)] / rate[("redis_fsync", hi)],
        )
    )
    return 0
