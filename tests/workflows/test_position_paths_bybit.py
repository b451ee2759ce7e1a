"""The position paths of `test_position_paths`, run on Bybit (v5 linear, paper venue).

The same tests, imported; only the exchange differs: this module's `sim` serves
the Bybit venue, so the stack's account is a `bybit` one and every position is
opened, protected, moved and closed through ccxt `bybit`.

On Bybit each entry carries its stop (sent with it, live before it fills), so the
tests of a stop refused or overtaken *after* the fill do not apply here: they run
on Bybit in `test_position_paths_bybit_after_fill` (an account whose stop follows
the fill), and this module checks what happens instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio

from domain.position import CloseReason, PositionState
from domain.sizing import TakeProfitRule
from domain.types import Side
from simulator.server import PaperExchange
from tests.workflows.harness import Stack, bybit_sim, eventually
from tests.workflows.test_position_paths import *  # noqa: F403  (the tests themselves)
from tests.workflows.test_position_paths import entry_count, wait_entry_filled

# The stop is never placed apart from the entry here (see the module's docstring).
del test_stop_rejected_three_times_rolls_back_to_flat  # noqa: F821
del test_rollback_close_fails_then_emergency_stop_protects  # noqa: F821
del test_everything_fails_raises_critical_and_retries_until_recovery  # noqa: F821
del test_stop_that_would_trigger_immediately_closes_at_market  # noqa: F821


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[PaperExchange]:
    async with bybit_sim() as exchange:
        yield exchange


def episode(stack: Stack, symbol: str) -> dict[str, object]:
    return [e for e in stack.sim.ground_truth()["episodes"] if e["symbol"] == symbol][-1]


@pytest.mark.parametrize("side", list(Side))
async def test_a_crash_right_after_the_fill_meets_the_stop_sent_with_the_entry(
    stack: Stack, side: Side
) -> None:
    """Where Binance's stop, still on its way, would find the mark beyond it (closed at
    market, rolled back), Bybit's was live before the fill: it fires, 0 ms unprotected."""
    symbol = "DOGEUSDT"
    stack.sim.set_price(symbol, "0.15")
    before = entry_count(stack, symbol)
    # No user stream here: the periodic look finds the stop's fill.
    handle = await stack.open(stack.on(symbol, side), check_interval=timedelta(seconds=1))
    await wait_entry_filled(stack, symbol, before)
    stack.sim.set_price(symbol, "0.1400" if side is Side.LONG else "0.1600")
    result = await handle.result()
    stack.sim.set_price(symbol, "0.15")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl < 0
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    crossed = episode(stack, symbol)
    assert crossed["unprotectedMs"] == 0 and crossed["maxStops"] == 1


async def test_an_entry_whose_stop_is_refused_is_refused_whole(stack: Stack) -> None:
    """The stop rides on the entry: an exchange that refuses it refuses the entry, and
    nothing is held without a stop, not even for a moment."""
    symbol = "SOLUSDT"
    before = entry_count(stack, symbol)
    stack.sim.add_fault(
        "error", endpoint="POST /v5/order/create", param="stopLoss", code=110094, count=1
    )
    try:
        handle = await stack.open(stack.on(symbol, Side.LONG), exchange_attempts=1)
        result = await handle.result()
    finally:
        stack.sim.clear_faults()
    assert result.state is PositionState.ROLLED_BACK
    assert result.reason is CloseReason.ENTRY_NOT_FILLED
    assert entry_count(stack, symbol) == before and stack.position_amt(symbol) == 0
    assert stack.open_stops(symbol) == [] and result.realised_pnl == Decimal(0)


