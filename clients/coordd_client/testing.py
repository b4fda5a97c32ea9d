"""A real coordd for your own tests: a daemon process on an embedded PostgreSQL.

Test against the real thing rather than a mock (coordd's own tests do): claims, fencing,
idempotency and memory behave exactly as in production. Needs the server extra
(``pip install 'coordd[server]'``).

With pytest, load the plugin in your ``conftest.py``::

    pytest_plugins = ("coordd_client.testing",)

    def test_two_workers_never_share_a_document(coordd_server, coordd_namespace):
        with Client.connect(coordd_server.address, agent_id="w1") as w1, \\
             Client.connect(coordd_server.address, agent_id="w2") as w2:
            assert w1.claims.acquire(coordd_namespace, "doc-1", ttl=30).acquired
            assert not w2.claims.acquire(coordd_namespace, "doc-1", ttl=30).acquired

``coordd_server`` (one per test session) is a :class:`CoorddServer`; ``coordd_namespace`` is
a namespace of the test's own, so tests sharing the daemon do not see each other's data. Set
``COORDD_TEST_DSN`` to use an existing PostgreSQL (14 or newer) instead of starting one.

Without pytest::

    with CoorddServer() as server:
        client = Client.connect(server.address, agent_id="me")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["CoorddServer", "coordd_namespace", "coordd_server"]

_SERVING = re.compile(r"coordd serving on (\S+)")


class CoorddServer:
    """A ``coordd serve`` process on a loopback port of its own.

    Args:
        dsn: PostgreSQL to use; None starts an embedded one in a temporary directory.
        start_timeout: Seconds to wait for the daemon to serve (an embedded PostgreSQL's
            first start creates a cluster, which takes a few seconds).
        extra_args: More ``coordd serve`` flags (e.g. ``["--auth", "token", "--policy", p]``).

    Attributes:
        address: ``host:port`` to connect clients to, once started.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        start_timeout: float = 120.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args or [])
        self.address = ""
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: str | None = None
        self._log: list[str] = []
        self._drain: threading.Thread | None = None

    def start(self) -> CoorddServer:
        """Start the daemon and wait until it serves; raise RuntimeError with its log if not."""
        cmd = [sys.executable, "-m", "coordd", "serve", "--listen", "127.0.0.1:0"]
        if self.dsn:
            cmd += ["--dsn", self.dsn]
        else:
            self._tmp = tempfile.mkdtemp(prefix="coordd-testing-")
            cmd += ["--data-dir", str(Path(self._tmp) / "data")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORDD_")}
        self._proc = subprocess.Popen(
            [*cmd, *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._proc.stderr is not None
        deadline = time.monotonic() + self.start_timeout
        for line in self._proc.stderr:
            self._log.append(line)
            if (m := _SERVING.search(line)) is not None:
                self.address = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.address:
            self.stop()
            raise RuntimeError("coordd did not start:\n" + "".join(self._log[-40:]))
        stderr = self._proc.stderr
        self._drain = threading.Thread(target=lambda: self._log.extend(stderr), daemon=True)
        self._drain.start()
        return self

    @property
    def log(self) -> str:
        """What the daemon wrote to stderr so far."""
        return "".join(self._log)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after *grace* seconds) and its PostgreSQL."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        if self._drain is not None:
            self._drain.join(grace)
            self._drain = None
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> CoorddServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def coordd_server() -> Iterator[CoorddServer]:
    """A coordd daemon for the test session (``COORDD_TEST_DSN``, else embedded PostgreSQL)."""
    with CoorddServer(os.environ.get("COORDD_TEST_DSN") or None) as server:
        yield server


@pytest.fixture
def coordd_namespace(request: pytest.FixtureRequest) -> str:
    """A namespace no other test uses: ``test/<test name>-<random>``."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", request.node.name)[:40]
    return f"test/{name}-{uuid.uuid4().hex[:8]}"
