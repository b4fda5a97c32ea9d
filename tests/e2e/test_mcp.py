"""coordd mcp: in-process MCP sessions (mcp.Client) against a real daemon, and stdio."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from coordd.mcp_server._server import CoorddMCP
from coordd_client import AsyncClient
from tests.fix_daemon import DaemonThread

ROOT = Path(__file__).resolve().parents[2]
NS = "team/work"


def body(result: CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content, "text and structure say the same"
    return result.structured_content


@pytest.fixture
async def agent(connect) -> AsyncIterator[Callable[..., Any]]:
    """``async with agent("worker-1") as session``: an MCP session acting as that agent."""
    servers: list[CoorddMCP] = []

    def make(agent_id: str, role: str = "worker", **kwargs: Any) -> Client:
        async def build() -> Client:
            client: AsyncClient = await connect(agent_id, role=role)
            server = CoorddMCP(client, **kwargs)
            servers.append(server)
            return Client(server.server)

        return _Deferred(build)

    yield make
    for s in servers:
        await s.aclose()


class _Deferred:
    """An MCP client built on entry (the coordd connection is async)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Client | None = None

    async def __aenter__(self) -> Client:
        self._client = await self._build()
        return await self._client.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        assert self._client is not None
        await self._client.__aexit__(*exc)


async def test_two_agents_contend_in_band(agent) -> None:
    async with agent("worker-1") as one, agent("worker-2") as two:
        got = body(await one.call_tool("claim_acquire", {"namespace": NS, "resource": "doc-1"}))
        assert got["acquired"] is True and got["claim"]["holder_agent_id"] == "worker-1"
        refused_result = await two.call_tool(
            "claim_acquire", {"namespace": NS, "resource": "doc-1", "progress": "x"}
        )
        assert not refused_result.is_error, "contention is an answer, not an error"
        refused = body(refused_result)
        assert refused["acquired"] is False
        assert refused["holder"]["holder_agent_id"] == "worker-1"
        assert refused["summary"].startswith(f"{NS}/doc-1 is held by worker-1 until ")
        assert "pick another resource" in refused["next"]
        other = body(
            await two.call_tool("claim_acquire", {"namespace": NS, "resource": ["doc-1", "doc-2"]})
        )
        assert other["acquired"] is True and other["claim"]["resource"] == "doc-2"

        # a stale fence: coordd refuses the write; the tool result says what to do
        stale = dict(got["fence"], token=got["fence"]["token"] + 1000)
        err = await one.call_tool(
            "memory_put", {"namespace": NS, "key": "k", "value": 1, "fence": stale}
        )
        assert err.is_error
        e = body(err)
        assert e["error"]["reason"] == "FENCING_TOKEN_STALE" and "re-acquire" in e["next"]


async def test_memory_tools_and_cas_guidance(agent) -> None:
    async with agent("worker-1") as s:
        put = body(
            await s.call_tool(
                "memory_put",
                {
                    "namespace": NS,
                    "key": "plan",
                    "value": {"step": 1},
                    "tags": ["p"],
                    "mode": "cas",
                    "expected_revision": 0,
                },
            )
        )
        rev = put["entry"]["revision"]
        assert put["entry"]["provenance"]["agent_id"] == "worker-1"
        got = body(await s.call_tool("memory_get", {"namespace": NS, "key": "plan"}))
        assert got["found"] and got["entry"]["value"] == {"step": 1}
        clash = await s.call_tool(
            "memory_put",
            {
                "namespace": NS,
                "key": "plan",
                "value": {"step": 2},
                "mode": "cas",
                "expected_revision": rev + 5,
            },
        )
        assert clash.is_error and body(clash)["error"]["reason"] == "REVISION_MISMATCH"
        assert f"expected_revision={rev}" in body(clash)["next"]
        await s.call_tool("memory_put", {"namespace": NS, "key": "plan", "value": {"step": 2}})
        hist = body(await s.call_tool("memory_history", {"namespace": NS, "key": "plan"}))
        assert [v["value"]["step"] for v in hist["versions"]] == [2, 1]
        bad = await s.call_tool("memory_put", {"namespace": "bad ns!", "key": "k", "value": 1})
        assert bad.is_error and body(bad)["error"]["fields"][0]["field"] == "namespace"


