"""Hedge mode on both venues: a long and a short on one symbol, two workflows.

The account says `hedge_mode = true` and the paper exchange holds every symbol in
hedge mode (Binance `dualSidePosition`, positionSide LONG/SHORT; Bybit positionIdx
1/2). Each side is its own workflow (`position/{account}/{exchange}/{symbol}/{side}`)
whose entry opens its side and whose stop and close only reduce that side; the
ground truth counts each side's protection apart. An account whose settings name
the other mode is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from domain.position import CloseReason, PositionState, position_workflow_id
from domain.trailing import TrailingRule
from domain.types import Side
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, Stack, eventually
from workflows.position import PositionWorkflow
from workflows.position_io import PriceTick

SYMBOL = "BTCUSDT"
EXIT_SIDE = {Side.LONG: "SELL", Side.SHORT: "BUY"}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["binance", "bybit"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        venue=request.param, hedge_mode=True, mark_interval_ms=200, admin_port=None
    ) as exchange:
        if request.param == "bybit":
            exchange.configure(rate_limit_per_s=10_000)
        for symbol, price in PRICES.items():
            exchange.set_price(symbol, price)
        yield exchange


@pytest.fixture(scope="module")
def account_options() -> dict[str, Any]:
    return {"hedge_mode": True}


def open_episode(stack: Stack, side: Side) -> dict[str, Any] | None:
    """The side's open episode on the exchange (its protection, counted apart)."""
    for e in stack.truth()["episodes"]:
        if e["symbol"] == SYMBOL and e["open"] and e.get("positionSide") == side.name:
            return e  # type: ignore[no-any-return]
    return None


async def test_a_long_and_a_short_on_one_symbol_are_two_positions(stack: Stack) -> None:
    stack.sim.set_price(SYMBOL, PRICES[SYMBOL])
    # No user stream here: the periodic look (each second) finds the stop's fill.
    handles = {
        side: await stack.open(
            stack.on(SYMBOL, side, hedge_mode=True), check_interval=timedelta(seconds=1)
        )
        for side in Side
    }
    account, exchange = stack.settings.accounts[0].name, stack.settings.accounts[0].exchange
    for side, handle in handles.items():
        assert handle.id == position_workflow_id(account, exchange, SYMBOL, side)
    views = {
        side: await stack.wait_state(handle, PositionState.ACTIVE)
        for side, handle in handles.items()
    }
    for side, view in views.items():
        assert view.snapshot.state is PositionState.ACTIVE, view
        held = stack.side_amt(SYMBOL, side)
        assert abs(held) == view.snapshot.qty > 0 and (held > 0) == (side is Side.LONG)
        # its stop rests on its own side, at its own level, and reduces that side only
        stops = stack.side_stops(SYMBOL, side)
        assert len(stops) == 1, stops
        assert stops[0]["side"] == EXIT_SIDE[side]
        assert Decimal(stops[0]["triggerPrice"]) == view.snapshot.stop_price
        episode = open_episode(stack, side)
        assert episode is not None and episode["maxStops"] == 1
        if stack.venue == "bybit":  # the entry carried its stop: never unprotected
            assert episode["unprotectedMs"] == 0

    # Closing the long leaves the short, its stop and its quantity untouched.
    short_before = stack.side_amt(SYMBOL, Side.SHORT)
    closed = await stack.close(handles[Side.LONG])
    assert closed.state is PositionState.CLOSED and closed.reason is CloseReason.OPERATOR
    assert stack.side_amt(SYMBOL, Side.LONG) == 0 and stack.side_stops(SYMBOL, Side.LONG) == []
    assert stack.side_amt(SYMBOL, Side.SHORT) == short_before != 0
    assert len(stack.side_stops(SYMBOL, Side.SHORT)) == 1
    assert (await stack.view(handles[Side.SHORT])).snapshot.state is PositionState.ACTIVE

    # The short's stop fires: only the short closes, recorded as stopped out.
    stop = stack.side_stops(SYMBOL, Side.SHORT)[0]
    stack.sim.set_price(SYMBOL, str(Decimal(stop["triggerPrice"]) * Decimal("1.001")))
    result = await handles[Side.SHORT].result()
    stack.sim.set_price(SYMBOL, PRICES[SYMBOL])
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert stack.side_amt(SYMBOL, Side.SHORT) == 0
    assert [a for a in stack.orders(SYMBOL, algo=True) if a["algoStatus"] == "NEW"] == []
    assert [o for o in stack.orders(SYMBOL, algo=False) if o["status"] == "NEW"] == []


