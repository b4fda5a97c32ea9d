"""OpenTelemetry setup: the only place providers and exporters are built.

Tracing is configured by the standard variables. ``OTEL_TRACES_EXPORTER=console`` prints spans;
``otlp`` sends them to ``OTEL_EXPORTER_OTLP_ENDPOINT`` when the OTLP exporter package is
installed. Unset (or ``none``) leaves the API's no-op tracer and adds no interceptor, unless the
embedding process installed an SDK tracer provider itself (then coordd traces into it).

One trace runs from the agent to PostgreSQL: the client's interceptor sends W3C trace context,
the daemon's interceptor continues it, and each SQL call is a child span.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def tracing_configured() -> bool:
    """True if a real (SDK) tracer provider is installed in this process."""
    from opentelemetry import trace

    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def setup_tracing(service_name: str, environ: Mapping[str, str]) -> bool:
    """Install a tracer provider if the environment asks for one; return True if tracing."""
    if tracing_configured():
        return True
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            logger.warning(
                "OTEL_TRACES_EXPORTER=otlp but opentelemetry-exporter-otlp is not installed; "
                "tracing is off"
            )
            return False
        exporter = OTLPSpanExporter()
    else:
        logger.warning("unknown OTEL_TRACES_EXPORTER=%r; tracing is off", exporter_name)
        return False
    name = environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def server_interceptors(enabled: bool) -> list[Any]:
    """The OpenTelemetry gRPC server interceptor (health checks filtered out), if tracing."""
    if not enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor: Any = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=filters.negate(filters.health_check())
    )
    return [interceptor]


def client_interceptors() -> list[Any]:
    """OpenTelemetry client interceptors (trace context to the server), if tracing."""
    if not tracing_configured():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[Any] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


def current_trace_id() -> str:
    """The W3C trace id (32 hex) of the span being served, or "" if untraced."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
