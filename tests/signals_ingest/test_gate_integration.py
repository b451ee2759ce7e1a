"""Paper exchange + ccxt.pro feed + price gate + a REAL Temporal dev server.

The probe workflow (tests/signals_ingest/probe_workflow.py) implements the same
`price` update / `band` query contract as PositionWorkflow and records every price
it receives, so the tests can assert that exactly the crossing ticks, and no
inside-band tick, reached Temporal.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.position_messages import BandView, PriceTick
from signals_ingest.market_feed import MarketFeed, Shard
from signals_ingest.price_gate import PriceGate
from signals_ingest.temporal_waker import (
    TemporalWaker,
    is_gone,
    load_bands,
    parse_position_workflow_id,
    sync_gate,
)
from simulator.client import binanceusdm_client
from simulator.server import PaperExchange
from tests import waiting
from tests.signals_ingest.probe_workflow import (
    PROBE_WORKFLOW_TYPE,
    GateProbeWorkflow,
    ProbeInput,
    probe_runner,
)
from workflows.position_io import position_workflow_id

pytestmark = pytest.mark.integration

D = Decimal
T = waiting.PATIENCE_S  # float ok: seconds, a safety net for any single wait


@dataclass
class Stack:
    client: Client
    sim: PaperExchange
    account: str
    task_queue: str

    def select(self, wid: str) -> bool:
        key = parse_position_workflow_id(wid)
        return key is not None and key.account == self.account

    async def start(
        self, symbol: str, best: str, distance: str, step: str
    ) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            GateProbeWorkflow.run,
            ProbeInput(symbol=symbol, best=D(best), distance=D(distance), step=D(step)),
            id=position_workflow_id(self.account, "binanceusdm", symbol),
            task_queue=self.task_queue,
        )

    def pro(self) -> Any:
        return binanceusdm_client(
            self.sim,
            api_key=self.sim.api_key,
            secret=self.sim.api_secret,
            pro=True,
            enableRateLimit=False,
        )


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    client = temporal_env.client
    task_queue = f"gate-probe-{uuid.uuid4().hex[:8]}"
    # No periodic mark pushes: only set_price (and the snapshot on subscribe) tick.
    async with (
        PaperExchange(mark_interval_ms=3_600_000, admin_port=None) as sim,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[GateProbeWorkflow],
            workflow_runner=probe_runner(),
        ),
    ):
        yield Stack(client, sim, f"t{uuid.uuid4().hex[:8]}", task_queue)


async def until(cond: Callable[[], bool], what: str) -> None:
    await waiting.until(cond, what, interval=0.01)


async def step(gate: PriceGate, sim: PaperExchange, symbol: str, price: str) -> None:
    """Move the simulator's mark price and wait until the gate has seen and acted on it."""
    before = gate.counters.ticks
    sim.set_price(symbol, D(price))
    await until(lambda: gate.counters.ticks > before, f"tick {symbol} {price}")
    assert await gate.wait_idle(T)


async def received(handle: WorkflowHandle[Any, Any]) -> list[Decimal]:
    result: list[Decimal] = await handle.query(GateProbeWorkflow.received)
    return result


async def test_only_crossing_ticks_reach_the_workflow(stack: Stack) -> None:
    sim = stack.sim
    a = await stack.start("BTCUSDT", "95000", "1000", "500")  # band (94000, 95500)
    b = await stack.start("ETHUSDT", "3500", "100", "50")  # band (3400, 3550)
    gate = PriceGate(TemporalWaker(stack.client))

    async def both_listed() -> bool:  # visibility (the listing) lags a start
        await sync_gate(
            gate, stack.client, workflow_type=PROBE_WORKFLOW_TYPE, select=stack.select, prime=False
        )
        return len(gate) == 2

    await waiting.until(both_listed, "both probes listed", interval=0.1)
    assert gate.band(a.id) == (D(94000), D(95500))

    pro = stack.pro()
    feed = MarketFeed(pro, gate, shard=Shard())
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        # Subscribing yields one snapshot per symbol (95000, 3500): inside, no call.
        await until(lambda: feed.connected and gate.counters.ticks >= 2, "snapshots")
        assert feed.subscribed == {"BTCUSDT", "ETHUSDT"}
        for price in ("95100", "95400", "95499.9"):  # inside
            await step(gate, sim, "BTCUSDT", price)
        await step(gate, sim, "BTCUSDT", "95500")  # crossing: best 95500, band (94500, 96000)
        await step(gate, sim, "BTCUSDT", "95900")  # inside the new band
        await step(gate, sim, "ETHUSDT", "3549")  # inside
        await step(gate, sim, "ETHUSDT", "3560")  # crossing: band (3460, 3610)
        await step(gate, sim, "BTCUSDT", "96000")  # crossing: best 96000, band (95000, 96500)
        await step(gate, sim, "BTCUSDT", "95200")  # inside
        await step(gate, sim, "BTCUSDT", "95000")  # the stop: the workflow closes
        assert await received(b) == [D(3560)]
        assert await a.result() == [D(95500), D(96000), D(95000)]
        assert a.id not in gate and gate.symbols() == {"ETHUSDT"}
        await until(lambda: feed.subscribed == {"ETHUSDT"}, "resubscribe without BTC")
        sim.set_price("BTCUSDT", D("90000"))  # nobody watches BTC any more
        await step(gate, sim, "ETHUSDT", "3570")  # inside
        c = gate.counters
        assert c.wakeups_sent == 4 and c.wakeups_answered == 3 and c.wakeups_gone == 1
        assert c.wake_errors == 0 and c.crossings == 4
        assert await received(b) == [D(3560)]
    finally:
        stop.set()
        await task
        await gate.close()
        await pro.close()
        await b.signal(GateProbeWorkflow.finish)


