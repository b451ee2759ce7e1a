"""Tracing: one position's life is one trace, from its start through every activity,
with posguard's own spans for exchange requests and store writes, and no secret
in any span.

The stack runs on a client carrying Temporal's TracingInterceptor (as `posguard
worker` does when OTEL_EXPORTER_OTLP_ENDPOINT is set), with an in-memory exporter
in place of OTLP. The position is opened, its stop moved by the real price gate,
and closed; then the spans are read back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.trailing import TrailingRule
from domain.types import Side
from tests.integration.test_trailing_gate import active, tick
from tests.observability import spans_in_memory, traced_client
from tests.waiting import until
from tests.workflows.harness import PRICES, QUICK, Stack, live_stack, running_gate

pytestmark = pytest.mark.integration

RULE = TrailingRule(
    callback_pct=Decimal(1), activation_pct=Decimal("0.5"), min_step_pct=Decimal("0.1")
)


@pytest.fixture(scope="module")
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with spans_in_memory() as kept:
        yield kept


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> AsyncIterator[Stack]:
    async with live_stack(
        await traced_client(temporal_env, spans[0]),
        database_url,
        store,
        name="traced",
        exchange={"mark_interval_ms": 3_600_000},  # only set_price ticks
        check_interval=timedelta(minutes=10),
        config=QUICK,
    ) as live:
        yield live


def attributes_text(span: ReadableSpan) -> str:
    return " ".join(
        [span.name, *(f"{k}={v}" for k, v in (span.attributes or {}).items())]
        + [f"{e.name} {dict(e.attributes or {})}" for e in span.events]
    )


async def test_a_positions_life_is_one_trace_with_its_exchange_calls_and_no_secret(
    stack: Stack, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans
    symbol = "SOLUSDT"
    async with running_gate(stack, sync_interval=timedelta(milliseconds=200)) as src:
        handle = await stack.open(stack.on(symbol, Side.LONG, quote="1000", trailing=RULE))
        await active(stack, handle)
        price = Decimal(PRICES[symbol])
        for step in ("1.02", "1.04"):
            await tick(src, stack.sim, symbol, price * Decimal(step))
        await until(lambda: len(stack.open_stops(symbol)) == 1, "one stop after the moves")
        await stack.close(handle)

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
    everything = exporter.get_finished_spans()
    started = [s for s in ours() if s.name == "StartWorkflow:PositionWorkflow"]
    assert len(started) == 1
    trace_id = started[0].context.trace_id
    assert started[0].parent is None  # the start (here the test, as the CLI) is the root
    # Everything the workflow and its activities did is in that one trace. Those who
    # asked it something (the gate's price updates, the user stream's signals, a
    # query) each have a trace of their own, linked from the handler's span; a query
    # is never put on the workflow's trace.
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
    trace = [s for s in everything if s.context.trace_id == trace_id]
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
    # no key, secret or signature anywhere in any span of the run
    for span in everything:
        text = attributes_text(span)
        for secret in (stack.sim.api_key, stack.sim.api_secret, "signature="):
            assert secret not in text, (span.name, secret)
