"""Agreements: what was proposed, who voted how, and what was decided.

coordd agreements get NS ID      one agreement and its votes (exit 3 if unknown)
coordd agreements list NS        agreements of a namespace, by id
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import _render as out
from ._flags import connect, leaf

if TYPE_CHECKING:
    from coordd_client import Agreement, AsyncClient, Participant


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="agreements_command", metavar="SUBCOMMAND", required=True)

    with leaf(sub, "get", "one agreement and its votes (exit 3 if unknown)", get_agreement) as p:
        p.add_argument("id", metavar="ID", help="the agreement's id")

    with leaf(sub, "list", "agreements of a namespace", list_agreements, limit=True) as p:
        p.add_argument(
            "--state", choices=("pending", "committed", "aborted"), help="only in this state"
        )


def _seat(p: Participant) -> str:
    if p.agent_id:
        return p.agent_id
    return f"{p.count} x role {p.role}" if p.count != 1 else f"role {p.role}"


async def get_agreement(args: argparse.Namespace) -> int:
    async with await connect(args) as client:
        a = await client.agreements.get(args.namespace, args.id)
    if args.json:
        out.print_json(a)
        return 0
    decided = f"{a.state.value} ({a.cause})" if a.decided else "pending"
    out.print_fields(
        [
            ("namespace", a.namespace),
            ("id", a.id),
            ("state", decided),
            ("reason", a.reason),
            ("proposed by", a.proposer_agent_id),
            ("participants", ", ".join(_seat(p) for p in a.participants)),
            ("accepted", f"{a.accepted} of {a.seats}"),
            ("transition", a.transition),
            ("writes", ", ".join(f"{w.namespace}/{w.key}" for w in a.writes)),
            ("proposed at", out.when(a.create_time)),
            ("deadline", out.when(a.deadline_time)),
            ("decided at", out.when(a.decide_time)),
            ("decided by", a.decided_by_agent_id),
        ]
    )
    if a.votes:
        print()
        out.print_table(
            ("VOTER", "ROLE", "VOTE", "AT", "REASON"),
            [
                (
                    v.agent_id,
                    v.role,
                    "accept" if v.accept else "reject",
                    out.when(v.vote_time),
                    v.reason,
                )
                for v in a.votes
            ],
        )
    return 0


async def list_agreements(args: argparse.Namespace) -> int:
    async def page(client: AsyncClient, token: str) -> tuple[list[Agreement], str]:
        got = await client.agreements.list(args.namespace, state=args.state, page_token=token)
        return got.agreements, got.next_page_token

    return await out.print_pages(
        args,
        page,
        headers=("ID", "STATE", "CAUSE", "PROPOSER", "ACCEPTED", "DEADLINE", "TRANSITION"),
        row=lambda a: (
            a.id,
            a.state.value,
            a.cause,
            a.proposer_agent_id,
            f"{a.accepted}/{a.seats}",
            out.when(a.deadline_time),
            out.compact_json(a.transition),
        ),
        empty=f"no agreements in {args.namespace}",
    )
