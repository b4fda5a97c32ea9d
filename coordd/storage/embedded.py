"""The embedded default: a private PostgreSQL started through the pgserver package.

coordd owns the server's lifecycle rather than pgserver's shared handle list: pgserver stops a
server only when the pid list in ``.handle_pids.json`` holds nothing but the caller, so after a
daemon was killed with SIGKILL its dead pid stayed there and every later clean stop left
``postgres -D <data-dir>`` running. Instead:

- a daemon holds an exclusive lock on the data directory for as long as it runs (and records
  its pid in ``coordd.pid``), so a second daemon on the same directory is refused, naming it;
- holding that lock, a PostgreSQL already running on the directory is a leftover of a daemon
  that died: the new daemon adopts it, and its own stop stops it, whatever the pid list says.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil

from coordd.config import ConfigError
from coordd.errors import StorageUnavailableError

logger = logging.getLogger(__name__)

PID_FILE = "coordd.pid"
# pgserver's list of processes using the server; coordd decides alone, so it is kept empty.
PGSERVER_PIDS = ".handle_pids.json"
STOP_TIMEOUT_S = 60


class DataDirInUseError(ConfigError):
    """Another live coordd owns this data directory."""


class _PgserverErrors(logging.Filter):
    """Keeps pgserver's multi-line error dumps for one line of reason (all of it at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.lines += record.getMessage().splitlines()
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True

    def reason(self) -> str | None:
        """The first line in which PostgreSQL or its tools state the error."""
        for line in self.lines:
            text = line.strip()
            for mark in ("error:", "FATAL:", "PANIC:", "ERROR:"):
                if mark in text and text.split(mark, 1)[1].strip():
                    return text
        return None


class EmbeddedPostgres:
    """A PostgreSQL server in *data_dir*, started on :meth:`start`, stopped on :meth:`stop`.

    The data directory survives restarts; starting on an existing one reuses its data, and a
    server left running there by a daemon that was killed is adopted and stopped on ``stop``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self._lock_fd: int | None = None

    def start(self) -> str:
        """Lock the data directory, start (or adopt) the server and return its connection URI.

        Raises:
            DataDirInUseError: another live coordd uses the directory.
            StorageUnavailableError: the server cannot be started.
        """
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data directory {self.data_dir}: {exc}") from exc
        self._lock()
        logger.info("no --dsn given: starting embedded PostgreSQL in %s", self.data_dir)
        errors = _PgserverErrors()
        pgserver_log = logging.getLogger("pgserver")
        pgserver_log.addFilter(errors)
        try:
            if (self.data_dir / "PG_VERSION").exists():
                # initdb wants an empty directory: write nothing into a fresh one before it.
                (self.data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
                (self.data_dir / PGSERVER_PIDS).write_text("[]")
                self._forget_stale_postmaster()
            with warnings.catch_warnings():
                # pgserver asks platformdirs for a runtime dir that containers often lack.
                warnings.simplefilter("ignore")
                from pgserver import get_server  # type: ignore[attr-defined]

                # cleanup_mode=None: pgserver never stops the server; stop() does.
                self._server = get_server(self.data_dir, cleanup_mode=None)
            uri: str = self._server.get_uri()
            (self.data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        except Exception as exc:
            self._unlock()
            reason = errors.reason() or str(exc).splitlines()[0]
            raise StorageUnavailableError(
                f"cannot start the embedded PostgreSQL in {self.data_dir}: {reason}"
            ) from exc
        finally:
            pgserver_log.removeFilter(errors)
        logger.info("embedded PostgreSQL running in %s", self.data_dir)
        return uri

    def stop(self) -> None:
        """Stop the server (adopted or started here) and release the data directory."""
        server, self._server = self._server, None
        try:
            if server is not None:
                server.cleanup()  # pgserver's bookkeeping; with cleanup_mode=None it stops nothing
                self._stop_postgres(server)
        finally:
            self._unlock()

    def _stop_postgres(self, server: Any) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        postmaster: psutil.Process | None = server.get_postmaster_info().process
        try:
            # Fast shutdown: open sessions are ended (the daemon has closed its pool by now).
            pg_ctl(
                ["-w", "-t", str(STOP_TIMEOUT_S), "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=server.system_user,
                timeout=STOP_TIMEOUT_S + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            logger.warning("pg_ctl stop failed; terminating the postmaster", exc_info=True)
        if postmaster is not None and postmaster.is_running():
            postmaster.terminate()
            with contextlib.suppress(psutil.TimeoutExpired):
                postmaster.wait(10)
            if postmaster.is_running():
                postmaster.kill()
        logger.info("embedded PostgreSQL stopped")

    def _forget_stale_postmaster(self) -> None:
        """Drop a ``postmaster.pid`` whose pid now belongs to something other than PostgreSQL.

        After a reboot or a container restart the recorded pid may be reused by an unrelated
        process; pgserver would then take the server for running and never start it.
        """
        path = self.data_dir / "postmaster.pid"
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            alive = psutil.Process(pid).name() == "postgres"
        except psutil.Error:
            alive = False
        if not alive:
            logger.info("removing stale %s (pid %d is not PostgreSQL)", path, pid)
            path.unlink(missing_ok=True)

    def _lock(self) -> None:
        # The lock is on the directory itself (nothing may be written into a directory that
        # initdb has yet to fill); the kernel drops it when this process dies, however it dies.
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                owner = f"coordd pid {int((self.data_dir / PID_FILE).read_text())}"
            except (OSError, ValueError):
                owner = "another coordd (still starting)"
            raise DataDirInUseError(
                f"data directory {self.data_dir} is in use by {owner}: "
                "stop that daemon first, or pass another --data-dir"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self.data_dir / PID_FILE).unlink(missing_ok=True)
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None
