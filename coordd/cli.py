"""The ``coordd`` command: a small dispatcher over subcommand modules.

Each subcommand lives in its own module (listed in :data:`COMMANDS`) that exposes
``register(subparsers)``: it adds its parser(s) and sets ``run`` (a function of the parsed
arguments returning the exit code) with ``parser.set_defaults(run=...)``. Modules import only
the standard library at the top, so ``coordd --help`` and client-side subcommands work with the
base install; server dependencies are imported inside ``run`` (see ``coordd.commands._server``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from coordd import __version__

COMMANDS: tuple[str, ...] = (
    "coordd.commands.serve",
    "coordd.commands.migrate",
    "coordd.inject.cli",
    "coordd.shell",
    "coordd.mcp_server.cli",
)
"""Subcommand modules, in the order ``coordd --help`` lists them."""


def parser() -> argparse.ArgumentParser:
    """The ``coordd`` argument parser with every subcommand registered."""
    root = argparse.ArgumentParser(
        prog="coordd",
        description="coordd: claims, idempotency, memory and context for multi-agent systems.",
    )
    root.add_argument("--version", action="version", version=f"coordd {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run ``coordd`` with ``argv`` (default: the process arguments); return the exit code."""
    root = parser()
    args = root.parse_args(argv)
    if args.command is None:
        root.print_help()
        return 2
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
