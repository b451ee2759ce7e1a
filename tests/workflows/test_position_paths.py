"""One test per path of a position's life, on the time-skipping server.

Each asserts what a trader would check: the orders on the exchange (the paper
exchange's ground truth), the final position, the recorded events, the result.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.position import CloseReason, PositionState
from domain.types import Side
from tests.workflows.harness import Stack, spec
from workflows.position import PositionWorkflow
from workflows.position_io import CloseRequest


@pytest.mark.parametrize("side", list(Side))
async def test_happy_path_entry_stop_then_operator_close(stack: Stack, side: Side) -> None:
    symbol = "BTCUSDT"
    handle = await stack.open(spec(symbol, side))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE
    amt = stack.position_amt(symbol)
    assert abs(amt) == view.snapshot.qty > 0 and (amt > 0) == (side is Side.LONG)
    [stop] = stack.open_stops(symbol)
    assert stop["reduceOnly"] is True and stop["workingType"] == "MARK_PRICE"
    assert Decimal(stop["quantity"]) == view.snapshot.qty
    assert Decimal(stop["triggerPrice"]) == view.snapshot.stop_price
    # The stop sits 2 % on the losing side of the entry, rounded away from the price.
    entry = view.snapshot.avg_entry_price
    assert entry is not None and view.snapshot.stop_price is not None
    assert side.sign * (entry - view.snapshot.stop_price) >= entry * Decimal("0.02") - 1

    result = await handle.execute_update(PositionWorkflow.close, CloseRequest())
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.OPERATOR
    assert stack.position_amt(symbol) == 0
    assert stack.open_stops(symbol) == []
    entries = [o for o in stack.orders_of(view, algo=False) if not o["reduceOnly"]]
    assert len(entries) == 1 and entries[0]["status"] == "FILLED"
    assert (await handle.result()).state is PositionState.CLOSED  # store writes drained
    events = await stack.event_types(view.position_id)
    for expected in (
        "position_create_started",
        "entry_order_placed",
        "entry_order_filled",
        "sl_placement_started",
        "sl_placed",
        "position_active",
        "close_triggered",
        "close_order_placed",
        "close_order_filled",
        "order_cancelled",
        "position_closed",
    ):
        assert expected in events
    row = await stack.store.get_position(view.position_id)
    assert row is not None and row.status == "closed" and row.quantity == 0
    assert row.fees > 0 and row.exit_price is not None
