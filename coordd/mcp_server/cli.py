"""``coordd mcp``: serve coordd to LLM agents over the Model Context Protocol."""

from __future__ import annotations

import argparse
import importlib
import inspect
import ipaddress
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_AGENT_ID = "coordd-mcp"

DESCRIPTION = """\
Serve coordd as MCP tools to an LLM agent: claims, memory, tasks, context, side effects run
once (once_begin / once_complete / once_fail), agreements and the gate to call before an
external side effect; change logs as resources coordd://NAMESPACE/changes.

The server is ONE agent: its identity comes from --agent-id/--role (dev mode), its
--token-file, or the sidecar at COORDD_ADDR, never from tool arguments. Stdio by default (for
Claude Code, Cursor, ...: `claude mcp add coordd -- coordd mcp --agent-id planner-1`);
--http 127.0.0.1:PORT serves streamable HTTP at http://127.0.0.1:PORT/mcp instead.
"""


def register(sub: Any) -> None:
    """Add ``mcp`` to the ``coordd`` subcommands."""
    from coordd.shell._flags import add_connection_flags

    parser = sub.add_parser(
        "mcp",
        help="serve coordd to LLM agents over MCP (stdio, or --http)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP on this loopback address instead of stdio",
    )
    parser.add_argument(
        "--embed",
        metavar="MODULE:FUNCTION",
        help="embedding function for memory_search by text and memory_put text: a callable"
        " taking a list of texts and returning a list of vectors (sync or async)",
    )
    parser.add_argument("--name", default="coordd", help="server name shown to MCP clients")
    add_connection_flags(parser)
    for action in parser._actions:
        if action.dest == "json":  # the shell's output flag: tools always answer JSON
            action.help = argparse.SUPPRESS
        elif action.dest == "agent_id":
            action.help = (
                "act as this agent (env COORDD_AGENT_ID, default coordd-mcp); dev mode only,"
                " a token, certificate or sidecar decides it otherwise"
            )
    parser.set_defaults(run=run, shell_run=_serve)


def run(args: argparse.Namespace) -> int:
    """Check the extra and the flags, then serve until the client goes away (or Ctrl-C)."""
    from coordd.shell._flags import USAGE
    from coordd.shell._runner import execute, fail

    try:
        importlib.import_module("mcp")
    except ImportError:
        fail("coordd mcp needs the [mcp] extra: pip install 'coordd[mcp]'")
        return USAGE
    if args.http:
        try:
            _http_address(args.http)
        except ValueError as exc:
            fail(f"--http {args.http}: {exc}")
            return USAGE
    if args.embed:
        try:
            args.embed_fn = load_embedder(args.embed)
        except (ValueError, ImportError, AttributeError) as exc:
            fail(f"--embed {args.embed}: {exc}")
            return USAGE
    args.agent_id = args.agent_id or os.environ.get("COORDD_AGENT_ID") or DEFAULT_AGENT_ID
    return execute(args)


def _http_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8765")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            "MCP over HTTP has no authentication here: listen on loopback only (127.0.0.1 or"
            " ::1) and put a proxy with authentication in front for anything else"
        )
    return host, int(port)


def load_embedder(spec: str) -> Callable[[list[str]], Awaitable[list[list[float]]]]:
    """``module:function`` as an async embedding function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError("expected MODULE:FUNCTION, e.g. myembeddings:embed")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"{spec} is not callable")

    async def embed(texts: list[str]) -> list[list[float]]:
        out = fn(texts)
        if inspect.isawaitable(out):
            out = await out
        return [list(map(float, v)) for v in out]

    return embed


async def _serve(args: argparse.Namespace) -> int:
    from coordd import telemetry
    from coordd.mcp_server._server import CoorddMCP
    from coordd.shell._flags import OK
    from coordd.shell._runner import connect

    telemetry.setup_tracing("coordd-mcp", os.environ)
    client = await connect(args)
    server = CoorddMCP(client, embed=getattr(args, "embed_fn", None), name=args.name)
    try:
        if args.http:
            host, port = _http_address(args.http)
            print(
                f"coordd mcp: serving http://{host}:{port}/mcp as {client.agent_id}",
                file=sys.stderr,
            )
            await server.server.run_streamable_http_async(host=host, port=port)
        else:
            await server.server.run_stdio_async()
    finally:
        await server.aclose()
        await client.close()
    return OK
