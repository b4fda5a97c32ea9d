"""A real coordd daemon on port 0, running on its own thread and event loop.

A separate loop lets blocking clients (which wait in the test's thread) and asyncio clients
(on the test's loop) both talk to it, as they would to a daemon in another process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from coordd.config import Settings
from coordd.server.app import Daemon
from coordd_client import AsyncClient, Client
from tests.fix_db import is_unit_test

T = TypeVar("T")


def serve_process(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``coordd serve ARGS`` as a child process, its stderr piped as text (read it for
    "serving on"), its environment this one's without any COORDD_* setting, plus *env*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COORDD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "coordd", "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**clean, **(env or {})},
    )


class DaemonThread:
    """Run a Daemon on a private loop; ``run(coro)`` executes on that loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.daemon = Daemon(settings)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> DaemonThread:
        self.run(self.daemon.start())
        return self

    @property
    def address(self) -> str:
        return self.daemon.address

    def sweep(self) -> dict[str, int]:
        return self.run(self.daemon.sweep_once())

    def stop(self, grace: float = 1.0) -> None:
        try:
            self.run(self.daemon.stop(grace))
            # gRPC cancels the streams it was serving; let those tasks finish on this loop
            # rather than be destroyed pending when it closes (noise at interpreter exit).
            self.run(_finish_leftover_tasks(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


async def _finish_leftover_tasks() -> None:
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.wait(leftover, timeout=5)


def daemon_settings(dsn: str, **changes: Any) -> Settings:
    # The sweeper runs only when a test asks (daemon.sweep()), so tests decide when time passes.
    base = Settings(listen="127.0.0.1:0", dsn=dsn, sweep_interval_s=3600.0, pool_max=8)
    return base.with_(**changes)


_session_daemon: list[DaemonThread] = []


@pytest.fixture(scope="session")
def daemon(pg_dsn: str) -> Iterator[DaemonThread]:
    d = DaemonThread(daemon_settings(pg_dsn)).start()
    _session_daemon.append(d)
    try:
        yield d
    finally:
        _session_daemon.clear()
        d.stop()


@pytest.fixture(autouse=True)
def _fresh_derived_state(clean_db: None, request: pytest.FixtureRequest) -> None:
    """Tests truncate the tables under the session daemon: drop what it derived from them."""
    if is_unit_test(request):
        return
    for d in _session_daemon:
        assert d.daemon.indexer is not None
        d.run(d.daemon.indexer.reset())


@pytest.fixture
def start_daemon(pg_dsn: str) -> Iterator[Any]:
    """Factory for extra daemons (own settings, restarts); all are stopped after the test."""
    started: list[DaemonThread] = []

    def start(**changes: Any) -> DaemonThread:
        dsn = changes.pop("dsn", pg_dsn)
        d = DaemonThread(daemon_settings(dsn, **changes)).start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.loop.is_running():
            d.stop()


@pytest.fixture
async def aclient(daemon: DaemonThread) -> AsyncIterator[AsyncClient]:
    client = await AsyncClient.connect(daemon.address, agent_id="agent-a", role="worker")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def connect(daemon: DaemonThread) -> AsyncIterator[Any]:
    """Factory: ``await connect(agent_id, role=...)`` -> AsyncClient, closed after the test."""
    clients: list[AsyncClient] = []

    async def make(agent_id: str, role: str = "worker", address: str | None = None) -> AsyncClient:
        c = await AsyncClient.connect(address or daemon.address, agent_id=agent_id, role=role)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    c = Client.connect(daemon.address, agent_id="agent-s", role="worker")
    try:
        yield c
    finally:
        c.close()


def write_policy(tmp: Path, text: str) -> Path:
    path = tmp / "policy.toml"
    path.write_text(text)
    return path
