"""Follow a namespace's change log: one line per event, in revision order, without gaps.

  coordd watch NS                    changes from now on
  coordd watch NS --from 1           the whole retained log, then live changes
  coordd watch NS --prefix doc-      only events whose key starts with doc-
  coordd watch acme --recursive      acme and every namespace below it

Each line is REVISION NAMESPACE KIND OP KEY AGENT [DATA]; with --json, one JSON object per
line. The watch runs until you stop it (Ctrl-C or SIGTERM: exit 0) or the daemon goes away
(exit 4, naming the revision to resume from with --from); --reconnect-for follows the daemon
through a restart instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from . import _render as out
from ._flags import OK, UsageError, add_connection_flags, add_namespace, connect

if TYPE_CHECKING:
    from coordd_client import ChangeEvent


def configure(parser: argparse.ArgumentParser) -> None:
    add_namespace(parser)
    parser.add_argument(
        "--prefix", default="", metavar="P", help="only events whose key starts with P"
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=int,
        default=0,
        metavar="REV",
        help="start at revision REV (default: changes from now on)",
    )
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="also watch every namespace below NS"
    )
    parser.add_argument(
        "--reconnect-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if the daemon goes away, wait this long for it to return and resume without a "
        "gap (default 0: end at once)",
    )
    add_connection_flags(parser)
    parser.set_defaults(shell_run=watch)


def line(event: ChangeEvent) -> str:
    """One event as one line of text."""
    text = (
        f"{event.revision} {event.namespace} {event.kind} {event.op} "
        f"{event.key or '-'} {event.agent_id or '-'}"
    )
    return text if event.data is None else f"{text} {out.compact_json(event.data)}"


async def watch(args: argparse.Namespace) -> int:
    from coordd.errors import UnavailableError

    if args.start < 0:
        raise UsageError(f"--from must be 0 or a revision (got {args.start})")
    seen: dict[str, int] = {}  # namespace -> last revision received
    async with await connect(args) as client:
        events = client.watch(
            args.namespace,
            prefix=args.recursive,
            start_revision=args.start,
            reconnect_for=args.reconnect_for,
        )
        try:
            async with _stopped_by_signals() as stopped:
                async for event in events:
                    seen[event.namespace] = event.revision
                    if not event.key.startswith(args.prefix):
                        continue
                    if args.json:
                        out.print_json(event, compact=True)
                    else:
                        print(line(event), flush=True)
            if stopped.is_set():
                return OK
            raise UnavailableError("the daemon ended the watch")
        except UnavailableError as exc:
            raise UnavailableError(
                f"the daemon went away ({exc.message}); {_resume(seen)}"
            ) from None
        finally:
            close = getattr(events, "aclose", None)  # an async generator: end its stream now
            if close is not None:
                await close()


@contextlib.asynccontextmanager
async def _stopped_by_signals() -> AsyncIterator[asyncio.Event]:
    """Ctrl-C or SIGTERM ends the block quietly; the event yielded tells that it happened."""
    stopped = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def stop() -> None:
        stopped.set()
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        yield stopped
    except asyncio.CancelledError:
        if not stopped.is_set():
            raise
        task.uncancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _resume(seen: dict[str, int]) -> str:
    if not seen:
        return "no event was received before"
    if len(seen) == 1:
        [(_, revision)] = seen.items()
        return f"resume with --from {revision + 1}"
    last = ", ".join(f"{ns}@{rev}" for ns, rev in sorted(seen.items()))
    return f"last revisions seen: {last}"
