"""Memory: read entries, their versions and their nearest neighbours.

coordd memory get NS KEY [--as-of TIME]          one entry, with its provenance
coordd memory list PREFIX [--tier T] [--tag T]   live entries under a namespace prefix
coordd memory history NS KEY                     every version, newest first
coordd memory search PREFIX --embedding V -k N   nearest entries by cosine distance
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from coordd.vocabulary import Tier

from . import _render as out
from ._flags import NotFound, UsageError, connect, leaf

if TYPE_CHECKING:
    from coordd_client import AsyncClient, MemoryEntry

TIERS = tuple(t.label for t in Tier)


def _row(e: MemoryEntry) -> tuple[str, ...]:
    return (
        e.namespace,
        e.key,
        e.tier,
        str(e.revision),
        e.provenance.agent_id,
        out.when(e.provenance.write_time),
        out.compact_json(e.value),
    )


HEADERS = ("NAMESPACE", "KEY", "TIER", "REVISION", "WRITER", "WRITTEN", "VALUE")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tier", choices=TIERS, help="only this tier")
    p.add_argument("--tag", action="append", default=[], help="only entries with this tag")
    p.add_argument("--task", default="", metavar="ID", help="only this task's entries")
    p.add_argument("--stale", action="store_true", help="include entries past review time")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="memory_command", metavar="SUBCOMMAND", required=True)

    with leaf(sub, "get", "one entry with its provenance (exit 3 if absent)", get_entry) as p:
        p.add_argument("key", metavar="KEY", help="the entry's key")
        p.add_argument(
            "--as-of",
            type=_time,
            metavar="TIME",
            help="the version current at TIME (ISO 8601, e.g. 2026-01-31T12:00:00Z)",
        )

    summary = "live entries under a namespace prefix"
    with leaf(sub, "list", summary, list_entries, namespace=False, limit=True) as p:
        p.add_argument("prefix", metavar="PREFIX", help="a namespace; entries below it are listed")
        _filters(p)

    with leaf(sub, "history", "every version of a key, newest first", entry_history) as p:
        p.add_argument("key", metavar="KEY", help="the entry's key")

    summary = "nearest entries to an embedding, filtered first"
    with leaf(sub, "search", summary, search_entries, namespace=False) as p:
        p.add_argument("prefix", metavar="PREFIX", nargs="+", help="namespace prefixes to search")
        p.add_argument(
            "--embedding",
            required=True,
            metavar="VECTOR",
            help="the query vector: a JSON array or comma-separated numbers; - reads stdin",
        )
        p.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
        _filters(p)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _vector(text: str) -> list[float]:
    if text == "-":
        text = sys.stdin.read()
    text = text.strip()
    try:
        raw = json.loads(text) if text.startswith("[") else text.split(",")
        vector = [float(v) for v in raw]
    except (ValueError, TypeError):
        raise UsageError(
            "--embedding: expected a JSON array or comma-separated numbers, e.g. [0.1,0.9,0.2]"
        ) from None
    if not vector:
        raise UsageError("--embedding: the vector is empty")
    return vector


async def get_entry(args: argparse.Namespace) -> int:
    async with await connect(args) as client:
        entry = await client.memory.get(args.namespace, args.key, as_of=args.as_of)
    if entry is None:
        raise NotFound(f"no entry {args.key!r} in {args.namespace}")
    if args.json:
        out.print_json(entry)
        return 0
    p = entry.provenance
    sources = ", ".join(f"{r.namespace}/{r.key}@{r.revision}" for r in p.derived_from)
    out.print_fields(
        [
            ("namespace", entry.namespace),
            ("key", entry.key),
            ("tier", entry.tier),
            ("revision", str(entry.revision)),
            ("created at revision", str(entry.create_revision)),
            ("value", entry.value),
            ("text", entry.text),
            ("tags", ", ".join(entry.tags)),
            ("task", entry.task_id),
            ("embedding", f"{len(entry.embedding)} dimensions" if entry.embedding else ""),
            ("written by", f"{p.agent_id} ({p.role or 'no role'})"),
            ("written at", out.when(p.write_time)),
            ("trace id", p.trace_id),
            ("derived from", sources),
            ("valid from", out.when(entry.valid_from)),
            ("review at", out.when(entry.review_time)),
            ("expires", out.when(entry.expire_time)),
            ("stale", "yes" if entry.stale else "no"),
        ]
    )
    return 0


async def list_entries(args: argparse.Namespace) -> int:
    async def page(client: AsyncClient, token: str) -> tuple[list[MemoryEntry], str]:
        got = await client.memory.list(
            args.prefix,
            tier=args.tier,
            tags=args.tag,
            task_id=args.task,
            include_stale=args.stale,
            page_token=token,
        )
        return got.entries, got.next_page_token

    return await out.print_pages(
        args, page, headers=HEADERS, row=_row, empty=f"no entries under {args.prefix}"
    )


async def entry_history(args: argparse.Namespace) -> int:
    async with await connect(args) as client:
        # The newest 1000 versions (the largest page; the client returns one page).
        versions = await client.memory.history(args.namespace, args.key, page_size=1000)
    if not versions:
        raise NotFound(f"no entry {args.key!r} in {args.namespace}, now or before")
    if args.json:
        out.print_json(versions)
        return 0
    out.print_table(
        ("REVISION", "WRITER", "WRITTEN", "VALID_FROM", "VALID_TO", "VALUE"),
        [
            (
                str(v.revision),
                v.provenance.agent_id,
                out.when(v.provenance.write_time),
                out.when(v.valid_from),
                out.when(v.valid_to),
                out.compact_json(v.value),
            )
            for v in versions
        ],
    )
    return 0


async def search_entries(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError(f"-k must be at least 1 (got {args.k})")
    vector = _vector(args.embedding)
    async with await connect(args) as client:
        hits = await client.memory.search(
            vector,
            args.k,
            args.prefix,
            tier=args.tier,
            tags=args.tag,
            task_id=args.task,
            include_stale=args.stale,
        )
    out.print_list(
        hits,
        as_json=args.json,
        headers=("DISTANCE", *HEADERS),
        row=lambda h: (f"{h.distance:.4f}", *_row(h.entry)),
        empty="no entries match",
    )
    return 0