async def test_search_by_text_through_the_configured_embedder(agent) -> None:
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts]

    async with agent("worker-1", embed=embed) as s, agent("worker-2") as plain_:
        for key, text in (("a", "a cat sat"), ("b", "a dog ran")):
            await s.call_tool(
                "memory_put", {"namespace": NS, "key": key, "value": key, "text": text}
            )
        hits = body(
            await s.call_tool("memory_search", {"namespace_prefixes": [NS], "query": "cat", "k": 1})
        )["hits"]
        assert [h["entry"]["key"] for h in hits] == ["a"] and hits[0]["similarity"] > 0.99
        by_vector = body(
            await plain_.call_tool(
                "memory_search", {"namespace_prefixes": [NS], "vector": [0.0, 1.0], "k": 1}
            )
        )
        assert by_vector["hits"][0]["entry"]["key"] == "b"
        no_embedder = await plain_.call_tool(
            "memory_search", {"namespace_prefixes": [NS], "query": "cat"}
        )
        assert no_embedder.is_error and "--embed" in body(no_embedder)["next"]


async def test_once_runs_a_side_effect_once_across_a_retried_tool_call(agent) -> None:
    charges: list[str] = []

    async def llm_turn(session: Client) -> Any:
        """What an agent does: begin, run the effect only if told to, complete."""
        args = {"namespace": NS, "key": "charge-order-7", "payload": {"order": 7, "eur": 30}}
        begun = body(await session.call_tool("once_begin", args))
        if not begun["run"]:
            return begun
        charges.append("order-7")  # the side effect
        await session.call_tool(
            "once_complete",
            {
                "namespace": NS,
                "key": "charge-order-7",
                "attempt": begun["attempt"],
                "result": {"receipt": "r-1"},
            },
        )
        return begun

    async with agent("worker-1") as s:
        first = await llm_turn(s)
        retried = await llm_turn(s)  # the orchestrator retries the whole turn
    assert first["run"] is True and retried["run"] is False
    assert retried["state"] == "completed" and retried["result"] == {"receipt": "r-1"}
    assert "Do NOT perform it again" in retried["next"]
    assert charges == ["order-7"]

    async with agent("worker-2") as other:
        reused = await other.call_tool(
            "once_begin",
            {"namespace": NS, "key": "charge-order-7", "payload": {"order": 7, "eur": 99}},
        )
        assert reused.is_error and body(reused)["error"]["reason"] == "IDEMPOTENCY_KEY_REUSED"


async def test_identity_cannot_be_changed_through_tool_arguments(agent) -> None:
    async with agent("worker-1", role="writer") as s:
        for extra in ({"agent_id": "admin"}, {"role": "admin"}, {"as_agent": "worker-9"}):
            refused = await s.call_tool(
                "memory_put", {"namespace": NS, "key": "who", "value": 1, **extra}
            )
            assert refused.is_error
            assert "acts as agent 'worker-1'" in body(refused)["summary"]
        assert (
            body(await s.call_tool("memory_get", {"namespace": NS, "key": "who"}))["found"] is False
        )
        body(await s.call_tool("memory_put", {"namespace": NS, "key": "who", "value": 1}))
        entry = body(await s.call_tool("memory_get", {"namespace": NS, "key": "who"}))["entry"]
        assert (entry["provenance"]["agent_id"], entry["provenance"]["role"]) == (
            "worker-1",
            "writer",
        )
        tools = (await s.list_tools()).tools
        for tool in tools:
            props = set(tool.input_schema.get("properties", {}))
            assert not props & {"agent_id", "role", "as_agent", "identity"}, tool.name


