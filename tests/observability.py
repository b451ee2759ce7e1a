"""What the observability tests share: spans kept in memory, a traced client, and
reading a `/metrics` page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.tracing import use_provider
from workers.temporal import connect
from workers.tracing import interceptor


@contextmanager
def spans_in_memory() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider exporting to memory, posguard's own spans sent to it too."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_provider(provider)
    try:
        yield provider, exporter
    finally:
        use_provider(None)
        provider.shutdown()


async def traced_client(env: WorkflowEnvironment, provider: TracerProvider) -> Client:
    """A client of `env`'s server with Temporal's tracing interceptor on `provider`."""
    return await connect(
        env.client.service_client.config.target_host,
        env.client.namespace,
        interceptors=[interceptor(provider)],
    )


async def metrics_page(port: int) -> str:
    """The text of `http://127.0.0.1:{port}/metrics` (asserting a 200 in Prometheus' format)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()
