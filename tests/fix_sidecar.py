"""Sidecars for tests: in-process (on the test's loop) or as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
    address: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_sidecar(upstream: str, agent_id: str, *extra: str, **env: str) -> SidecarProcess:
    """Run ``python -m coordd_sidecar`` and wait for the line naming its address."""
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
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the sidecar prints it once listening (or exits)
    if not line.startswith("coordd-sidecar listening on "):
        proc.kill()
        raise RuntimeError(f"sidecar did not start: {line!r} (exit {proc.wait(10)})")
    return SidecarProcess(proc, line.rsplit(" ", 1)[1].strip())


@pytest.fixture
def sidecar_process() -> Iterator[Any]:
    """Factory: ``sidecar_process(upstream, agent_id, *flags)`` -> a running SidecarProcess."""
    started: list[SidecarProcess] = []

    def start(upstream: str, agent_id: str, *extra: str, **env: str) -> SidecarProcess:
        sp = spawn_sidecar(upstream, agent_id, *extra, **env)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()
