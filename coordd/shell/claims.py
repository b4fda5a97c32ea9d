"""Claims: who holds what, until when, and (admin) taking a claim away from its holder.

coordd claims list NS [--holder AGENT]     live claims of a namespace
coordd claims get NS RESOURCE              one live claim (exit 3 if the resource is free)
coordd claims release NS RESOURCE          force-release, whoever holds it (admin grant)
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import _render as out
from ._flags import NotFound, connect, leaf

if TYPE_CHECKING:
    from coordd_client import AsyncClient, Claim

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

    with leaf(sub, "list", "live claims of a namespace, by resource", list_claims, limit=True) as p:
        p.add_argument("--holder", default="", metavar="AGENT", help="only claims held by AGENT")

    with leaf(sub, "get", "the live claim on one resource (exit 3 if it is free)", get_claim) as p:
        p.add_argument("resource", metavar="RESOURCE", help="the claimed resource")

    with leaf(
        sub,
        "release",
        "force-release a claim, whoever holds it (needs the admin grant)",
        release_claim,
        description="Take a claim away from its holder (a stuck or crashed agent) now instead "
        "of waiting for its lease to lapse. The holder's fencing token goes stale, so coordd "
        "refuses its fenced writes from now on. Recorded in the change log and the audit log. "
        "Needs the admin grant on the namespace. Exit 3 if nothing was held.",
    ) as p:
        p.add_argument("resource", metavar="RESOURCE", help="the claimed resource")
        p.add_argument("--reason", default="", help="why, for the change log and the audit log")


async def list_claims(args: argparse.Namespace) -> int:
    async def page(client: AsyncClient, token: str) -> tuple[list[Claim], str]:
        got = await client.claims.list(
            args.namespace, holder_agent_id=args.holder, page_token=token
        )
        return got.claims, got.next_page_token

    return await out.print_pages(
        args, page, headers=HEADERS, row=_row, empty=f"no live claims in {args.namespace}"
    )


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


async def release_claim(args: argparse.Namespace) -> int:
    async with await connect(args) as client:
        result = await client.admin.force_release(args.namespace, args.resource, reason=args.reason)
    if not result.released or result.claim is None:
        raise NotFound(f"no live claim on {args.resource!r} in {args.namespace}")
    if args.json:
        out.print_json(result)
    else:
        c = result.claim
        print(
            f"released {c.resource!r} in {c.namespace}: it was held by {c.holder_agent_id} "
            f"(token {c.fencing_token}, now stale)"
        )
    return 0
