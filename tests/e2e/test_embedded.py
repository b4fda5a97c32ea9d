"""`coordd serve` with no DSN: embedded PostgreSQL, clean stop, restart with data intact."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from coordd_client import Client
from tests.fix_daemon import serve_process

COORDD_SERVE = (sys.executable, "-m", "coordd", "serve")
SERVING = re.compile(r"coordd serving on (\S+)")


@contextmanager
def serve(data_dir: Path, log: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = serve_process("--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
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


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's tmp_path.

    When run as root, pgserver runs PostgreSQL as the user ``pgserver``, which must traverse
    the path; pytest resets ``/tmp/pytest-of-<user>`` to 0700 whenever another session starts,
    which made initdb fail with "Permission denied" on a shared machine.
    """
    with tempfile.TemporaryDirectory(prefix="coordd-test-data-") as tmp:
        yield Path(tmp) / "data"


def test_embedded_default_serves_stops_and_restarts(data_dir: Path) -> None:
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


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL server processes started on *data_dir* (the postmaster and its children)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(cmdline):
            found.append(proc)
    return found


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def wait_until(check: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.1)


def test_after_a_kill_9_the_next_daemon_owns_and_stops_postgres(data_dir: Path) -> None:
    log: list[str] = []
    with serve(data_dir, log) as (proc, _):
        orphan = postmaster_pid(data_dir)
        proc.kill()  # SIGKILL: no chance to stop its PostgreSQL
        proc.wait(30)
    assert psutil.pid_exists(orphan), "PostgreSQL outlives a daemon killed with SIGKILL"

    log2: list[str] = []
    with serve(data_dir, log2) as (proc, address):
        with Client.connect(address, agent_id="agent-1") as client:
            assert client.claims.acquire("acme/docs", "doc-1", ttl=60).acquired
        # A second daemon on the same data directory refuses in one line naming the owner.
        second = subprocess.run(
            [*COORDD_SERVE, "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("COORDD_")},
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"in use by coordd pid {proc.pid}" in lines[0] and str(data_dir) in lines[0]
        assert stop(proc) == 0
    wait_until(lambda: not postgres_processes(data_dir), "no PostgreSQL left on the data dir")
    assert not psutil.pid_exists(orphan)


def test_a_port_in_use_is_one_line_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            # The DSN is never reached: the address is checked first.
            [
                *COORDD_SERVE,
                "--listen",
                f"127.0.0.1:{port}",
                "--dsn",
                "postgresql://a@127.0.0.1:1/d",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"coordd: cannot listen on 127.0.0.1:{port}: address already in use (another process "
        "listens there, perhaps another coordd: stop it or pass another --listen)"
    ]


def test_an_unforeseen_start_failure_is_one_line_and_undone(scratch_dsn: str) -> None:
    """A role that may not use coordd's schema: the migration fails inside PostgreSQL."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS coordd_weak")
        conn.execute("CREATE ROLE coordd_weak LOGIN")
    weak_dsn = make_conninfo(scratch_dsn, user="coordd_weak")
    try:
        proc = subprocess.run(
            [*COORDD_SERVE, "--listen", "127.0.0.1:0", "--dsn", weak_dsn],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        with psycopg.connect(scratch_dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE coordd_weak")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("coordd: cannot start: InsufficientPrivilege: permission denied")
    assert line.endswith("(--log-level debug shows the traceback)")
