"""posguard's own OpenTelemetry spans: exchange requests and store transactions.

They join the trace of the activity that makes them (Temporal's TracingInterceptor
puts the activity's span in the context), so one position's exchange calls and
writes sit under its workflow's trace. With no tracer provider configured (no
`OTEL_EXPORTER_OTLP_ENDPOINT`, see `workers.tracing`) every span is a no-op.

No attribute ever carries a key, a secret, a signature or a full URL: requests
are named by method and path only (docs/tracing.md).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Tracer, TracerProvider

_provider: TracerProvider | None = None


def tracer() -> Tracer:
    """The tracer of posguard's spans: the process's provider unless one was set."""
    return (_provider or trace.get_tracer_provider()).get_tracer("posguard")


def use_provider(provider: TracerProvider | None) -> None:
    """Send posguard's spans to `provider` (None: back to the process's global one);
    for an embedding process or a test that cannot set the global provider."""
    global _provider
    _provider = provider
