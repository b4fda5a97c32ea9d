"""Sidecars for tests: in-process (on the test's loop) or as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coordd_client import CacheConfig
from coordd_sidecar import Sidecar, SidecarConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def start_sidecar(daemon: Any) -> AsyncIterator[Any]:
    """Factory: ``await start_sidecar(agent_id=..., **config)`` -> a started Sidecar."""
    started: list[Sidecar] = []

    async def start(
        agent_id: str = "agent-a",
        role: str = "worker",
        upstream: str | None = None,
        cache: CacheConfig | None = None,
        **changes: Any,
    ) -> Sidecar:
        config = SidecarConfig(
            upstream=upstream or daemon.address,
            listen=changes.pop("listen", "127.0.0.1:0"),
            agent_id=agent_id,
            role=role,
            cache=cache or CacheConfig(),
            **changes,
        )
        sc = Sidecar(config)
        await sc.start()
        started.append(sc)
        return sc

    yield start
    for sc in started:
        await sc.stop()


@dataclass
class SidecarProcess:
    proc: subprocess.Popen[str]
    address: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    """The cache counters it printed when stopped."""

    def wait_ready(self) -> SidecarProcess:
        """Wait for the line naming its address (printed once it listens)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("coordd-sidecar listening on "):
            self.proc.kill()
            raise RuntimeError(f"sidecar did not start: {line!r} (exit {self.proc.wait(10)})")
        self.address = line.rsplit(" ", 1)[1].strip()
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            for line in self.proc.stdout.read().splitlines():
                if line.startswith("coordd-sidecar cache "):
                    pairs = (kv.split("=") for kv in line.split()[2:])
                    self.stats = {k: int(v) for k, v in pairs}
            self.proc.stdout.close()


def launch_sidecar(upstream: str, agent_id: str, *extra: str, **env: str) -> SidecarProcess:
    """Start ``python -m coordd_sidecar`` (call ``wait_ready()`` before using it)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordd_sidecar",
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--agent-id",
            agent_id,
            "--role",
            "worker",
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'sidecar'}:{ROOT / 'clients'}:{ROOT}", **env},
    )
    return SidecarProcess(proc)


@pytest.fixture
def sidecar_process() -> Iterator[Any]:
    """Factory: ``sidecar_process(upstream, agent_id, *flags)`` -> a running SidecarProcess."""
    started: list[SidecarProcess] = []

    def start(upstream: str, agent_id: str, *extra: str, **env: str) -> SidecarProcess:
        sp = launch_sidecar(upstream, agent_id, *extra, **env)
        started.append(sp)
        return sp.wait_ready()

    yield start
    for sp in started:
        sp.stop()