async def test_a_position_started_for_a_one_way_account_is_refused_unsent(stack: Stack) -> None:
    """A spec that names one-way mode (its workflow id without a side) on this hedge
    account: the entry is refused before anything is sent, and rolled back."""
    symbol = "SOLUSDT"
    sent = len(stack.orders(symbol, algo=False)) + len(stack.orders(symbol, algo=True))
    handle = await stack.open(stack.on(symbol, Side.LONG))  # hedge_mode False
    result = await handle.result()
    assert result.state is PositionState.ROLLED_BACK
    rows = await stack.store.pool.fetch(
        """SELECT e.payload->>'error_type' AS error_type, e.payload->>'message' AS message
           FROM events e JOIN positions p ON p.id = e.position_id
           WHERE p.workflow_id = $1 AND e.type = 'entry_order_failed'""",
        handle.id,
    )
    failures = [dict(r) for r in rows]
    assert [f["error_type"] for f in failures] == ["PositionModeMismatch"]
    assert "settings say hedge_mode = true: nothing was sent" in failures[0]["message"]
    assert len(stack.orders(symbol, algo=False)) + len(stack.orders(symbol, algo=True)) == sent


async def test_each_side_trails_its_own_stop(stack: Stack) -> None:
    """A rise moves the long's stop up and leaves the short's where it is (Bybit: the
    long's position stop amended in place, positionIdx 1; Binance: new first)."""
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, "3000")
    rule = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
    handles = {
        side: await stack.open(stack.on(symbol, side, hedge_mode=True, trailing=rule))
        for side in Side
    }
    first = {
        side: (await stack.wait_state(handle, PositionState.ACTIVE)).snapshot.stop_price
        for side, handle in handles.items()
    }
    for price in ("3010", "3020", "3030"):  # under the short's stop (2 %: 3060)
        stack.sim.set_price(symbol, price)
        for handle in handles.values():
            await handle.execute_update(
                PositionWorkflow.price, PriceTick(price=Decimal(price), at=datetime.now(UTC))
            )
    long_stop = (await stack.view(handles[Side.LONG])).snapshot.stop_price
    short_stop = (await stack.view(handles[Side.SHORT])).snapshot.stop_price
    assert long_stop is not None and first[Side.LONG] is not None
    assert long_stop > first[Side.LONG]  # trailed up behind the rise
    assert short_stop == first[Side.SHORT]  # the rise is against the short: unmoved

    def resting(side: Side) -> list[Decimal]:
        return [Decimal(a["triggerPrice"]) for a in stack.side_stops(symbol, side)]

    assert resting(Side.LONG) == [long_stop] and resting(Side.SHORT) == [short_stop]
    for side in Side:
        episode = [
            e
            for e in stack.truth()["episodes"]
            if e["symbol"] == symbol and e["open"] and e.get("positionSide") == side.name
        ]
        # Binance moves the long's stop new-first (two for a moment); nothing else has two
        moved_new_first = side is Side.LONG and stack.venue == "binance"
        assert episode and episode[0]["maxStops"] == (2 if moved_new_first else 1)
    for handle in handles.values():
        assert (await stack.close(handle)).state is PositionState.CLOSED
    assert [a for a in stack.orders(symbol, algo=True) if a["algoStatus"] == "NEW"] == []


async def test_each_side_books_only_its_own_funding(stack: Stack) -> None:
    """Funding settles while a long and a short of one symbol are held: each side's
    close books what that side was charged or paid, not the symbol's sum."""
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, PRICES[symbol])
    handles = {side: await stack.open(stack.on(symbol, side, hedge_mode=True)) for side in Side}
    for handle in handles.values():
        await stack.wait_state(handle, PositionState.ACTIVE)

    def charged(side: Side) -> list[Decimal]:
        return [
            i.amount
            for i in stack.sim.engine.incomes
            if i.symbol == symbol
            and i.income_type == "FUNDING_FEE"
            and i.position_side == side.name
        ]

    earlier = {side: len(charged(side)) for side in Side}
    stack.sim.harden(funding=True, funding_interval_ms=500, funding_rate=Decimal("0.001"))
    try:

        async def settled_twice() -> bool:
            return all(len(charged(side)) >= earlier[side] + 2 for side in Side)

        assert await eventually(settled_twice)
        results = {side: await stack.close(handle) for side, handle in handles.items()}
    finally:
        stack.sim.harden(funding=False)
    for side, result in results.items():
        own = sum(charged(side)[earlier[side] :], Decimal(0))
        assert result.funding == own, (side, result.funding, own)
        assert (own < 0) if side is Side.LONG else (own > 0)  # a positive rate: longs pay
