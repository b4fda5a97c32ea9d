"""Context: what is waiting for an agent, and what an agent sent and who acknowledged it.

  coordd context inbox NS [--unread] [--type T]   entries for this agent (its id or role)
  coordd context sent NS [--type T]               entries this agent posted, with their acks

Reading an inbox changes nothing unless you ask for --unread, which reads as an agent does:
"any"-delivery entries are then taken by this agent for their lease.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _render as out
from ._flags import leaf

if TYPE_CHECKING:
    from coordd_client import AsyncClient, ContextEntry


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="context_command", metavar="SUBCOMMAND", required=True)

    with leaf(sub, "inbox", "entries addressed to this agent or its role", inbox, limit=True) as p:
        p.add_argument(
            "--unread",
            action="store_true",
            help="only entries not acknowledged yet (takes 'any'-delivery entries, as an agent "
            "does)",
        )
        p.add_argument(
            "--for-role",
            default="",
            metavar="ROLE",
            help="read ROLE's inbox instead of your own (needs the admin grant)",
        )
        _filters(p)

    summary = "entries this agent posted, with who acknowledged them"
    with leaf(sub, "sent", summary, sent, limit=True) as p:
        _filters(p)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", default="", metavar="TYPE", help="only entries of this type")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="only entries after ID")


def _addressee(e: ContextEntry) -> str:
    return f"agent {e.to_agent_id}" if e.to_agent_id else f"role {e.to_role}"


def _sender(e: ContextEntry) -> str:
    return f"{e.from_agent_id} ({e.from_role})" if e.from_role else e.from_agent_id


async def _read_all(args: argparse.Namespace, sent_by_me: bool) -> tuple[list[ContextEntry], str]:
    """Every page (or --limit entries), oldest first, and the agent id they were read as."""

    async def page(client: AsyncClient, cursor: str) -> tuple[list[ContextEntry], str]:
        after = int(cursor or args.after)
        if sent_by_me:
            got = await client.context.sent(args.namespace, after_id=after, context_type=args.type)
        else:
            got = await client.context.inbox(
                args.namespace,
                unread=args.unread,
                context_type=args.type,
                after_id=after,
                role=args.for_role,
            )
        return got, str(got[-1].id) if got else ""

    return await out.read_pages(args, page)


def _columns(me: str) -> dict[str, Callable[[ContextEntry], str]]:
    """Every column a context table shows, by header (*me*: the agent id read as)."""
    return {
        "ID": lambda e: str(e.id),
        "FROM": _sender,
        "TO": _addressee,
        "TYPE": lambda e: e.context_type,
        "DELIVERY": lambda e: e.delivery,
        "TASK": lambda e: e.task_id,
        "POSTED": lambda e: out.when(e.create_time),
        "ACKED": lambda e: _acked(e, me),
        "ACKED_BY": lambda e: ", ".join(a.agent_id for a in e.acks),
        "CONTENT": lambda e: out.compact_json(e.content),
    }


async def _print_entries(
    args: argparse.Namespace, sent_by_me: bool, headers: tuple[str, ...], empty: str
) -> int:
    entries, me = await _read_all(args, sent_by_me)
    cells = [_columns(me)[h] for h in headers]
    out.print_list(
        entries,
        as_json=args.json,
        headers=headers,
        row=lambda e: [cell(e) for cell in cells],
        empty=empty,
    )
    return 0


INBOX = ("ID", "FROM", "TO", "TYPE", "TASK", "POSTED", "ACKED", "CONTENT")
SENT = ("ID", "TO", "TYPE", "DELIVERY", "TASK", "POSTED", "ACKED_BY", "CONTENT")


async def inbox(args: argparse.Namespace) -> int:
    empty = f"no {'unread ' if args.unread else ''}entries in {args.namespace}"
    return await _print_entries(args, False, INBOX, empty)


async def sent(args: argparse.Namespace) -> int:
    empty = f"nothing sent by this agent in {args.namespace}"
    return await _print_entries(args, True, SENT, empty)


def _acked(e: ContextEntry, me: str) -> str:
    """'yes' if this agent acknowledged it; otherwise who did ('-' if nobody)."""
    if any(a.agent_id == me for a in e.acks):
        return "yes"
    return ", ".join(a.agent_id for a in e.acks) or "-"
