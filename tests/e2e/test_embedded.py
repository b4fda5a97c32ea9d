"""`coordd serve` with no DSN: embedded PostgreSQL, clean stop, restart with data intact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coordd_client import Client

SERVING = re.compile(r"coordd serving on (\S+)")


@contextmanager
def serve(data_dir: Path, log: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDD_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordd",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    address = None
    deadline = time.monotonic() + 90
    for line in proc.stderr:
        log.append(line)
        if (m := SERVING.search(line)) is not None:
            address = m.group(1)
            break
        assert time.monotonic() < deadline, "daemon did not start in time"
    assert address is not None, "".join(log)
    drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        yield proc, address
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        drain.join(10)
        proc.stderr.close()


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_embedded_default_serves_stops_and_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log: list[str] = []
    with serve(data_dir, log) as (proc, address):
        with Client.connect(address, agent_id="agent-1") as client:
            got = client.claims.acquire("acme/docs", "doc-1", ttl=600, progress="p")
            assert got.acquired and got.claim is not None
            token = got.claim.fencing_token
        assert stop(proc) == 0
    text = "".join(log)
    assert f"embedded PostgreSQL in {data_dir}" in text
    assert "coordd stopped" in text
    assert "Traceback" not in text

    log2: list[str] = []
    with serve(data_dir, log2) as (proc, address):
        with Client.connect(address, agent_id="agent-2") as client:
            held = client.claims.get("acme/docs", "doc-1")
            assert held is not None
            assert (held.holder_agent_id, held.fencing_token, held.progress) == (
                "agent-1",
                token,
                "p",
            )
            assert not client.claims.acquire("acme/docs", "doc-1", ttl=5).acquired
        assert stop(proc) == 0
    assert "applying migration" not in "".join(log2), "the schema was kept, not recreated"


def test_bad_flags_get_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coordd", "serve", "--listen", "0.0.0.0:7420", "--dsn", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without credentials" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_database_is_one_clear_line_without_the_password() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordd",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dsn",
            "postgresql://agent:hunter2@127.0.0.1:1/coordd",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot connect to PostgreSQL (database coordd on 127.0.0.1:1)" in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
