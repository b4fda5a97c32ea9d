"""``python -m bench._traced serve ...``: coordd with tracing on, exporting to nowhere.

The tracing tax is the cost of making spans (client interceptor context, server spans, one
span per SQL statement, attributes) and handing them to a BatchSpanProcessor; the exporter
itself drops them, as an in-memory or no-op exporter would, so no network cost is counted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class DropExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def install() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    install()
    from coordd.cli import main

    raise SystemExit(main(sys.argv[1:]))
