"""The command line's vocabulary: exit codes, flags, and the errors the CLI raises itself.

Standard library only at import: ``coordd --help`` and every parser are built without
importing the client (``coordd.cli``); ``connect`` imports it when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordd_client import AsyncClient

OK = 0
FAILED = 1
USAGE = 2
NOT_FOUND = 3
UNAVAILABLE = 4
NOT_ALLOWED = 5
INTERRUPTED = 130

DEFAULT_ADDR = "127.0.0.1:7420"
DEFAULT_AGENT_ID = "coordd-cli"

EXIT_CODES = (
    "exit codes: 0 ok, 1 refused by coordd, 2 usage, 3 not found, 4 daemon unavailable, "
    "5 not allowed"
)


class UsageError(Exception):
    """A command line the CLI refuses before calling coordd (exit code 2)."""


class NotFound(Exception):
    """What the command asked for does not exist (exit code 3); the message says what."""


def subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A leaf command (``coordd claims list``): its help, and the exit codes below it."""
    return sub.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        epilog=EXIT_CODES,
    )


@contextlib.contextmanager
def leaf(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    run: Callable[[argparse.Namespace], Awaitable[int]],
    *,
    description: str | None = None,
    namespace: bool = True,
    limit: bool = False,
) -> Iterator[argparse.ArgumentParser]:
    """A leaf command that calls coordd, built in one order: ``NS`` (with *namespace*), the
    arguments the ``with`` block adds, ``--limit`` (with *limit*), the connection flags; the
    command then runs *run*."""
    parser = subcommand(sub, name, summary, description)
    if namespace:
        add_namespace(parser)
    yield parser
    if limit:
        parser.add_argument(
            "--limit", type=int, default=0, metavar="N", help="at most N (default: all)"
        )
    add_connection_flags(parser)
    parser.set_defaults(shell_run=run)


def add_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("namespace", metavar="NS", help="the namespace, e.g. acme/docs")


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that talks to coordd takes (after the command, kubectl-style)."""
    conn = parser.add_argument_group("connection")
    conn.add_argument(
        "--addr",
        help="daemon or sidecar address: host:port or a Unix socket path (env COORDD_ADDR, "
        "default 127.0.0.1:7420)",
    )
    conn.add_argument(
        "--agent-id",
        metavar="ID",
        help="act as this agent (env COORDD_AGENT_ID, default coordd-cli); dev mode only, "
        "a token or certificate decides it otherwise",
    )
    conn.add_argument("--role", help="act in this role (env COORDD_ROLE); dev mode only")
    conn.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="file holding a bearer token, for daemons in token mode (env COORDD_TOKEN_FILE)",
    )
    conn.add_argument(
        "--tls-ca", type=Path, metavar="PATH", help="CA of the daemon's certificate: use TLS"
    )
    conn.add_argument(
        "--tls-cert", type=Path, metavar="PATH", help="this agent's certificate, for mtls"
    )
    conn.add_argument("--tls-key", type=Path, metavar="PATH", help="the key of --tls-cert")
    conn.add_argument(
        "--connect-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="give up reaching the daemon after this long (default 3)",
    )
    conn.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on each call after this long (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def target(args: argparse.Namespace) -> str:
    """The address the client will use, for messages."""
    return str(args.addr or os.environ.get("COORDD_ADDR") or DEFAULT_ADDR)


async def connect(args: argparse.Namespace) -> AsyncClient:
    """Connect as the flags say: ``async with await connect(args) as client`` (see
    ``_runner.connect``)."""
    from ._runner import connect as connect_now

    return await connect_now(args)
