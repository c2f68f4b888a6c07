"""Turning traces on for a `rag` process (`rag.tracing` is the facade the code calls).

Off unless asked: `OTEL_EXPORTER_OTLP_ENDPOINT` set (spans go there over OTLP/HTTP; needs
`pip install opentelemetry-exporter-otlp-proto-http`) or `rag --trace-console ...` (spans
printed to stderr as JSON). Needs the `otel` extra (opentelemetry-sdk). The service name is
`OTEL_SERVICE_NAME`, else "rag".
"""

from __future__ import annotations

import os

from rag.errors import ConfigError

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def configure(console: bool = False) -> str | None:
    """Set up a tracer provider with the asked exporters and turn `rag.tracing` on; returns a
    line saying where spans go, or None when tracing stays off (nothing asked). ConfigError
    when asked but the packages are missing."""
    endpoint = os.environ.get(OTLP_ENDPOINT_ENV)
    if not endpoint and not console:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError('tracing needs the OpenTelemetry SDK: pip install -e ".[otel]"') from None
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "rag")}))
    where = []
    if endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(f"{OTLP_ENDPOINT_ENV} is set, but the OTLP exporter is not installed: "
                              "pip install opentelemetry-exporter-otlp-proto-http") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_* variables
        where.append(f"OTLP {endpoint}")
    if console:
        import sys

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        where.append("the console")
    trace.set_tracer_provider(provider)
    from rag import tracing

    tracing.enable(provider)
    return "traces to " + " and ".join(where)


def shutdown() -> None:
    """Flush the spans still queued (at the end of a command)."""
    from rag import tracing

    if not tracing.enabled():
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
