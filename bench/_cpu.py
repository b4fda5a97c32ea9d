"""CPU per call: process CPU time over a measured window, divided by the calls in it.

On a shared machine throughput moves with everyone else's load; the CPU a process spends per
call moves much less, and it is what a deployment pays for. Each window records the CPU time
(user + system, all threads) of the processes it watches, of this load-generator process, and
the load average, so every figure can be printed with its conditions.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, reaped_children: bool = False) -> float:
    """CPU seconds (user + system, all threads) process *pid* has used so far (0 if gone).

    With *reaped_children*, add the CPU of its children that exited and were waited for.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name (which may hold spaces) start at field 3; utime, stime,
    # cutime and cstime are fields 14 to 17.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of process *pid* in MiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_of(pid: int) -> list[int]:
    """The ids of *pid*'s direct children."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's process id, if it runs on this host (read from its data dir)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    try:
        return int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0]) if row else None
    except (OSError, ValueError):
        return None


@dataclass
class CpuWindow:
    """CPU seconds used during a window by named processes and by this process.

    ``with CpuWindow({"daemon": pid}, trees={"postgres": postmaster}) as w: ...`` then
    ``w.used["daemon"]``, ``w.used["client"]`` (this process), ``w.seconds`` and ``w.load``.
    A tree counts a process and its children (PostgreSQL's backends), live or exited.
    """

    pids: dict[str, int] = field(default_factory=dict)
    trees: dict[str, int] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    load: float = 0.0
    """The 1-minute load average at the end of the window."""

    def _sample(self) -> dict[str, float]:
        sample = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        for name, root in self.trees.items():
            # The root with its reaped children plus its live ones: a backend that exits
            # inside the window moves from the second term to the first.
            sample[name] = process_cpu_s(root, reaped_children=True) + sum(
                process_cpu_s(p) for p in children_of(root)
            )
        return sample

    def __enter__(self) -> CpuWindow:
        self._start = self._sample()
        self._client0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.used = {"client": time.process_time() - self._client0}
        end = self._sample()
        for name, cpu in end.items():
            self.used[name] = max(0.0, cpu - self._start[name])
        self.load = os.getloadavg()[0]

    def per_call_us(self, name: str, calls: int) -> float:
        """Microseconds of *name*'s CPU per call over the window."""
        return self.used.get(name, 0.0) / calls * 1e6 if calls else float("nan")
