"""Regression test (found by the chaos suite, bench/chaos.py): an order of ours whose
placement had an unknown outcome, and that executed before its cancel reached it, is
booked as the fill it was.

A trailing move places its new stop; the exchange executes the request but the
answer is lost, and the look-up of the retry fails too: the workflow keeps the new
stop's id on its stale list, to cancel it at the next look if it exists. Before that
cancel arrives, the price falls through the new stop (it sits above the old one) and
the exchange closes the whole position with it. The cancel then finds the stop
executed. Before the fix the execution was dropped there: the position ended
`external`, its fills, fees and realised PnL without the stop's, and no event named
the order that closed it. Now it is booked: the close reason is the stop's, the store
holds every execution the exchange made, and the stop-triggered event names it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.position import CloseReason, PositionState
from domain.trailing import TrailingRule
from domain.types import Side
from tests.workflows.harness import Stack, eventually, spec
from workflows.position import PositionWorkflow
from workflows.position_io import PriceTick

RULE = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
QUIET = {"check_interval": timedelta(hours=6)}  # only what the test does reaches it


async def test_a_stale_stop_that_closed_the_position_is_booked_as_its_fill(stack: Stack) -> None:
    symbol = "SOLUSDT"
    stack.sim.set_price(symbol, "150")
    handle = await stack.open(spec(symbol, Side.LONG, trailing=RULE), **QUIET)
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry, first = view.snapshot.avg_entry_price, view.snapshot.stop_price
    assert entry is not None and first is not None
    # The move's new stop is executed, its answer lost; the retry cannot look it up.
    placed = stack.sim.add_fault("drop_response", endpoint="POST /fapi/v1/algoOrder", count=1)
    stack.sim.add_fault("http_status", endpoint="GET /fapi/v1/algoOrder", status=502, count=4)
    # The look's cancel of that stale stop is held at the exchange for a while.
    held = stack.sim.add_fault("latency", endpoint="DELETE /fapi/v1/algoOrder", latency_ms=3000)
    up = (entry * Decimal("1.02")).quantize(Decimal("0.01"))
    stack.sim.set_price(symbol, up)
    await handle.execute_update(PositionWorkflow.price, PriceTick(price=up, at=datetime.now(UTC)))
    assert placed.hits == 1
    mine = [a for a in stack.orders_of(view, algo=True) if a["algoStatus"] == "NEW"]
    assert len(mine) == 2, mine  # the old stop and the new one the workflow is unsure of
    new = max(mine, key=lambda a: Decimal(a["triggerPrice"]))
    assert Decimal(new["triggerPrice"]) > first
    assert await eventually(lambda: _true(held.hits >= 1))
    # While the cancel waits, the price falls between the two stops: the new one fires.
    stack.sim.set_price(symbol, (Decimal(new["triggerPrice"]) + first) / 2)
    assert stack.position_amt(symbol) == 0
    stack.sim.clear_faults()

    result = await handle.result()
    assert result.state is PositionState.CLOSED
    assert result.reason is CloseReason.STOP_FILLED, result
    ours = stack.fills_of(view)
    assert {cid for cid, _ in ours} == {
        view.snapshot.entry_order.client_order_id if view.snapshot.entry_order else "",
        new["clientAlgoId"],
    }
    await stack.books_match(view, result)
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    assert any(
        e.type.value == "stop_triggered" and e.payload.get("client_order_id") == new["clientAlgoId"]
        for e in events
    ), [e.type.value for e in events]
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []


async def _true(value: bool) -> bool:
    return value
