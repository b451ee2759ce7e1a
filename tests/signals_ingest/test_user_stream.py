"""The user-data stream makes positions notice exchange changes at once.

The workflows' periodic look is set to an hour here, so a position that reacts in
seconds can only have heard it from the user stream.
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
from signals_ingest.user_stream import changed_symbols
from tests.waiting import PATIENCE_S
from tests.workflows.harness import Stack, live_stack
from workflows.position_io import CloseRequest, PositionView


def order(
    oid: str, symbol: str, status: str, filled: str, cid: str | None = None
) -> dict[str, Any]:
    return {
        "id": oid,
        "symbol": symbol,
        "status": status,
        "filled": filled,
        "clientOrderId": cid,
        "info": {},
    }


def test_only_changed_orders_name_their_symbol() -> None:
    seen: dict[str, tuple[Any, ...]] = {}
    first = [order("1", "BTC/USDT:USDT", "open", "0"), order("2", "ETH/USDT:USDT", "open", "0")]
    assert set(changed_symbols(first, seen)) == {"BTCUSDT", "ETHUSDT"}
    assert changed_symbols(first, seen) == {}  # nothing new: nobody is bothered
    later = [order("1", "BTC/USDT:USDT", "closed", "1"), order("2", "ETH/USDT:USDT", "open", "0")]
    assert set(changed_symbols(later, seen)) == {"BTCUSDT"}


def test_every_change_of_a_symbol_is_passed_on() -> None:
    """A burst (new stop open, old stop cancelled) reaches the workflow whole, so it
    can tell its own echoes from a fill hidden in the same burst."""
    seen: dict[str, tuple[Any, ...]] = {}
    burst = [
        order("7", "BTC/USDT:USDT", "open", "0", "pg-mv-2"),
        order("6", "BTC/USDT:USDT", "canceled", "0", "pg-sl-1"),
        order("5", "BTC/USDT:USDT", "closed", "0.002", "pg-tp-1"),
    ]
    changes = changed_symbols(burst, seen)["BTCUSDT"]
    assert [(c.client_order_id, c.status, c.filled) for c in changes] == [
        ("pg-mv-2", "open", Decimal(0)),
        ("pg-sl-1", "canceled", Decimal(0)),
        ("pg-tp-1", "closed", Decimal("0.002")),
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Any
) -> AsyncIterator[Stack]:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="us",
        check_interval=timedelta(hours=1),  # the fallback look never comes in time
        with_gate=True,
    ) as stack:
        yield stack


async def test_a_close_by_hand_is_seen_at_once(live: Stack) -> None:
    handle = await live.open(live.on("SOLUSDT", Side.LONG))
    view = await live.wait_state(handle, PositionState.ACTIVE)
    live.sim.close_position("SOLUSDT")  # a person, in the exchange's UI
    result = await asyncio.wait_for(handle.result(), PATIENCE_S)
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.EXTERNAL
    assert live.open_stops("SOLUSDT") == []  # its stop was cancelled
    events = await live.event_types(view.position_id)
    assert "position_closed" in events


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_fill_is_seen_at_once(live: Stack, side: Side) -> None:
    symbol = "ETHUSDT"
    live.sim.set_price(symbol, "3000")
    handle = await live.open(live.on(symbol, side))
    view = await live.wait_state(handle, PositionState.ACTIVE)
    stop = view.snapshot.stop_price
    assert stop is not None
    live.sim.set_price(symbol, stop - side.sign * 10)
    result = await asyncio.wait_for(handle.result(), PATIENCE_S)
    live.sim.set_price(symbol, "3000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl < 0


async def test_a_stop_cancelled_by_hand_is_replaced_at_once(live: Stack) -> None:
    """The workflow skips looks for the echoes of its own orders, never for this."""
    symbol = "XRPUSDT"
    handle = await live.open(live.on(symbol, Side.LONG))
    view = await live.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.stop is not None
    (stop,) = live.open_stops(symbol)
    live.sim.cancel_order(int(stop["algoId"]))  # a person, in the exchange's UI

    def replaced(v: PositionView) -> bool:
        return (
            v.snapshot.state is PositionState.ACTIVE
            and v.snapshot.stop is not None
            and v.snapshot.stop.client_order_id != stop["clientAlgoId"]
        )

    after = await live.wait_for(handle, replaced)
    assert replaced(after) and after.snapshot.stop is not None, (
        after.snapshot.state,
        after.snapshot.stop,
        await live.event_types(view.position_id),
    )
    assert [s["clientAlgoId"] for s in live.open_stops(symbol)] == [
        after.snapshot.stop.client_order_id
    ]
    assert "stop_missing_detected" in await live.event_types(view.position_id)
    await handle.execute_update("close", CloseRequest())
    assert live.open_stops(symbol) == []
