"""Exporters are chosen from the standard OTEL_* variables."""

from coordd import telemetry


def test_otlp_protocol_selects_the_exporter_package() -> None:
    grpc_cls = telemetry._otlp({}, "traces")
    http_cls = telemetry._otlp({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "traces")
    metrics_cls = telemetry._otlp({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http"}, "metrics")
    assert grpc_cls.__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert http_cls.__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    assert metrics_cls.__name__ == "OTLPMetricExporter"
    assert metrics_cls.__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    assert telemetry._otlp({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "traces") is None


def test_exporter_lists_and_none() -> None:
    assert telemetry._names({}, "OTEL_TRACES_EXPORTER") == []
    assert telemetry._names({"OTEL_TRACES_EXPORTER": "none"}, "OTEL_TRACES_EXPORTER") == []
    env = {"OTEL_METRICS_EXPORTER": " OTLP, console "}
    assert telemetry._names(env, "OTEL_METRICS_EXPORTER") == ["otlp", "console"]