async def test_every_tool_schema_is_valid_json_schema(agent) -> None:
    async with agent("worker-1") as s:
        tools = (await s.list_tools()).tools
    names = {t.name for t in tools}
    assert names == {
        "claim_acquire",
        "claim_renew",
        "claim_release",
        "claims_list",
        "memory_put",
        "memory_get",
        "memory_search",
        "memory_history",
        "task_start",
        "task_end",
        "context_post",
        "context_inbox",
        "context_ack",
        "once_begin",
        "once_complete",
        "once_fail",
        "agreement_propose",
        "agreement_vote",
        "agreement_get",
        "gate",
    }
    for tool in tools:
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert tool.description and len(tool.description) > 20, tool.name
        for name, prop in tool.input_schema["properties"].items():
            assert prop, f"{tool.name}.{name} has an empty schema"
    put = next(t for t in tools if t.name == "memory_put").input_schema
    jsonschema.validate({"namespace": "a/b", "key": "k", "value": {"x": 1}}, put)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"namespace": "a/b", "key": "k", "value": 1, "mode": "yolo"}, put)


async def test_gate_tool_tells_what_to_do(agent, db_clock) -> None:
    async with agent("worker-1") as one, agent("worker-2") as two:
        held = body(
            await one.call_tool(
                "claim_acquire", {"namespace": NS, "resource": "pay", "ttl_seconds": 5}
            )
        )
        await one.call_tool("memory_get", {"namespace": "team/prices", "key": "eur"})
        ok = body(await one.call_tool("gate", {"fences": [held["fence"]]}))
        assert ok["passed"] is True and "perform the side effect now" in ok["next"]
        await one.call_tool("memory_put", {"namespace": "team/prices", "key": "eur", "value": 11})
        mine = body(await one.call_tool("gate", {"fences": [held["fence"]]}))
        assert mine["passed"] is True, "the agent's own write does not move what it read"
        await two.call_tool("memory_put", {"namespace": "team/prices", "key": "eur", "value": 12})
        moved = body(await one.call_tool("gate", {"fences": [held["fence"]]}))
        assert (
            moved["passed"] is False and moved["moved_namespaces"][0]["namespace"] == "team/prices"
        )
        assert "re-read" in moved["next"] and "worker-2" in moved["summary"]
        db_clock.advance(6)
        await two.call_tool("claim_acquire", {"namespace": NS, "resource": "pay"})
        lost = body(await one.call_tool("gate", {"fences": [held["fence"]], "read": {}}))
        assert lost["passed"] is False and "held by worker-2" in lost["summary"]
        assert lost["next"].startswith("stop")


async def test_context_tasks_and_agreements(agent) -> None:
    async with agent("planner-1", role="planner") as p, agent("reviewer-1", role="reviewer") as r:
        posted = body(
            await p.call_tool(
                "context_post",
                {
                    "namespace": NS,
                    "content": {"doc": 1},
                    "context_type": "review",
                    "to_role": "reviewer",
                },
            )
        )
        inbox = body(await r.call_tool("context_inbox", {"namespace": NS}))["entries"]
        assert [e["id"] for e in inbox] == [posted["id"]] and inbox[0][
            "from_agent_id"
        ] == "planner-1"
        await r.call_tool("context_ack", {"namespace": NS, "ids": [posted["id"]]})
        assert body(await r.call_tool("context_inbox", {"namespace": NS}))["entries"] == []

        await p.call_tool("task_start", {"namespace": NS, "task_id": "t1"})
        await p.call_tool(
            "memory_put",
            {"namespace": NS, "key": "scratch", "value": 1, "tier": "working", "task_id": "t1"},
        )
        ended = body(await p.call_tool("task_end", {"namespace": NS, "task_id": "t1"}))
        assert ended["removed"] == 1

        proposed = body(
            await p.call_tool(
                "agreement_propose",
                {
                    "namespace": NS,
                    "agreement_id": "ship",
                    "participants": ["planner-1", "reviewer-1"],
                    "deadline_seconds": 60,
                    "transition": {"ship": True},
                },
            )
        )
        assert proposed["agreement"]["state"] == "pending"
        voted = body(
            await r.call_tool(
                "agreement_vote", {"namespace": NS, "agreement_id": "ship", "accept": True}
            )
        )
        assert voted["agreement"]["state"] == "committed"
        again = await r.call_tool(
            "agreement_vote", {"namespace": NS, "agreement_id": "ship", "accept": False}
        )
        assert again.is_error and "settled" in body(again)["next"]


