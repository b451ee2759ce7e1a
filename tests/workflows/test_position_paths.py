"""One test per path of a position's life, on the real Temporal dev server.

Each asserts what a trader would check: the orders on the exchange (the paper
exchange's ground truth), the final position, the recorded events, the result.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

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
    handle = await stack.open(stack.on(symbol, side), exchange_attempts=1)
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
    # The exchange works again: the next look puts the real stop back.
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="test"))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE
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


async def test_position_closed_outside_posguard_is_recorded_and_its_stop_cancelled(
    stack: Stack,
) -> None:
    symbol = "XRPUSDT"
    handle = await stack.open(stack.on(symbol, Side.LONG))
    await stack.wait_state(handle, PositionState.ACTIVE)
    stack.sim.close_position(symbol)  # a person closes it in the exchange UI
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="ACCOUNT_UPDATE"))
    result = await handle.result()
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.EXTERNAL
    assert stack.open_stops(symbol) == []


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
