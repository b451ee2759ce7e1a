"""The whole life of a long and of a short on the real stack.

Real Temporal dev server, embedded PostgreSQL, worker, paper exchange through
ccxt. Checked against the exchange's ground truth: the orders placed, the fills,
a flat end, and no moment without a stop once the first stop was placed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from domain.position import CloseReason, PositionState
from domain.types import Side
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, Stack, spec
from workers.settings import AccountSettings, Settings
from workers.worker import run_worker
from workflows.position_io import PositionConfig, exchange_task_queue


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Any
) -> AsyncIterator[Stack]:
    async with PaperExchange(mark_interval_ms=200, admin_port=None) as sim:
        for symbol, price in PRICES.items():
            sim.set_price(symbol, price)
        account = AccountSettings(
            name=f"life{uuid.uuid4().hex[:6]}",
            api_key=SecretStr(sim.api_key),
            secret=SecretStr(sim.api_secret),
            paper_url=sim.rest_url,
            max_requests_per_second=Decimal(1000),
        )
        settings = Settings(
            task_queue=f"life-{uuid.uuid4().hex[:8]}",
            database_url=SecretStr(database_url),
            accounts=[account],
            health_port=-1,
        )
        config = PositionConfig(
            exchange_task_queue=exchange_task_queue(account.name),
            check_interval=timedelta(seconds=2),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(temporal_env.client, settings, stop))
        await asyncio.sleep(0.5)
        try:
            yield Stack(temporal_env.client, sim, store, settings, config)
        finally:
            stop.set()
            await task


@pytest.mark.parametrize("side", list(Side))
async def test_the_whole_life_of_a_position(live: Stack, side: Side) -> None:
    symbol = "BNBUSDT"
    live.sim.set_price(symbol, "600")
    position = spec(symbol, side).model_copy(update={"account": live.settings.accounts[0].name})
    handle = await live.open(position)
    view = await live.wait_state(handle, PositionState.ACTIVE)
    # The market moves for a while; the position stays protected throughout.
    for step in range(10):
        live.sim.set_price(symbol, Decimal(600) + side.sign * step)
        await asyncio.sleep(0.3)
    result = await live.close(handle)
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.OPERATOR

    truth = live.truth()
    orders = live.orders_of(view, algo=False)
    entries = [o for o in orders if not o["reduceOnly"]]
    closes = [o for o in orders if o["reduceOnly"]]
    stops = live.orders_of(view, algo=True)
    assert len(entries) == 1 and entries[0]["status"] == "FILLED"
    assert len(closes) == 1 and closes[0]["status"] == "FILLED"
    assert len(stops) == 1 and stops[0]["algoStatus"] == "CANCELED"
    assert Decimal(stops[0]["quantity"]) == Decimal(entries[0]["executedQty"])
    assert live.position_amt(symbol) == 0
    fills = [f for f in truth["fills"] if f["orderId"] in {o["orderId"] for o in orders}]
    assert sum(Decimal(f["qty"]) for f in fills) == 2 * Decimal(entries[0]["executedQty"])
    # The only unprotected time is between the entry's fill and the first stop.
    [episode] = [e for e in truth["episodes"] if e["symbol"] == symbol and not e["open"]][-1:]
    first_stop_gap = stops[0]["createTime"] - entries[0]["updateTime"]
    assert episode["unprotectedMs"] <= max(first_stop_gap, 0) + 1
    # And PostgreSQL tells the same story.
    row = await live.store.get_position(view.position_id)
    assert row is not None and row.status == "closed" and row.realized_pnl == result.realised_pnl
    kinds = [e.type.value for e in await live.store.events(position_id=view.position_id)]
    assert kinds[0] == "position_create_started" and kinds[-1] == "position_closed"