async def test_change_log_resource_and_subscribed_updates(agent) -> None:
    uri = f"coordd://{NS}/changes"
    async with agent("watcher") as w, agent("writer") as x:
        await x.call_tool("memory_put", {"namespace": NS, "key": "a", "value": 1})
        read = await w.read_resource(uri)
        first = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert first["namespace"] == NS and first["revision"] >= 1
        assert first["changes"][-1]["key"] == "a" and first["changes"][-1]["agent_id"] == "writer"
        async with w.listen(resource_subscriptions=[uri]) as sub:
            await x.call_tool("memory_put", {"namespace": NS, "key": "b", "value": 2})
            async with asyncio.timeout(15):
                event = await anext(aiter(sub))
            assert str(event.uri) == uri
        after = json.loads((await w.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
        assert after["changes"][-1]["key"] == "b" and after["revision"] > first["revision"]


async def test_legacy_clients_subscribe_with_resources_subscribe(connect) -> None:
    uri = f"coordd://{NS}/changes"
    updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        params = getattr(getattr(message, "root", message), "params", None)
        if params is not None and getattr(params, "uri", None) is not None:
            await updates.put(str(params.uri))

    server = CoorddMCP(await connect("watcher"))
    writer = await connect("writer")
    try:
        async with Client(server.server, mode="legacy", message_handler=on_message) as w:
            assert w.server_capabilities.resources and w.server_capabilities.resources.subscribe
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await w.subscribe_resource(uri)
            await writer.memory.put(NS, "c", 3)
            async with asyncio.timeout(15):
                assert await updates.get() == uri
    finally:
        await server.aclose()


async def test_traces_continue_the_callers_w3c_context(agent) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with agent("traced") as s:
            await s.call_tool(
                "memory_get",
                {"namespace": NS, "key": "k"},
                meta={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
        grpc_span = next(
            sp
            for sp in spans.get_finished_spans()
            if sp.name == "/coordd.v1.MemoryService/GetMemory" and sp.kind == SpanKind.CLIENT
        )
        assert format(grpc_span.context.trace_id, "032x") == trace_id
    finally:
        spans.shutdown()


def test_stdio_transport_from_a_subprocess(daemon: DaemonThread) -> None:
    async def session() -> tuple[list[str], dict[str, Any]]:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "coordd", "mcp", "--addr", daemon.address, "--agent-id", "stdio-agent"],
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'clients'}:{ROOT / 'sidecar'}"},
            cwd=str(ROOT),
        )
        async with Client(params) as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            got = body(await c.call_tool("claim_acquire", {"namespace": NS, "resource": "stdio"}))
        return tools, got

    tools, got = asyncio.run(session())
    assert "gate" in tools and got["acquired"] is True
    assert got["claim"]["holder_agent_id"] == "stdio-agent"


def test_streamable_http_transport(daemon: DaemonThread) -> None:
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'clients'}:{ROOT / 'sidecar'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordd",
            "mcp",
            "--http",
            f"127.0.0.1:{port}",
            "--addr",
            daemon.address,
            "--agent-id",
            "http-agent",
        ],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # poll until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.05)

        async def session() -> dict[str, Any]:
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                return body(await c.call_tool("claim_acquire", {"namespace": NS, "resource": "h"}))

        got = asyncio.run(session())
        assert got["acquired"] and got["claim"]["holder_agent_id"] == "http-agent"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
