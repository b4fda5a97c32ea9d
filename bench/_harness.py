"""Shared benchmark plumbing: a private PostgreSQL, an in-process daemon, stats, output."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("bench")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", stream=sys.stderr
    )
    for noisy in ("pgserver", "psycopg", "coordd", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@contextmanager
def postgres() -> Iterator[str]:
    """A DSN: $COORDD_BENCH_DSN if set, else a private pgserver in a temp dir (migrated)."""
    from coordd.storage.embedded import EmbeddedPostgres
    from coordd.storage.migrate import migrate

    dsn = os.environ.get("COORDD_BENCH_DSN")
    if dsn:
        asyncio.run(migrate(dsn))
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pgdata")
        log.info("starting a private PostgreSQL in %s", tmp)
        dsn = pg.start()
        try:
            asyncio.run(migrate(dsn))
            yield dsn
        finally:
            pg.stop()


class DaemonThread:
    """A coordd Daemon on its own thread and loop (like another process, but sharing the GIL)."""

    def __init__(self, dsn: str, **settings: Any) -> None:
        from coordd.config import Settings
        from coordd.server.app import Daemon

        base = Settings(listen="127.0.0.1:0", dsn=dsn, **settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.daemon = Daemon(base)
        self.run(self.daemon.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    @property
    def address(self) -> str:
        return self.daemon.address

    def stop(self) -> None:
        self.run(self.daemon.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Stats:
    """Completed operations and their latencies (seconds) over a wall-clock window."""

    ops: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k] * 1000

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p99(self) -> float:
        return self.pct(99)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cpu, Python {platform.python_version()}"


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(_fmt(x).rjust(w) for x, w in zip(row, widths, strict=True)))


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def result_line(scenario: str, **figures: float) -> str:
    """The closing ``RESULT <scenario> name=value ...`` line."""
    parts = " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    return f"RESULT {scenario} {parts}"


class Progress:
    """Logs progress of long work at most every *every_s* seconds."""

    def __init__(self, what: str, total: int, every_s: float = 2.0) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.done = 0
        self._last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            log.info(
                "%s: %d/%d (%.0f%%)",
                self.what,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
            )