async def test_restart_load_and_prime_sends_current_price_to_every_position(
    stack: Stack,
) -> None:
    sim = stack.sim
    sim.set_price("BTCUSDT", D("95000"))
    sim.set_price("SOLUSDT", D("200"))
    handles = [
        await stack.start("BTCUSDT", "95000", "1000", "500"),
        await stack.start("SOLUSDT", "200", "10", "5"),
    ]
    # While no gate runs, BTC crosses the band and comes back inside it.
    sim.set_price("BTCUSDT", D("95700"))
    sim.set_price("BTCUSDT", D("95300"))

    # Restart: bands from Temporal, primed; the subscription snapshot is the current
    # price, which every position receives exactly once whatever its band.
    # Visibility (the listing) lags a start.
    views: list[BandView] = await waiting.poll(
        lambda: load_bands(stack.client, workflow_type=PROBE_WORKFLOW_TYPE, select=stack.select),
        lambda got: len(got) == 2,
        "both probes listed",
        interval=0.1,
    )
    assert sorted(v.symbol for v in views) == ["BTCUSDT", "SOLUSDT"]
    gate = PriceGate(TemporalWaker(stack.client))
    assert gate.load(views, prime=True) == 2
    pro = stack.pro()
    feed = MarketFeed(pro, gate)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        await until(lambda: gate.counters.ticks >= 2, "snapshots")
        assert await gate.wait_idle(T)
        assert await received(handles[0]) == [D(95300)]
        assert await received(handles[1]) == [D(200)]
        assert gate.counters.primed == 2 and gate.counters.wakeups_sent == 2
        # After the prime, inside-band ticks are quiet again.
        await step(gate, sim, "BTCUSDT", "95400")
        await step(gate, sim, "SOLUSDT", "201")
        assert gate.counters.wakeups_sent == 2
        assert await received(handles[0]) == [D(95300)]
    finally:
        stop.set()
        await task
        await gate.close()
        await pro.close()
        for h in handles:
            await h.signal(GateProbeWorkflow.finish)


async def test_waker_maps_closed_and_missing_workflows_to_none(stack: Stack) -> None:
    waker = TemporalWaker(stack.client)
    tick = PriceTick(price=D(1), at=datetime.now(UTC))
    assert await waker(f"position/{stack.account}/binanceusdm/NOPEUSDT", tick) is None
    h = await stack.start("XRPUSDT", "2", "0.1", "0.05")
    band = await waker(h.id, PriceTick(price=D("2.1"), at=tick.at))
    assert band is not None and band.open and band.wake_above == D("2.15")
    await h.signal(GateProbeWorkflow.finish)
    await h.result()
    assert await waker(h.id, tick) is None
    # A gate whose position finished drops it on the next crossing.
    gate = PriceGate(waker)
    gate.upsert(h.id, "XRPUSDT", D(2), D(3))
    gate.on_tick("XRPUSDT", D(4))
    assert await gate.wait_idle(T)
    assert h.id not in gate and gate.counters.wakeups_gone == 1


def test_is_gone_ignores_other_errors() -> None:
    assert not is_gone(RuntimeError("x"))
    assert not is_gone(TimeoutError())
