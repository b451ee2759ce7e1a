"""What the observability tests share: spans kept in memory, a traced client, what
one position's trace must hold, and reading a `/metrics` page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.tracing import use_provider
from tests.waiting import until
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


async def check_one_trace(exporter: InMemorySpanExporter, handle: WorkflowHandle[Any, Any]) -> None:
    """The position's life (run to its end) is one trace, rooted at its start, with
    its activities and posguard's exchange and store spans under them.

    Everything the workflow and its activities did is in that trace. Those who asked
    it something (the gate's price updates, the user stream's signals, a query) each
    have a trace of their own, linked from the handler's span; a query is never put
    on the workflow's trace."""

    def ours() -> list[ReadableSpan]:
        return [
            s
            for s in exporter.get_finished_spans()
            if (s.attributes or {}).get("temporalWorkflowID") == handle.id
        ]

    await until(
        lambda: any(s.name == "CompleteWorkflow:PositionWorkflow" for s in ours()),
        "the workflow's completion span",
    )
    started = [s for s in ours() if s.name == "StartWorkflow:PositionWorkflow"]
    assert len(started) == 1
    trace_id = started[0].context.trace_id
    assert started[0].parent is None  # the start (here the test, as the CLI) is the root
    inside = [
        s
        for s in ours()
        if (s.attributes or {}).get("temporalRunID") and not s.name.startswith("HandleQuery:")
    ]
    assert {s.context.trace_id for s in inside} == {trace_id}
    handled = [
        s for s in inside if s.name in ("HandleUpdate:price", "HandleSignal:exchange_update")
    ]
    assert handled and all(s.links for s in handled)
    trace = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    names = [s.name for s in trace]
    assert "RunWorkflow:PositionWorkflow" in names
    activities = {n.split(":", 1)[1] for n in names if n.startswith("RunActivity:")}
    assert {"exchange.place_entry_with_stop", "exchange.place_order"} <= activities, activities
    # posguard's own spans, in the same trace: the entry and the close, the first
    # stop and the two moved ones, the replaced stops cancelled, the records written
    assert names.count("exchange POST /fapi/v1/order") >= 2, names
    assert names.count("exchange POST /fapi/v1/algoOrder") >= 3, names
    assert names.count("exchange DELETE /fapi/v1/algoOrder") >= 2, names
    assert "store transaction" in names
    # each exchange span hangs under an activity of this workflow
    by_id = {s.context.span_id: s for s in trace}
    for span in trace:
        if span.name.startswith("exchange "):
            parent = by_id[span.parent.span_id] if span.parent else None
            assert parent is not None and parent.name.startswith("RunActivity:"), span.name
