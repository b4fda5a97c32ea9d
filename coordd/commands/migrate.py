"""``coordd migrate``: apply the database schema and exit."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from coordd.commands._server import add_log_level, server_command


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``migrate`` to the ``coordd`` command."""
    mig = subparsers.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply the table migrations not yet applied and (re)create every SQL "
        "function, then exit.",
    )
    mig.add_argument("--dsn", help="PostgreSQL connection string (env COORDD_DSN)")
    add_log_level(mig)
    mig.set_defaults(run=server_command(run))


def run(args: argparse.Namespace) -> int:
    """Migrate the database named by ``--dsn`` or ``COORDD_DSN``."""
    from coordd.config import ConfigError
    from coordd.storage.migrate import migrate

    dsn = args.dsn or os.environ.get("COORDD_DSN")
    if not dsn:
        raise ConfigError("migrate needs --dsn or COORDD_DSN")
    applied = asyncio.run(migrate(dsn))
    print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0
