"""A Binance IP ban (HTTP 418 "banned until <ms>") right after an entry's fill, on the
real dev server and the paper exchange: waited out, not spent (docs/safety.md, "A
rate-limit ban is waited out, not spent"). Binance only: Bybit's 403 names no end,
and Bybit's entries carry their stop.
"""

from __future__ import annotations

from domain.position import PositionState
from domain.types import Side
from tests.workflows.harness import Stack


async def test_a_ban_after_the_fill_is_waited_out_and_the_stop_goes(stack: Stack) -> None:
    """The entry fills, then Binance bans the IP (418 "banned until") for longer than
    the entry activity's own stop retries last (1 s here): the ban's end is waited
    for in that activity, so the stop goes once it lifts, one refusal in all. Before,
    the saga spent its stop attempts within the ban and closed the position."""
    symbol = "SOLUSDT"
    ban = stack.fault("rate_limit", "stop", symbol=symbol, status=418, duration_ms=4000)
    handle = await stack.open(stack.on(symbol, Side.LONG))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert ban.hits == 1
    entries = [o for o in stack.orders_of(view, algo=False) if not o["reduceOnly"]]
    assert len(entries) == 1 and entries[0]["status"] == "FILLED"
    assert len(stack.open_stops(symbol)) == 1
    assert "sl_placement_failed" not in await stack.event_types(view.position_id)
    await stack.close(handle)
