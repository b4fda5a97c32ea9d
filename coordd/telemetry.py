"""OpenTelemetry setup: the only place providers and exporters are built.

Tracing and metrics are configured by the standard variables (``OTEL_TRACES_EXPORTER``,
``OTEL_METRICS_EXPORTER``: ``otlp``, ``console`` or ``none``; ``OTEL_EXPORTER_OTLP_*``), the same
way in the daemon and the sidecar. Unset (or ``none``) leaves the API's no-op providers and adds
no interceptor, unless the embedding process installed SDK providers itself (then coordd traces
and counts into them). OTLP needs the ``otlp`` extra (``opentelemetry-exporter-otlp``).

One trace runs from the agent to PostgreSQL: the client's interceptor sends W3C trace context,
the daemon's interceptor continues it, and each SQL call is a child span.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def tracing_configured() -> bool:
    """True if a real (SDK) tracer provider is installed in this process."""
    from opentelemetry import trace

    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def _names(environ: Mapping[str, str], var: str) -> list[str]:
    """Exporter names from an OTEL_*_EXPORTER variable (comma-separated; unset = none)."""
    names = [n.strip().lower() for n in environ.get(var, "none").split(",")]
    return [n for n in names if n and n != "none"]


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    """OTLP protocol for *signal* ("traces" or "metrics"): grpc (default) or http/protobuf."""
    value = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    return value.strip().lower()


def _otlp(environ: Mapping[str, str], signal: str) -> Any:
    """The OTLP exporter class for *signal*, or None (logged) if it cannot be had."""
    protocol = _protocol(environ, signal)
    kind = "trace_exporter" if signal == "traces" else "metric_exporter"
    cls = "OTLPSpanExporter" if signal == "traces" else "OTLPMetricExporter"
    if protocol == "grpc":
        module = f"opentelemetry.exporter.otlp.proto.grpc.{kind}"
    elif protocol in ("http/protobuf", "http"):
        module = f"opentelemetry.exporter.otlp.proto.http.{kind}"
    else:
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%r is not grpc or http/protobuf; no %s exported",
            protocol,
            signal,
        )
        return None
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError:
        logger.warning(
            "OTLP %s export needs opentelemetry-exporter-otlp (pip install 'coordd[otlp]'); "
            "no %s exported",
            signal,
            signal,
        )
        return None


def setup_tracing(service_name: str, environ: Mapping[str, str]) -> bool:
    """Install tracer and meter providers as the OTEL_* environment asks; True if tracing.

    ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` name exporters, comma-separated:
    ``otlp`` (protocol from ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL``: ``grpc``, the
    default, or ``http/protobuf``; endpoint and headers from the standard variables read by the
    exporter itself), ``console``, or ``none`` (the default: the API's no-op providers, no
    interceptors, nothing measurable). ``OTEL_SERVICE_NAME`` overrides *service_name*.
    """
    setup_metrics(service_name, environ)
    if tracing_configured():
        return True
    exporters = []
    for name in _names(environ, "OTEL_TRACES_EXPORTER"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            if (cls := _otlp(environ, "traces")) is not None:
                exporters.append(cls())
        else:
            logger.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    if not exporters:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(service_name, environ))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def setup_metrics(service_name: str, environ: Mapping[str, str]) -> bool:
    """Install a meter provider for OTEL_METRICS_EXPORTER (see setup_tracing); True if any."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        return True  # the embedding process installed one
    readers = []
    for name in _names(environ, "OTEL_METRICS_EXPORTER"):
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "otlp":
            if (cls := _otlp(environ, "metrics")) is not None:
                readers.append(PeriodicExportingMetricReader(cls()))
        else:
            logger.warning("unknown OTEL_METRICS_EXPORTER %r ignored", name)
    if not readers:
        return False
    metrics.set_meter_provider(
        MeterProvider(metric_readers=readers, resource=_resource(service_name, environ))
    )
    return True


def _resource(service_name: str, environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)})


def recording() -> bool:
    """Whether the current span is recorded: check before building attributes for it."""
    from opentelemetry import trace

    return trace.get_current_span().is_recording()


def span_attributes(**attributes: str | int | bool) -> None:
    """Set ``coordd.<name>`` attributes on the current span, if it is recorded."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"coordd.{k}": v for k, v in attributes.items()})


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


# Ids for the unsampled parents below. A private generator: background work must not move the
# global ``random`` state under an application (or a Hypothesis test) that seeds or watches it.
_ids = random.Random()


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Run background work (sweeps, housekeeping) without exporting the spans it makes.

    The work runs under a valid but unsampled parent, so the default parent-based sampler drops
    every SQL span below it; callers report what was done with :func:`record_work`. An idle
    daemon then exports nothing, where its sweeper used to print about 9 spans a second.
    """
    from opentelemetry import trace

    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=_ids.getrandbits(128) or 1,
            span_id=_ids.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
        )
    )
    with trace.use_span(unsampled, end_on_exit=False):
        yield


def record_work(name: str, started_ns: int, counts: Mapping[str, int]) -> None:
    """One span *name* from *started_ns* to now, with a ``coordd.<name>.<what>`` per count."""
    from opentelemetry import trace

    tracer = trace.get_tracer("coordd")
    attributes = {f"coordd.{name}.{what}": n for what, n in counts.items() if n}
    span = tracer.start_span(f"coordd.{name}", start_time=started_ns, attributes=attributes)
    span.end(end_time=time.time_ns())
