"""What the daemon-side subcommands share: the server-extra check, logging, error exits."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping

Command = Callable[[argparse.Namespace], int]
"""A subcommand's body: parsed arguments in, exit code out."""

SERVER_MODULES = ("psycopg", "psycopg_pool", "hnswlib", "numpy", "pgserver")
"""Import names of the ``[server]`` extra's packages."""

LOG_LEVELS = ("debug", "info", "warning", "error")

GRPC_IO_CHOICES = ("poller", "eventengine")
"""``COORDD_GRPC_IO``: how the daemon's gRPC does its socket I/O (default ``poller``)."""

POLLER_EXPERIMENTS = (
    "-event_engine_client,-event_engine_listener,"
    "-event_engine_for_all_other_endpoints,-event_engine_callback_cq"
)
"""gRPC core's experiment switches back to its epoll poller (``GRPC_EXPERIMENTS``)."""


def grpc_io_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that give a process started with *environ* the gRPC I/O engine that
    ``COORDD_GRPC_IO`` chooses (empty: gRPC's default, or the operator's own choice).

    ``poller`` (the default): gRPC core's epoll poller, run by the thread that waits on the
    completion queue (grpc.aio's poller thread) itself. With grpcio's default EventEngine, socket
    I/O runs on EventEngine threads that hand every completion to that thread: about eight
    futex calls per stream message instead of one (strace), and about a third of the bare
    echo's CPU per message (bench/RESULTS.md, session 18). ``eventengine`` keeps grpcio's
    default. A ``GRPC_EXPERIMENTS`` set by the operator is left as it is.

    Raises:
        ValueError: ``COORDD_GRPC_IO`` names neither choice.
    """
    choice = environ.get("COORDD_GRPC_IO", "").strip().lower() or "poller"
    if choice not in GRPC_IO_CHOICES:
        raise ValueError(
            f"COORDD_GRPC_IO={environ['COORDD_GRPC_IO']!r}: "
            f"choose one of {', '.join(GRPC_IO_CHOICES)}"
        )
    if choice == "eventengine" or environ.get("GRPC_EXPERIMENTS"):
        return {}
    return {"GRPC_EXPERIMENTS": POLLER_EXPERIMENTS}


def choose_grpc_io(environ: MutableMapping[str, str]) -> str:
    """Apply :func:`grpc_io_environment` to this process, before gRPC is imported; say which.

    Raises:
        ValueError: ``COORDD_GRPC_IO`` names neither choice.
    """
    extra = grpc_io_environment(environ)
    if environ.get("GRPC_EXPERIMENTS"):
        return f"GRPC_EXPERIMENTS={environ['GRPC_EXPERIMENTS']} (set by the environment)"
    if not extra:
        return "eventengine"
    if "grpc" in sys.modules:  # gRPC reads its experiments once, when imported
        return "eventengine (gRPC was imported before the choice could apply)"
    environ.update(extra)
    return "poller"


def missing_server_modules() -> list[str]:
    """The server extra's modules this interpreter cannot import."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level`` (env ``COORDD_LOG_LEVEL``)."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get("COORDD_LOG_LEVEL", "info"),
        choices=LOG_LEVELS,
        help="log level (env COORDD_LOG_LEVEL)",
    )


def server_command(body: Command) -> Command:
    """Wrap a daemon-side subcommand: check the server extra, set up logging, map exits.

    Without the ``[server]`` extra the command prints one line naming it and exits 2. Config
    errors exit 2; an unreachable database or another failure to start exits 1; each is one
    line on stderr.
    """

    def run(args: argparse.Namespace) -> int:
        missing = missing_server_modules()
        if missing:
            print(
                f"coordd {args.command}: needs the server extra (missing: {', '.join(missing)});"
                " install it with: pip install 'coordd[server]'",
                file=sys.stderr,
            )
            return 2
        try:
            grpc_io = choose_grpc_io(os.environ)
        except ValueError as exc:
            print(f"coordd {args.command}: {exc}", file=sys.stderr)
            return 2
        # The embedded PostgreSQL is managed with subprocesses; gRPC fork handlers only add noise.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        # gRPC's poller thread and the event loop hand the GIL back and forth on every call; the
        # default 5 ms switch interval shows up as latency (measured: a GetMemory 2.4 -> 1.9 ms).
        sys.setswitchinterval(float(os.environ.get("COORDD_SWITCH_INTERVAL", "0.001")))
        logging.basicConfig(
            level=getattr(logging, getattr(args, "log_level", "info").upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        for noisy in ("pgserver", "psycopg.pool", "filelock", "fasteners"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("coordd").debug("gRPC I/O: %s", grpc_io)

        from coordd.config import ConfigError, StartupError
        from coordd.errors import StorageUnavailableError

        try:
            return body(args)
        except ConfigError as exc:
            print(f"coordd: {exc}", file=sys.stderr)
            return 2
        except (StorageUnavailableError, StartupError) as exc:
            print(f"coordd: {exc}", file=sys.stderr)
            return 1

    return run
