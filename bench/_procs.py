"""Run the daemon as a separate process, as it is deployed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_SERVING = re.compile(r"coordd serving on (\S+)")


@dataclass(frozen=True)
class DaemonProcess:
    address: str
    pid: int


@contextmanager
def daemon_process(
    dsn: str, *extra: str, env: dict[str, str] | None = None, module: str = "coordd"
) -> Iterator[DaemonProcess]:
    """Start ``coordd serve --dsn DSN --listen 127.0.0.1:0``; yield its address and pid.

    *module* runs instead of ``coordd`` (a wrapper that sets the process up, then runs it).
    """
    cmd = [sys.executable, "-m", module, "serve", "--dsn", dsn, "--listen", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    address = None
    deadline = time.monotonic() + 60
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = _SERVING.search(line)
        if m:
            address = m.group(1)
            break
    if address is None:
        proc.kill()
        raise RuntimeError("daemon did not start:\n" + "".join(lines))
    # Keep draining stderr so the daemon never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield DaemonProcess(address, proc.pid)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
