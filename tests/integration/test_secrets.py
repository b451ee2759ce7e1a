"""No key, secret or request signature anywhere an operator or a vendor can read;
and the position's life is one trace.

A position lives its whole life (entry, stop, two trailing moves, close) on an
account whose API key and secret are recognisable strings, with tracing and metrics
on, while the exchange answers some signed requests with HTTP 502s. ccxt then
raises errors that quote the signed URL (its signature included). Afterwards the
test searches everything the run left behind: every log record (with tracebacks),
the event log, the alerts, the workflow's history (payloads decoded), every span,
and the worker's and the gate's `/metrics`. None may hold the key, the secret or a
signature; the scrubbed errors must still be there, naming the endpoint. The same
run checks the tracing (docs/tracing.md): the position's whole life is one trace
from its start, with each exchange request and store write under its activity.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.trailing import TrailingRule
from domain.types import Side
from signals_ingest.gate_process import HealthServer
from tests.integration.test_trailing_gate import active, tick
from tests.observability import check_one_trace, metrics_page, spans_in_memory, traced_client
from tests.waiting import until
from tests.workflows.harness import PRICES, QUICK_ROUNDS, Stack, live_stack, running_gate
from tests.workflows.test_position_paths import entry_count, wait_entry_filled

pytestmark = pytest.mark.integration

KEY = "PGKEYrecognisable0123456789abcdefKEY"
SECRET = "PGSECRETrecognisable9876543210fedcbaSECRET"
# A request signature: as ccxt writes it in a URL, or any HMAC-SHA256 in hex.
SIGNATURE = re.compile(r"signature=[0-9a-f]|\b[0-9a-f]{64}\b")
RULE = TrailingRule(
    callback_pct=Decimal(1), activation_pct=Decimal("0.5"), min_step_pct=Decimal("0.1")
)


class _Everything(logging.Handler):
    """Every log record of the process, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("simulator"):  # the exchange's own side
            self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with spans_in_memory() as kept:
        yield kept


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    traced: tuple[TracerProvider, InMemorySpanExporter],
    logs: _Everything,
) -> AsyncIterator[Stack]:
    async with live_stack(
        await traced_client(temporal_env, traced[0]),
        database_url,
        store,
        name="secret",
        exchange={"mark_interval_ms": 3_600_000, "api_key": KEY, "api_secret": SECRET},
        check_interval=timedelta(minutes=10),
        config=QUICK_ROUNDS,
        settings={"health_port": 0},
    ) as live:
        yield live


def decoded(value: Any) -> Iterator[str]:
    """Every string in a history's JSON, payload data decoded from base64."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "data" and isinstance(v, str):
                try:
                    yield base64.b64decode(v, validate=True).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    yield v
            else:
                yield from decoded(v)
    elif isinstance(value, list):
        for v in value:
            yield from decoded(v)
    elif isinstance(value, str):
        yield value


async def test_nothing_secret_is_left_anywhere_after_a_positions_life(
    stack: Stack, traced: tuple[TracerProvider, InMemorySpanExporter], logs: _Everything
) -> None:
    _, exporter = traced
    assert stack.sim.api_key == KEY
    symbol = "BNBUSDT"
    gates: list[HealthServer] = []
    async with running_gate(
        stack, sync_interval=timedelta(milliseconds=200), health_port=0, health_out=gates
    ) as src:
        # signed GETs and DELETEs carry the signature in the URL ccxt quotes
        faults = [
            stack.sim.add_fault(
                "http_status", endpoint="GET /fapi/v1/userTrades", status=502, count=2
            ),
            stack.sim.add_fault(
                "http_status", endpoint="DELETE /fapi/v1/algoOrder", status=502, count=1
            ),
        ]
        # the first stop and the closes refused until the position is alerted on
        entries = entry_count(stack, symbol)
        stop_refused = stack.sim.add_fault(
            "http_status", endpoint="POST /fapi/v1/algoOrder", status=502
        )
        handle = await stack.open(
            stack.on(symbol, Side.LONG, quote="1000", trailing=RULE), exchange_attempts=1
        )
        await wait_entry_filled(stack, symbol, entries)
        close_refused = stack.sim.add_fault(
            "http_status", endpoint="POST /fapi/v1/order", status=502
        )
        position_id = (await stack.view(handle)).position_id
        try:
            await until(
                lambda: stack.store.pool.fetchval(
                    "SELECT count(*) > 0 FROM alerts WHERE position_id = $1", position_id
                ),
                "an alert on the unprotected position",
            )
        finally:
            stack.sim.faults.remove(stop_refused.id)
            stack.sim.faults.remove(close_refused.id)
        await active(stack, handle)
        price = Decimal(PRICES[symbol])
        for step in ("1.02", "1.04"):
            await tick(src, stack.sim, symbol, price * Decimal(step))
        await until(lambda: all(f.count == 0 for f in faults), "every fault hit")
        await stack.close(handle)
        await check_one_trace(exporter, handle)
        gate_page = await metrics_page(gates[0].port)
    worker_page = await metrics_page(stack.endpoints[0].port)

    account = stack.settings.accounts[0].name
    events = await stack.store.pool.fetch(
        "SELECT * FROM events WHERE account = $1 OR position_id = $2 OR correlation_id = $3",
        account,
        position_id,
        handle.id,
    )
    alerts = await stack.store.pool.fetch(
        "SELECT * FROM alerts WHERE position_id = $1", position_id
    )
    history = json.loads((await handle.fetch_history()).to_json())
    places: dict[str, list[str]] = {
        "logs": logs.lines,
        "events": [json.dumps(dict(r), default=str) for r in events],
        "alerts": [json.dumps(dict(r), default=str) for r in alerts],
        "workflow history": list(decoded(history)),
        "spans": [span.to_json() for span in exporter.get_finished_spans()],
        "metrics": [worker_page, gate_page],
    }
    for where, texts in places.items():
        assert texts, f"nothing in {where}: the search would prove nothing"
        for text in texts:
            assert KEY not in text, (where, text[:300])
            assert SECRET not in text, (where, text[:300])
            found = SIGNATURE.search(text)
            assert found is None, (where, text[max(0, found.start() - 200) : found.end() + 50])
    # the failures were recorded, scrubbed: the endpoint named, its query gone
    redacted = "/fapi/v1/userTrades?<redacted>"
    assert any(redacted in line for line in logs.lines)
    assert any(redacted in text for text in places["workflow history"])