@pytest.mark.parametrize("side", list(Side))
async def test_an_entry_whose_answer_is_lost_keeps_the_stop_it_came_with(
    stack: Stack, side: Side
) -> None:
    """The entry (with its stop) is executed but its answer comes after the entry
    activity has given up: the workflow finds the entry by its id, and its stop saga
    takes the position's own stop-loss (the one the entry came with) as its stop,
    moved to the fill's level, instead of placing a second one beside it that no event
    would name the first of (found by the Bybit 1000-kill chaos run)."""
    symbol = "XRPUSDT"
    stack.sim.set_price(symbol, "0.6")
    stack.sim.add_fault(
        "delay_response", endpoint="POST /v5/order/create", latency_ms=4000, count=1
    )
    try:
        handle = await stack.open(
            stack.on(symbol, side),
            exchange_attempts=1,
            exchange_call_timeout=timedelta(seconds=2),
            entry_call_timeout=timedelta(seconds=2),
            check_interval=timedelta(hours=6),
        )
        view = await stack.wait_state(handle, PositionState.ACTIVE)
    finally:
        stack.sim.clear_faults()
    stops = stack.open_stops(symbol)
    assert len(stops) == 1, stops
    own = view.snapshot.stop
    assert own is not None and own.position_stop
    assert Decimal(stops[0]["triggerPrice"]) == own.trigger_price == view.snapshot.stop_price

    async def placed() -> list[object]:
        events = await stack.store.events(position_id=view.position_id, limit=500)
        return [e.payload["exchange_order_id"] for e in events if e.type.value == "sl_placed"]

    # the store is written after the workflow moves on: its events come a moment later
    assert await eventually(lambda: _nonempty(placed()))
    assert await placed() == [own.exchange_order_id]
    assert episode(stack, symbol)["maxStops"] == 1
    await stack.close(handle)
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []


@pytest.mark.parametrize("side", list(Side))
async def test_an_entry_whose_answer_is_lost_and_whose_stop_fired_closes_on_that_stop(
    stack: Stack, side: Side
) -> None:
    """The entry's answer is lost and the stop it came with fires before the workflow
    has found the entry: the position is flat when its stop saga starts. That stop is
    the position's own (placed, triggered, with its fill and fee), and the position
    closes on it, not as a close outside posguard (found by the Bybit harsh 1000-kill
    chaos run: `-sl-2` refused reduce-only, booked `external` with no fill or fee).
    No take-profit is tried on the flat position (patch `fired-stop-booked-at-once`)."""
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    before = entry_count(stack, symbol)
    fills_before = len(symbol_fills(stack, symbol))
    stack.sim.add_fault(
        "delay_response", endpoint="POST /v5/order/create", latency_ms=4000, count=1
    )
    try:
        handle = await stack.open(
            stack.on(symbol, side, take_profit=TakeProfitRule(percent=Decimal(3))),
            exchange_attempts=1,
            exchange_call_timeout=timedelta(seconds=2),
            entry_call_timeout=timedelta(seconds=2),
            check_interval=timedelta(seconds=1),
        )
        await wait_entry_filled(stack, symbol, before)
        # through the stop the entry came with, while its answer is still on its way
        stack.sim.set_price(symbol, "560" if side is Side.LONG else "640")
        result = await handle.result()
    finally:
        stack.sim.clear_faults()
        stack.sim.set_price(symbol, "600")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl < 0
    assert stack.position_amt(symbol) == 0 and stack.open_stops(symbol) == []
    view = await stack.view(handle)
    kinds = await stack.event_types(view.position_id)
    assert kinds.count("sl_placed") == 1 and "stop_triggered" in kinds
    assert "sl_placement_failed" not in kinds and "alert_sent" not in kinds
    orders = await stack.store.orders(view.position_id)
    assert [(o.kind, o.status) for o in orders] == [("entry", "filled"), ("stop", "filled")]
    stop = orders[1]
    assert stop.exchange_order_id and stop.filled_quantity == orders[0].filled_quantity
    assert stop.average_price == result.exit_price
    # the books are the exchange's: the entry's fill and the stop's, with their fees
    executed = symbol_fills(stack, symbol)[fills_before:]
    assert len(executed) == 2
    assert result.fees == sum((Decimal(f["commission"]) for f in executed), Decimal(0))
    stored = await stack.store.fills(view.position_id)
    assert sorted((f.quantity, f.fee) for f in stored) == sorted(
        (Decimal(f["qty"]), Decimal(f["commission"])) for f in executed
    )
    crossed = episode(stack, symbol)
    assert crossed["unprotectedMs"] == 0 and crossed["maxStops"] == 1


async def _nonempty(rows: Awaitable[list[object]]) -> bool:
    return bool(await rows)


def symbol_fills(stack: Stack, symbol: str) -> list[dict[str, object]]:
    return [f for f in stack.truth()["fills"] if f["symbol"] == symbol]
