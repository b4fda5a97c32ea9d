"""Build the MCP server around one agent's coordd client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mcp.types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus

from coordd_client import AsyncClient

from . import _changes
from ._results import answer
from ._tools import Embed, Tools, tool_names

IDENTITY_WORDS = ("agent", "role", "identity", "holder", "token", "principal", "user", "as_")

INSTRUCTIONS = """\
coordd coordinates agents: claims (who works on what, with fencing tokens), memory with
provenance, context handed between roles, side effects that happen once, agreements, and a gate
to call before acting outside coordd. You act as ONE agent, fixed by this server's credentials:
no tool takes an identity. Claim work before doing it (claim_acquire answers who holds it if you
cannot have it); pass the claim's fence to writes; wrap side effects in once_begin/once_complete;
call gate right before an external side effect. Every tool answers with JSON whose `next` says
what to do. Change logs are resources: coordd://<namespace>/changes (subscribe for updates)."""


class CoorddMCP:
    """``coordd mcp``: the MCPServer (``.server``) and the change feeds it runs.

    Args:
        client: The agent's connection; its identity is the only one the tools act as.
        embed: ``async (texts) -> vectors``, to search and index memory by text.
        name: The server name MCP clients see.
    """

    def __init__(
        self, client: AsyncClient, *, embed: Embed | None = None, name: str = "coordd"
    ) -> None:
        self.client = client
        self.tools = Tools(client, embed)
        self._arguments = tool_names(self.tools)
        bus = InMemorySubscriptionBus()
        self.feeds = _changes.ChangeFeeds(client, bus)
        self.server: MCPServer[Any] = MCPServer(
            name,
            instructions=INSTRUCTIONS,
            subscriptions=bus,
            middleware=[self._guard],
        )
        for fn in self.tools.all():
            description = " ".join((fn.__doc__ or "").split())
            self.server.add_tool(fn, name=fn.__name__, description=description)

        @self.server.resource(
            _changes.TEMPLATE,
            name="changes",
            mime_type="application/json",
            description="A namespace's change log: its revision and latest changes (who changed"
            " what). Subscribe to be notified of each new change.",
        )
        async def changes(namespace: str) -> str:
            return json.dumps(await _changes.recent_changes(client, namespace))

        # Clients of protocol versions before 2026-07-28 subscribe with resources/subscribe,
        # which MCPServer leaves to the low-level server.
        low = self.server._lowlevel_server
        low.add_request_handler(
            "resources/subscribe", types.SubscribeRequestParams, self._subscribe
        )
        low.add_request_handler(
            "resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe
        )

    async def aclose(self) -> None:
        await self.feeds.aclose()

    async def _subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        await self.feeds.follow([params.uri])
        self.feeds.subscribe_session(params.uri, ctx.session)
        return types.EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self.feeds.unsubscribe_session(params.uri, ctx.session)
        return types.EmptyResult()

    async def _guard(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Refuse arguments a tool does not take (naming identity attempts as such), and
        start a change feed for each URI a listen stream asks for."""
        params: Mapping[str, Any] = ctx.params or {}
        if ctx.method == "tools/call":
            refusal = self._unknown_arguments(params)
            if refusal is not None:
                return refusal
        elif ctx.method == "subscriptions/listen":
            wanted = params.get("notifications") or {}
            uris = wanted.get("resourceSubscriptions") or wanted.get("resource_subscriptions") or []
            await self.feeds.follow(uris)
        return await call_next(ctx)

    def _unknown_arguments(self, params: Mapping[str, Any]) -> types.CallToolResult | None:
        allowed = self._arguments.get(str(params.get("name", "")))
        arguments = params.get("arguments") or {}
        if allowed is None or not isinstance(arguments, Mapping):
            return None
        unknown = sorted(set(arguments) - allowed)
        if not unknown:
            return None
        who = self.client.agent_id
        identity = [a for a in unknown if any(w in a.lower() for w in IDENTITY_WORDS)]
        summary = (
            f"unknown argument(s) {', '.join(unknown)}; this tool takes"
            f" {', '.join(sorted(allowed))}"
        )
        nxt = "Call again without them."
        if identity:
            summary += (
                f". This server acts as agent {who!r}: its identity comes from its credentials,"
                " never from tool arguments"
            )
            nxt = "Call again without identity arguments; you cannot act as another agent."
        return answer(
            {
                "error": {
                    "code": "INVALID_ARGUMENT",
                    "reason": "UNKNOWN_ARGUMENT",
                    "fields": unknown,
                },
                "summary": summary,
                "next": nxt,
            },
            error=True,
        )
