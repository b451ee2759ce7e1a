"""Regression tests: an order of ours that executed before its cancel reached it is
booked as the fill it was, whichever step cancelled it.

An order of ours the workflow does not know (placed in a workflow task that was
lost) is cancelled at the next look; a trailing move places its new stop first and
then cancels the old one. Either can fill between the moment the workflow decides to
cancel it and the moment the cancel reaches the exchange. The cancel then answers
with an executed order, and that answer used to be dropped: the workflow found the
position flat, could not name the order that closed it and ended it as closed
outside posguard, without that stop's fill, fee and PnL in its books.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.position import CloseReason, PositionState
from domain.position_messages import ExchangeUpdate
from domain.trailing import TrailingRule
from domain.types import Side
from tests.workflows.harness import Stack, eventually, spec
from workflows.position import PositionWorkflow
from workflows.position_io import PriceTick

RULE = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
QUIET = {"check_interval": timedelta(hours=6)}  # only what the test does reaches it


async def test_an_unknown_stop_of_ours_that_fills_before_its_cancel_is_booked(
    stack: Stack,
) -> None:
    symbol = "XRPUSDT"
    stack.sim.set_price(symbol, "2.5")
    handle = await stack.open(spec(symbol, Side.LONG), **QUIET)
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    stop = view.snapshot.stop
    assert stop is not None and stop.trigger_price is not None
    # A stop of this position that a lost workflow task placed: above the known one.
    level = (stop.trigger_price * Decimal("1.01")).quantize(Decimal("0.0001"))
    lost = stack.place_lost_stop(view, level)
    # The look lists it and cancels it; the cancel is held at the exchange a while.
    held = stack.sim.add_fault(
        "latency", endpoint="DELETE /fapi/v1/algoOrder", latency_ms=2500, count=1
    )
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(source="test"))
    assert await eventually(lambda: _true(held.hits >= 1))
    # Meanwhile the price falls to between the two stops: the lost one closes it all.
    stack.sim.set_price(symbol, ((level + stop.trigger_price) / 2).quantize(Decimal("0.0001")))
    assert stack.position_amt(symbol) == 0

    result = await _ended(handle)
    assert result.reason is CloseReason.STOP_FILLED, result
    ours = stack.fills_of(view)
    assert lost in {cid for cid, _ in ours}
    await stack.books_match(view, result)
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    assert any(
        e.type.value == "stop_triggered" and e.payload.get("client_order_id") == lost
        for e in events
    ), [e.type.value for e in events]
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []


async def test_a_wick_through_the_old_stop_during_its_move_is_booked(stack: Stack) -> None:
    """The old stop fills while the move's new stop is on its way: the new one is
    refused (nothing left to reduce), the old one stays the position's stop and is
    found filled."""
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    handle = await stack.open(spec(symbol, Side.LONG, trailing=RULE), **QUIET)
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry, first = view.snapshot.avg_entry_price, view.snapshot.stop_price
    assert entry is not None and first is not None and view.snapshot.stop is not None
    old = view.snapshot.stop.client_order_id
    # The move's new stop is held at the exchange for a while before it is placed.
    held = stack.sim.add_fault(
        "latency", endpoint="POST /fapi/v1/algoOrder", latency_ms=2500, count=1
    )
    up = (entry * Decimal("1.02")).quantize(Decimal("0.01"))
    stack.sim.set_price(symbol, up)
    move = asyncio.create_task(
        handle.execute_update(PositionWorkflow.price, PriceTick(price=up, at=datetime.now(UTC)))
    )
    assert await eventually(lambda: _true(held.hits >= 1))
    # A wick goes through the old stop and back: the old stop closes the position.
    stack.sim.set_price(symbol, (first * Decimal("0.98")).quantize(Decimal("0.01")))
    assert stack.position_amt(symbol) == 0
    stack.sim.set_price(symbol, up)
    await move

    result = await _ended(handle)
    assert result.reason is CloseReason.STOP_FILLED, result
    assert old in {cid for cid, _ in stack.fills_of(view)}
    await stack.books_match(view, result)
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    assert any(
        e.type.value == "stop_triggered" and e.payload.get("client_order_id") == old for e in events
    ), [e.type.value for e in events]
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []
    # The old stop's row says what it did: the quantity it filled, at what price.
    [row] = [o for o in await stack.store.orders(view.position_id) if o.client_order_id == old]
    assert row.status == "filled" and row.filled_quantity == view.snapshot.qty
    assert row.average_price == result.exit_price
    assert row.exchange_order_id == view.snapshot.stop.exchange_order_id


async def _ended(handle: Any) -> Any:
    try:
        result = await asyncio.wait_for(handle.result(), 60)
    except TimeoutError:
        now = await handle.query(PositionWorkflow.state)
        raise AssertionError(f"the workflow did not end: {now}") from None
    assert result.state is PositionState.CLOSED, result
    return result


async def _true(value: bool) -> bool:
    return value
