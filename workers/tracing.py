"""Turning tracing on for a process (docs/tracing.md).

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set:
spans go there by OTLP over HTTP (protobuf), batched, with the standard `OTEL_*`
variables (headers, timeout, ...) honoured by the exporter. Otherwise nothing is
installed and nothing is paid.

Temporal's `TracingInterceptor` on the client carries the trace from whoever starts
a workflow (the CLI, a wave, the reconciler) into the workflow and every activity it
runs; workers built on that client get it too. A position started by `posguard
open` is its own trace; one a wave starts is part of the wave's trace; one the
reconciler adopts is part of that reconcile run's.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

log = logging.getLogger("posguard.tracing")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_installed: TracerProvider | None = None


def tracing_configured() -> bool:
    """True when an OTLP endpoint is configured in the environment."""
    return any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


# Spans leave in small batches, often: encoding a batch holds the GIL, and the SDK's
# default (512 spans every 5 s) stalls the stop's critical path for tens of ms at a
# time (bench/bench_observability.py: crossing → new stop p99 x1.5 with it; x1.12-1.17
# with these). The standard OTEL_BSP_* variables still override them.
BATCH_DELAY_MS = 250
BATCH_SPANS = 64


def span_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """A batch processor for `exporter` with posguard's small-batch defaults."""
    return BatchSpanProcessor(
        exporter,
        schedule_delay_millis=float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", BATCH_DELAY_MS)),
        max_export_batch_size=int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", BATCH_SPANS)),
    )


def tracing_interceptors(process: str) -> list[Interceptor]:
    """The client interceptors of a process named `process` ("worker", "gate", ...):
    the tracing one, with an OTLP exporter installed once, when tracing is
    configured; none otherwise."""
    global _installed
    if not tracing_configured():
        return []
    if _installed is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create({"service.name": f"posguard-{process}"})
        _installed = TracerProvider(resource=resource)
        _installed.add_span_processor(span_processor(OTLPSpanExporter()))
        trace.set_tracer_provider(_installed)
        log.info("tracing on: spans go to the OTLP endpoint by HTTP")
    return [interceptor(_installed)]


def interceptor(provider: trace.TracerProvider) -> Interceptor:
    """Temporal's tracing interceptor on `provider`. Workflow spans are made even
    for a run started without a trace (by hand with `temporal workflow start`)."""
    return TracingInterceptor(provider.get_tracer("temporalio"), always_create_workflow_spans=True)
