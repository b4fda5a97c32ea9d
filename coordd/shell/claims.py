"""Claims: who holds what, and until when.

coordd claims list NS [--holder AGENT]     live claims of a namespace
coordd claims get NS RESOURCE              one live claim (exit 3 if the resource is free)
"""

from __future__ import annotations

import argparse

from coordd_client import Claim

from . import _render as out
from ._runner import NotFound, add_connection_flags, connect

HEADERS = ("RESOURCE", "HOLDER", "ROLE", "TOKEN", "ACQUIRED", "EXPIRES", "PROGRESS")


def _row(c: Claim) -> tuple[str, ...]:
    return (
        c.resource,
        c.holder_agent_id,
        c.holder_role,
        str(c.fencing_token),
        out.when(c.acquire_time),
        out.when(c.expire_time),
        c.progress,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="claims_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("list", help="live claims of a namespace, by resource")
    p.add_argument("namespace", metavar="NS")
    p.add_argument("--holder", default="", metavar="AGENT", help="only claims held by AGENT")
    p.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    add_connection_flags(p)
    p.set_defaults(shell_run=list_claims)

    p = sub.add_parser("get", help="the live claim on one resource (exit 3 if it is free)")
    p.add_argument("namespace", metavar="NS")
    p.add_argument("resource", metavar="RESOURCE")
    add_connection_flags(p)
    p.set_defaults(shell_run=get_claim)


async def list_claims(args: argparse.Namespace) -> int:
    claims: list[Claim] = []
    async with await connect(args) as client:
        token = ""
        while True:
            page = await client.claims.list(
                args.namespace, holder_agent_id=args.holder, page_token=token
            )
            claims.extend(page.claims)
            token = page.next_page_token
            if not token or (args.limit and len(claims) >= args.limit):
                break
    if args.limit:
        claims = claims[: args.limit]
    if args.json:
        out.print_json(claims)
    elif claims:
        out.print_table(HEADERS, [_row(c) for c in claims])
    else:
        out.note(f"no live claims in {args.namespace}")
    return 0


async def get_claim(args: argparse.Namespace) -> int:
    async with await connect(args) as client:
        claim = await client.claims.get(args.namespace, args.resource)
    if claim is None:
        raise NotFound(f"no live claim on {args.resource!r} in {args.namespace}")
    if args.json:
        out.print_json(claim)
    else:
        out.print_table(HEADERS, [_row(claim)])
    return 0
