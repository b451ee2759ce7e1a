"""One test per path of a position's life, on the real Temporal dev server.

Each asserts what a trader would check: the orders on the exchange (the paper
exchange's ground truth), the final position, the recorded events, the result.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowFailureError

from domain.position import CloseReason, PositionState
from domain.sizing import TakeProfitRule
from domain.types import Side
from tests.workflows.harness import Stack, eventually
from workers.positions import PositionAlreadyOpen
from workflows.position import PositionWorkflow
from workflows.position_io import ExchangeUpdate
from workflows.search_attributes import CLOSE_REASON


@pytest.mark.parametrize("side", list(Side))
async def test_happy_path_entry_stop_then_operator_close(stack: Stack, side: Side) -> None:
    symbol = "BTCUSDT"
    handle = await stack.open(stack.on(symbol, side))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE
    amt = stack.position_amt(symbol)
    assert abs(amt) == view.snapshot.qty > 0 and (amt > 0) == (side is Side.LONG)
    [stop] = stack.open_stops(symbol)
    # Reduce-only, or (Bybit: the stop sent with the entry) closing the position itself.
    assert (stop["reduceOnly"] or stop["closePosition"]) and stop["workingType"] == "MARK_PRICE"
    assert stack.stop_covers(stop) == view.snapshot.qty
    assert Decimal(stop["triggerPrice"]) == view.snapshot.stop_price
    # The stop sits 2 % on the losing side of the entry, rounded away from the price.
    entry = view.snapshot.avg_entry_price
    assert entry is not None and view.snapshot.stop_price is not None
    assert side.sign * (entry - view.snapshot.stop_price) >= entry * Decimal("0.02") - 1

    # The Web UI's page of the running position: its current details (Markdown).
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = meta.current_details
    assert f"**{side.value} {view.snapshot.qty} {symbol}** — active" in details
    assert f"protected: stop {view.snapshot.stop_price}" in details

    result = await stack.close(handle)
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.OPERATOR
    # The Web UI's list tells how it ended (the CloseReason search attribute).
    described = await handle.describe()
    assert described.typed_search_attributes.get(CLOSE_REASON) == "operator"
    assert stack.position_amt(symbol) == 0
    assert stack.open_stops(symbol) == []
    entries = [o for o in stack.orders_of(view, algo=False) if not o["reduceOnly"]]
    assert len(entries) == 1 and entries[0]["status"] == "FILLED"
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
    # The timeline and the money can be rebuilt from PostgreSQL alone.
    fills = await stack.store.fills(view.position_id)
    kinds = {o.client_order_id: o.kind for o in await stack.store.orders(view.position_id)}
    entry_qty = sum(f.quantity for f in fills if kinds[f.client_order_id] == "entry")
    exit_qty = sum(f.quantity for f in fills if kinds[f.client_order_id] == "close")
    assert entry_qty == exit_qty == view.snapshot.qty
    assert sum(f.fee for f in fills) == row.fees


async def wait_entry_filled(stack: Stack, symbol: str, before: int) -> None:
    """Poll the exchange until a new opening market order of `symbol` has filled."""

    async def filled() -> bool:
        entries = [o for o in stack.orders(symbol, algo=False) if not o["reduceOnly"]]
        return len(entries) > before and entries[-1]["status"] in ("FILLED", "EXPIRED")

    assert await eventually(filled)


def entry_count(stack: Stack, symbol: str) -> int:
    return len([o for o in stack.orders(symbol, algo=False) if not o["reduceOnly"]])


@pytest.mark.parametrize("side", list(Side))
async def test_partial_fill_protects_the_filled_quantity(stack: Stack, side: Side) -> None:
    stack.sim.configure(market_fill_ratio="0.5")
    try:
        handle = await stack.open(stack.on("ETHUSDT", side, quote="1500"))
        view = await stack.wait_state(handle, PositionState.ACTIVE)
    finally:
        stack.sim.configure(market_fill_ratio="1")
    [entry] = [o for o in stack.orders_of(view, algo=False) if not o["reduceOnly"]]
    requested, filled = Decimal(entry["origQty"]), Decimal(entry["executedQty"])
    assert entry["status"] == "EXPIRED" and 0 < filled < requested
    assert view.snapshot.qty == filled
    [stop] = stack.open_stops("ETHUSDT")
    assert stack.stop_covers(stop) == filled  # the filled, not the requested, quantity
    await stack.close(handle)
    assert stack.position_amt("ETHUSDT") == 0


@pytest.mark.parametrize("side", list(Side))
async def test_stop_rejected_three_times_rolls_back_to_flat(stack: Stack, side: Side) -> None:
    symbol = "SOLUSDT"
    stack.refuse("stop", "server_error")
    try:
        handle = await stack.open(stack.on(symbol, side), exchange_attempts=1)
        result = await handle.result()
    finally:
        stack.sim.clear_faults()
    assert result.state is PositionState.ROLLED_BACK
    assert result.reason is CloseReason.STOP_UNPLACEABLE
    assert stack.position_amt(symbol) == 0
    assert stack.open_stops(symbol) == []
    view = await stack.view(handle)
    events = await stack.event_types(view.position_id)
    assert events.count("sl_placement_failed") == 3
    assert "position_rollback_started" in events and "position_rolled_back" in events
    closes = [o for o in stack.orders_of(view, algo=False) if o["reduceOnly"]]
    assert len(closes) == 1 and closes[0]["status"] == "FILLED"


async def test_rollback_close_fails_then_emergency_stop_protects(stack: Stack) -> None:
    symbol, side = "BNBUSDT", Side.LONG
    before = entry_count(stack, symbol)
    # A slow, permanent refusal of the stop gives the test time to break the close too.
    stack.fault("latency", "stop", latency_ms=1500, count=1)
    stack.refuse("stop", "invalid_order", count=1)
    handle = await stack.open(
        stack.on(symbol, side), exchange_attempts=1, check_interval=timedelta(hours=6)
    )
    await wait_entry_filled(stack, symbol, before)
    close_fault = stack.refuse("order", "server_error")
    try:
        view = await stack.wait_for(handle, lambda v: v.snapshot.emergency_stop is not None)
    finally:
        stack.sim.faults.remove(close_fault.id)
    assert view.snapshot.state is PositionState.FAILED
    [emergency] = stack.open_stops(symbol)
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    # Wider than the 2 % stop: the emergency distance (5 %) from the mark.
    assert Decimal(emergency["triggerPrice"]) < entry * Decimal("0.96")
    assert Decimal(emergency["quantity"]) == view.snapshot.qty
    assert stack.position_amt(symbol) == view.snapshot.qty

    async def emergency_recorded() -> bool:  # store writes follow the workflow
        return "emergency_stop_placed" in await stack.event_types(view.position_id)

    assert await eventually(emergency_recorded)
    # The exchange works again: the next look puts the real stop back, and the
    # emergency stop goes at once (not at the periodic look, hours away here).
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="test"))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE
    assert view.snapshot.stop is not None and view.snapshot.emergency_stop is None

    async def only_the_stop_left() -> bool:
        stops = stack.open_stops(symbol)
        return [s["clientAlgoId"] for s in stops] == [view.snapshot.stop.client_order_id]

    assert await eventually(only_the_stop_left), stack.open_stops(symbol)
    await stack.close(handle)
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []


async def test_everything_fails_raises_critical_and_retries_until_recovery(stack: Stack) -> None:
    symbol, side = "XRPUSDT", Side.SHORT
    before = entry_count(stack, symbol)
    stop_fault = stack.refuse("stop", "server_error")
    handle = await stack.open(stack.on(symbol, side), exchange_attempts=1)
    await wait_entry_filled(stack, symbol, before)
    close_fault = stack.refuse("order", "server_error")
    view = await stack.view(handle)

    async def critical_recorded() -> bool:
        events = await stack.store.events(position_id=view.position_id, min_severity="critical")
        return any(e.type.value == "critical_error" for e in events)

    try:
        assert await eventually(critical_recorded)
        assert stack.position_amt(symbol) != 0  # still open: nothing could be done
        alerts = await stack.store.pool.fetch(
            "SELECT severity FROM alerts WHERE position_id = $1", view.position_id
        )
        assert "critical" in [a["severity"] for a in alerts]
    finally:
        stack.sim.faults.remove(stop_fault.id)
        stack.sim.faults.remove(close_fault.id)
    # The exchange recovers: the saga's next round protects the position.
    view = await stack.wait_for(
        handle, lambda v: v.snapshot.state is PositionState.ACTIVE or v.snapshot.qty == 0
    )
    assert view.snapshot.state in (PositionState.ACTIVE, PositionState.ROLLED_BACK)
    if view.snapshot.state is PositionState.ACTIVE:
        assert len(stack.open_stops(symbol)) == 1
        await stack.close(handle)
    assert stack.position_amt(symbol) == 0


async def test_an_adoption_that_finds_nothing_rolls_back_and_places_nothing(stack: Stack) -> None:
    """The reconciler started an adoption, but the position was closed before the
    workflow read it: it ends rolled back at once (it once looped forever on an
    illegal pending_sl → rolled_back transition, and a close update never returned)."""
    symbol = "BNBUSDT"
    assert stack.position_amt(symbol) == 0
    since = await stack.store.pool.fetchval("SELECT now()")
    before = len(stack.orders(symbol, algo=False)) + len(stack.orders(symbol, algo=True))
    handle = await stack.open(stack.on(symbol, Side.LONG, adopt=True))
    result = await handle.result()
    assert result.state is PositionState.ROLLED_BACK and result.reason is CloseReason.EXTERNAL
    assert len(stack.orders(symbol, algo=False)) + len(stack.orders(symbol, algo=True)) == before

    async def recorded() -> list[str]:
        rows = await stack.store.pool.fetch(
            "SELECT payload->>'error_type' AS e FROM events WHERE type = 'critical_error'"
            " AND symbol = $1 AND account = $2 AND occurred_at >= $3",
            symbol,
            stack.settings.accounts[0].name,
            since,
        )
        return [r["e"] for r in rows]

    async def seen() -> bool:
        return bool(await recorded())

    assert await eventually(seen)
    assert await recorded() == ["NothingToAdopt"]


@pytest.mark.parametrize("side", list(Side))
async def test_stop_that_would_trigger_immediately_closes_at_market(
    stack: Stack, side: Side
) -> None:
    symbol = "DOGEUSDT"
    stack.sim.set_price(symbol, "0.15")
    before = entry_count(stack, symbol)
    # The stop request is slow; meanwhile the mark crashes through the stop level,
    # so the exchange itself answers -2021.
    stack.fault("latency", "stop", latency_ms=800, count=1)
    handle = await stack.open(stack.on(symbol, side))
    await wait_entry_filled(stack, symbol, before)
    stack.sim.set_price(symbol, "0.1400" if side is Side.LONG else "0.1600")
    result = await handle.result()
    stack.sim.set_price(symbol, "0.15")
    assert result.state is PositionState.ROLLED_BACK
    assert result.reason is CloseReason.STOP_BEYOND_MARK
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    view = await stack.view(handle)
    assert "sl_would_trigger_immediately" in await stack.event_types(view.position_id)
    assert result.realised_pnl < 0


@pytest.mark.parametrize("side", list(Side))
async def test_stop_filled_by_a_price_move_closes_the_position(stack: Stack, side: Side) -> None:
    symbol = "BTCUSDT"
    stack.sim.set_price(symbol, "60000")
    # No message comes (no user stream here): the periodic look finds the fill.
    handle = await stack.open(stack.on(symbol, side), check_interval=timedelta(seconds=1))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    stop = view.snapshot.stop_price
    assert stop is not None
    stack.sim.set_price(symbol, stop - side.sign * 100)  # through the stop
    assert stack.position_amt(symbol) == 0  # the exchange's stop fired
    result = await handle.result()
    stack.sim.set_price(symbol, "60000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.exit_price is not None and result.realised_pnl < 0 and result.fees > 0
    assert stack.open_stops(symbol) == []
    events = await stack.event_types(view.position_id)
    assert "stop_triggered" in events and events[-1] == "position_closed"
    # the stop's row says what it did: its exchange id, the quantity it filled, at what
    [row] = [o for o in await stack.store.orders(view.position_id) if o.kind == "stop"]
    own = view.snapshot.stop
    assert own is not None and row.exchange_order_id == own.exchange_order_id
    assert row.status == "filled" and row.filled_quantity == view.snapshot.qty
    assert row.average_price == result.exit_price


async def test_adopt_protects_a_position_found_on_the_exchange(stack: Stack) -> None:
    symbol = "SOLUSDT"
    stack.sim.open_position(symbol, "BUY", "3")  # opened by hand, no stop
    handle = await stack.open(stack.on(symbol, Side.LONG, adopt=True))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.qty == Decimal(3)
    [stop] = stack.open_stops(symbol)
    assert Decimal(stop["quantity"]) == Decimal(3)
    assert "position_adopted" in await stack.event_types(view.position_id)
    await stack.close(handle)
    assert stack.position_amt(symbol) == 0


async def test_cancelling_the_workflow_closes_the_position(stack: Stack) -> None:
    symbol = "ETHUSDT"
    handle = await stack.open(stack.on(symbol, Side.SHORT))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    events = await stack.event_types(view.position_id)
    assert "close_triggered" in events and "position_closed" in events


async def test_a_second_position_on_the_same_key_is_refused(stack: Stack) -> None:
    handle = await stack.open(stack.on("BNBUSDT", Side.LONG))
    await stack.wait_state(handle, PositionState.ACTIVE)
    with pytest.raises(PositionAlreadyOpen):
        await stack.open(stack.on("BNBUSDT", Side.SHORT))
    await stack.close(handle)
    # Once closed, the same key can be traded again (a new lifecycle).
    again = await stack.open(stack.on("BNBUSDT", Side.SHORT))
    await stack.wait_state(again, PositionState.ACTIVE)
    await stack.close(again)
    assert stack.position_amt("BNBUSDT") == 0


@pytest.mark.parametrize("side", list(Side))
async def test_position_closed_outside_posguard_is_booked_and_its_stop_cancelled(
    stack: Stack, side: Side
) -> None:
    """A person closes the position in the exchange's UI: the workflow books that
    close at its own fill (exit price, PnL, fee, its order and fill rows), records
    it as external, and cancels its stop."""
    symbol = "XRPUSDT"
    stack.sim.set_price(symbol, "2")
    handle = await stack.open(stack.on(symbol, side))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    moved = Decimal("2.02") if side is Side.LONG else Decimal("1.99")  # in profit
    stack.sim.set_price(symbol, moved)
    by_hand = stack.sim.close_position(symbol)  # a person closes it in the exchange UI
    assert by_hand is not None
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="ACCOUNT_UPDATE"))
    result = await handle.result()
    stack.sim.set_price(symbol, "2")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.EXTERNAL
    assert stack.open_stops(symbol) == []
    # Booked at the exchange's own execution of the close by hand.
    [fill] = [f for f in stack.sim.engine.fills if f.order_id == by_hand.order_id]
    assert result.exit_price == fill.price == moved
    sign = 1 if side is Side.LONG else -1
    qty = view.snapshot.qty
    assert result.realised_pnl == sign * (fill.price - entry) * qty > 0
    entry_fee = await stack.store.pool.fetchval(
        "SELECT sum(f.fee) FROM orders o JOIN fills f USING (client_order_id) "
        "WHERE o.position_id = $1 AND o.kind = 'entry'",
        view.position_id,
    )
    assert result.fees == entry_fee + fill.commission
    events = await stack.event_types(view.position_id)
    assert events.count("outside_close_filled") == 1 and "position_closed" in events
    rows = await stack.store.pool.fetch(
        "SELECT o.kind, o.status, o.quantity, f.price, f.quantity AS filled, f.fee "
        "FROM orders o JOIN fills f USING (client_order_id) "
        "WHERE o.position_id = $1 AND o.kind = 'outside'",
        view.position_id,
    )
    assert [tuple(r) for r in rows] == [
        ("outside", "filled", qty, fill.price, qty, fill.commission)
    ]


@pytest.mark.parametrize("side", list(Side))
async def test_take_profit_fills_and_the_stop_is_cancelled(stack: Stack, side: Side) -> None:
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, "3000")
    # No message comes (no user stream here): the periodic look finds the fill.
    handle = await stack.open(
        stack.on(symbol, side, take_profit=TakeProfitRule(percent=Decimal(3))),
        check_interval=timedelta(seconds=1),
    )
    view = await stack.wait_for(handle, lambda v: v.snapshot.take_profit is not None)
    assert view.snapshot.take_profit is not None and view.snapshot.take_profit.trigger_price
    assert len(stack.open_stops(symbol)) == 1
    [tp] = [a for a in stack.orders_of(view, algo=True) if a["orderType"] == "TAKE_PROFIT_MARKET"]
    assert tp["algoStatus"] == "NEW" and tp["reduceOnly"] is True
    target = view.snapshot.take_profit.trigger_price
    stack.sim.set_price(symbol, target + side.sign * 5)
    result = await handle.result()
    stack.sim.set_price(symbol, "3000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.TAKE_PROFIT
    assert result.realised_pnl > 0
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    assert "take_profit_filled" in await stack.event_types(view.position_id)


async def test_a_rate_limit_is_retried_and_recorded(stack: Stack) -> None:
    symbol = "SOLUSDT"
    stack.fault("rate_limit", "order", symbol=symbol, count=1)
    handle = await stack.open(stack.on(symbol, Side.LONG))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE  # Temporal retried the entry
    entries = [o for o in stack.orders_of(view, algo=False) if not o["reduceOnly"]]
    assert len(entries) == 1
    hits = await stack.store.events(event_type="rate_limit_hit", limit=100)
    assert any(e.correlation_id == view.workflow_id for e in hits)
    await stack.close(handle)


@pytest.mark.parametrize("side", list(Side))
async def test_the_funding_paid_or_received_while_held_is_in_the_close(
    stack: Stack, side: Side
) -> None:
    """Funding settles on the exchange while the position is held (a positive rate:
    longs pay, shorts receive): the close books exactly what the exchange charged."""
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    handle = await stack.open(stack.on(symbol, side))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    stack.sim.harden(funding=True, funding_interval_ms=500, funding_rate=Decimal("0.001"))
    try:

        def charged() -> list[Decimal]:
            return [
                i.amount
                for i in stack.sim.engine.incomes
                if i.symbol == symbol and i.income_type == "FUNDING_FEE"
            ]

        earlier = len(charged())  # of an earlier position on the symbol

        async def settled_twice() -> bool:
            return len(charged()) >= earlier + 2

        assert await eventually(settled_twice)
        result = await stack.close(handle)
    finally:
        stack.sim.harden(funding=False)
    paid = sum(charged()[earlier:], Decimal(0))
    assert result.funding == paid
    assert (paid < 0) if side is Side.LONG else (paid > 0)
    record = await stack.store.get_position(view.position_id)
    assert record is not None and record.funding == paid
    [closed] = [
        e
        for e in await stack.store.events(position_id=view.position_id, limit=100)
        if e.type.value == "position_closed"
    ]
    assert Decimal(closed.payload["funding"]) == paid


@pytest.mark.parametrize("side", list(Side))
async def test_a_liquidation_is_booked_as_one_and_the_stop_cleaned_up(
    stack: Stack, side: Side
) -> None:
    """An isolated 20x position whose stop lies beyond its liquidation price, and the
    price gaps through both: the exchange liquidates it. The workflow books the
    liquidation's own fill (exit price, PnL), ends with reason `liquidation`, records
    `position_liquidated` and a critical alert, and leaves no order behind."""
    symbol = "SOLUSDT"

    def liquidations() -> list[dict[str, Any]]:
        return [
            o
            for o in stack.truth()["orders"]
            if o["symbol"] == symbol and o["source"] == "liquidation"
        ]

    earlier = len(liquidations())  # of an earlier test's position
    stack.sim.set_price(symbol, "150")
    stack.sim.engine.set_margin_type(symbol, "ISOLATED")
    stack.sim.harden(liquidation=True)
    try:
        handle = await stack.open(stack.on(symbol, side, stop_pct="20", emergency_pct="25"))
        view = await stack.wait_state(handle, PositionState.ACTIVE)
        entry = view.snapshot.avg_entry_price
        assert entry is not None
        stack.sim.set_price(symbol, "138" if side is Side.LONG else "162")  # 8 % through
        await handle.signal(
            PositionWorkflow.exchange_update, ExchangeUpdate(detail="ACCOUNT_UPDATE")
        )
        result = await handle.result()
    finally:
        stack.sim.harden(liquidation=False)
        stack.sim.engine.set_margin_type(symbol, "CROSSED")
        stack.sim.set_price(symbol, "150")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.LIQUIDATION
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    liquidated = liquidations()[earlier:]
    assert len(liquidated) == 1
    [fill] = [f for f in stack.sim.engine.fills if str(f.order_id) == str(liquidated[0]["orderId"])]
    sign = 1 if side is Side.LONG else -1
    assert result.exit_price == fill.price
    assert result.realised_pnl == sign * (fill.price - entry) * view.snapshot.qty < 0
    events = await stack.event_types(view.position_id)
    assert events.count("position_liquidated") == 1
    # its stop, EXPIRED by the liquidation, is not taken for a missing stop to replace
    assert "stop_missing_detected" not in events and "sl_placement_started" in events
    assert events.count("sl_placement_started") == 1
    kinds = await stack.store.pool.fetch(
        "SELECT kind FROM orders WHERE position_id = $1 ORDER BY kind", view.position_id
    )
    assert "liquidation" in [r["kind"] for r in kinds]
    alerts = await stack.store.pool.fetch(
        "SELECT severity, title FROM alerts WHERE position_id = $1", view.position_id
    )
    assert ("critical", "position liquidated") in [tuple(a) for a in alerts]


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_the_price_gaps_through_is_booked_at_its_fill_not_its_trigger(
    stack: Stack, side: Side
) -> None:
    """The price jumps 10 % past a 2 % stop and the book is thin (the harsh market's
    depth slippage): the stop fills well beyond its trigger, and that fill is what the
    position books, its exit price and PnL."""
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, "3000")
    handle = await stack.open(stack.on(symbol, side))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    trigger, entry, qty = view.snapshot.stop_price, view.snapshot.avg_entry_price, view.snapshot.qty
    assert trigger is not None and entry is not None
    stack.sim.harden(depth_slippage=True)
    try:
        stack.sim.set_price(symbol, "2700" if side is Side.LONG else "3300")
        await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="gap"))
        result = await handle.result()
    finally:
        stack.sim.harden(depth_slippage=False)
        stack.sim.set_price(symbol, "3000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    [fill] = [f for f in stack.sim.engine.fills if f.symbol == symbol][-1:]
    assert fill.qty == qty
    assert result.exit_price == fill.price
    if side is Side.LONG:  # filled below the gap's price, far below the trigger
        assert fill.price < 2700 < trigger
    else:
        assert fill.price > 3300 > trigger
    sign = 1 if side is Side.LONG else -1
    assert result.realised_pnl == sign * (fill.price - entry) * qty
