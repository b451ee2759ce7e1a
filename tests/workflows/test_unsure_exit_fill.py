"""Regression test (found by the chaos suite, bench/chaos.py --harsh): a stop of the
position whose placement's outcome the workflow never learned, and that then closed
the position, is booked as the stop fill it was.

The entry fills; its stop is executed by the exchange but the answer is lost, and
every look-up of it fails for a while: the stop-loss saga retries it under the same
id, fails, and goes on to close at market. Meanwhile the price falls through the
stop and the exchange closes the position with it. The close finds the position flat
and no exit order it knew of filled. Before the fix it booked a close outside
posguard ("external"), with the stop's fill, fee and PnL missing and no event naming
the stop. Now the exchange's trade history names the stop (one of this position's
own client ids): it is booked as `stop_filled`, with its placement and its fill.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.position import CloseReason, PositionState
from domain.types import Side
from tests.workflows.harness import Stack, eventually

QUIET = {"check_interval": timedelta(hours=6)}  # only what the test does reaches it


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_never_known_placed_that_closed_the_position_is_booked(
    stack: Stack, side: Side
) -> None:
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    lost = stack.fault("drop_response", "stop", count=1)
    stack.sim.add_fault(
        "http_status", endpoint="GET /fapi/v1/algoOrder", status=502, duration_ms=6000
    )
    handle = await stack.open(stack.on(symbol, side), **QUIET)
    assert await eventually(lambda: _true(lost.hits >= 1))
    # The stop is on the exchange; the workflow does not know it. The price goes
    # through it before the saga's close at market.
    stack.sim.set_price(symbol, "540" if side is Side.LONG else "660")
    assert await eventually(lambda: _true(stack.position_amt(symbol) == 0))

    result = await handle.result()
    view = await stack.view(handle)
    assert result.state is PositionState.CLOSED
    assert result.reason is CloseReason.STOP_FILLED, result
    await stack.books_match(view, result)
    [stop] = [a for a in stack.orders_of(view, algo=True) if a["orderType"] == "STOP_MARKET"]
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    named = {
        (e.type.value, e.payload.get("client_order_id"))
        for e in events
        if e.type.value in ("sl_placed", "stop_triggered")
    }
    assert ("sl_placed", stop["clientAlgoId"]) in named
    assert ("stop_triggered", stop["clientAlgoId"]) in named
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []


async def _true(value: bool) -> bool:
    return value
