"""The whole life of a long and of a short on the real stack.

Real Temporal dev server, embedded PostgreSQL, worker, paper exchange through
ccxt. Checked against the exchange's ground truth: the orders placed, the fills,
a flat end, and no moment without a stop once the first stop was placed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from domain.position import CloseReason, PositionState
from domain.types import Side
from tests.workflows.harness import Stack, live_stack


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Any
) -> AsyncIterator[Stack]:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="life",
        check_interval=timedelta(seconds=2),
        with_gate=False,
    ) as stack:
        yield stack


@pytest.mark.parametrize("side", list(Side))
async def test_the_whole_life_of_a_position(live: Stack, side: Side) -> None:
    symbol = "BNBUSDT"
    live.sim.set_price(symbol, "600")
    handle = await live.open(live.on(symbol, side))
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
