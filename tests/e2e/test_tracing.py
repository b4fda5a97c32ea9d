"""One trace from the agent to PostgreSQL: client span -> daemon span -> SQL span."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind

from coordd_client import AsyncClient


class PrivateIds(IdGenerator):
    def __init__(self) -> None:
        self._random = random.Random()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Install an SDK tracer provider for this process (once) and capture spans."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        # Span ids from a private generator: the default one draws from the global random,
        # which the session daemon's background spans would then move under Hypothesis
        # (it fails a test whose strategies see the global random state change).
        provider = TracerProvider(id_generator=PrivateIds())
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_one_trace_from_agent_to_postgres(spans, start_daemon) -> None:
    d = start_daemon()  # started after the provider exists, so it traces into it
    async with await AsyncClient.connect(d.address, agent_id="tracer-1") as client:
        spans.clear()
        got = await client.claims.acquire("acme/traced", "doc-1", ttl=30)
    assert got.acquired
    finished = spans.get_finished_spans()
    method = "/coordd.v1.ClaimService/AcquireClaim"
    client_span = next(s for s in finished if s.name == method and s.kind == SpanKind.CLIENT)
    server_span = next(s for s in finished if s.name == method and s.kind == SpanKind.SERVER)
    sql_span = next(s for s in finished if s.name == "sql coordd.acquire_claim")
    trace_id = client_span.context.trace_id
    assert server_span.context.trace_id == trace_id == sql_span.context.trace_id
    assert server_span.parent is not None and sql_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    assert sql_span.parent.span_id == server_span.context.span_id
    attrs = dict(server_span.attributes or {})
    assert attrs["coordd.namespace"] == "acme/traced"
    assert attrs["coordd.agent_id"] == "tracer-1"
    assert attrs["coordd.revision"] == got.revision
    assert dict(sql_span.attributes or {})["db.system"] == "postgresql"


async def test_one_trace_from_agent_through_sidecar_to_postgres(
    spans, start_daemon, start_sidecar
) -> None:
    d = start_daemon()
    sc = await start_sidecar("tracer-2", upstream=d.address)
    async with await AsyncClient.connect(sc.address, agent_id="tracer-2") as client:
        await client.memory.put("acme/traced", "k", 1, tier="episodic")
        await client.memory.get("acme/traced", "k")  # cached by the sidecar
        spans.clear()
        await client.memory.get("acme/traced", "k")  # a hit: no further hop
        hit = list(spans.get_finished_spans())
        spans.clear()
        got = await client.claims.acquire("acme/traced", "doc-1", ttl=30)
    finished = spans.get_finished_spans()
    method = "/coordd.v1.ClaimService/AcquireClaim"
    by_kind = [s for s in finished if s.name == method]
    assert len(by_kind) == 4  # agent client, sidecar server, sidecar client, daemon server
    agent, sidecar_in, sidecar_out, daemon_in = sorted(by_kind, key=lambda s: s.start_time)
    assert (agent.kind, sidecar_in.kind) == (SpanKind.CLIENT, SpanKind.SERVER)
    assert (sidecar_out.kind, daemon_in.kind) == (SpanKind.CLIENT, SpanKind.SERVER)
    sql = next(s for s in finished if s.name == "sql coordd.acquire_claim")
    chain = [agent, sidecar_in, sidecar_out, daemon_in, sql]
    assert len({s.context.trace_id for s in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    attrs = dict(daemon_in.attributes or {})
    assert attrs["coordd.agent_id"] == "tracer-2"  # the sidecar's identity went upstream
    assert attrs["coordd.resource"] == "doc-1"
    assert attrs["coordd.fencing_token"] == got.claim.fencing_token
    # The cached read: the agent's span and the sidecar's, marked as a hit, and nothing below
    # (in its trace: other daemons of this test process may export spans meanwhile).
    get = "/coordd.v1.MemoryService/GetMemory"
    root = next(s for s in hit if s.name == get and s.kind == SpanKind.CLIENT)
    hit = [s for s in hit if s.context.trace_id == root.context.trace_id]
    names = sorted((s.name, s.kind.name) for s in hit)
    assert names == [
        ("/coordd.v1.MemoryService/GetMemory", "CLIENT"),
        ("/coordd.v1.MemoryService/GetMemory", "SERVER"),
    ]
    server = next(s for s in hit if s.kind == SpanKind.SERVER)
    assert dict(server.attributes or {})["coordd.cache.hit"] is True


async def test_background_sweeps_are_traced_only_when_they_did_work(
    spans, start_daemon, db_clock
) -> None:
    def sweep_spans() -> list[str]:
        # Other daemons of the session trace into the same provider: look at sweeps only.
        names = [s.name for s in spans.get_finished_spans()]
        return [n for n in names if any(w in n for w in ("sweep", "purge", "compact"))]

    d = start_daemon()
    spans.clear()
    assert not any(d.sweep().values())
    assert sweep_spans() == [], "an idle sweep exports nothing"
    async with await AsyncClient.connect(d.address, agent_id="tracer-1") as client:
        await client.claims.acquire("acme/traced", "doc-1", ttl=5)
    db_clock.advance(6)
    spans.clear()
    assert d.sweep()["claims_expired"] == 1
    assert sweep_spans() == ["coordd.sweep"]  # one summary span, none per statement
    [sweep] = [s for s in spans.get_finished_spans() if s.name == "coordd.sweep"]
    assert dict(sweep.attributes or {}) == {"coordd.sweep.claims_expired": 1}
