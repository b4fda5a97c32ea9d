"""The scenarios' command line: the A/B flags (run length, repetitions, concurrency levels),
--quick, and the start every scenario makes."""

from __future__ import annotations

import argparse
from typing import Any

from bench._harness import setup_logging


def ab_parser(
    scenario: str, doc: str | None, *, seconds: float, reps: int, clients: str, quick: str
) -> argparse.ArgumentParser:
    """The flags of an A/B scenario measured at several concurrency levels (``--seconds``,
    ``--reps``, ``--clients``, ``--quick`` described by *quick*); a scenario adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m bench {scenario}", description=doc)
    parser.add_argument("--seconds", type=float, default=seconds, help="per measured run")
    parser.add_argument("--reps", type=int, default=reps, help="A/B repetitions (interleaved)")
    parser.add_argument("--clients", default=clients, help="comma-separated concurrency levels")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def client_levels(args: argparse.Namespace) -> list[int]:
    """The concurrency levels ``--clients`` names."""
    return [int(x) for x in args.clients.split(",")]


def scenario_args(
    parser: argparse.ArgumentParser, argv: list[str], **quick: Any
) -> argparse.Namespace:
    """A scenario's arguments from *argv*; with ``--quick`` (a smoke test), the values in
    *quick* replace the flags' of the same name. Sets up the bench's logging."""
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        for name, value in quick.items():
            setattr(args, name, value)
    setup_logging()
    return args
