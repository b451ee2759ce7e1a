"""The trailing stop inside the position workflow, against the paper exchange.

Prices reach the workflow as the price gate sends them (the `price` update);
each move must put the new stop on the exchange before the old one goes.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

from activities.exchange.gateway import ExchangeGateway
from domain.position import CloseReason, PositionState
from domain.position_messages import BAND_QUERY
from domain.trailing import TrailingRule, trail_stop
from domain.types import Side
from domain.volatility import Candle, VolatilityCallback, volatility_callback_pct
from simulator.client import venue_client
from tests.waiting import PATIENCE_S
from tests.workflows.harness import Stack, eventually
from workflows.position import PositionWorkflow
from workflows.position_io import BandView, CloseRequest, PriceTick

RULE = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))


async def tick(stack: Stack, handle: object, symbol: str, price: Decimal) -> BandView:
    stack.sim.set_price(symbol, price)
    return await handle.execute_update(  # type: ignore[attr-defined, no-any-return]
        PositionWorkflow.price, PriceTick(price=price, at=datetime.now(UTC))
    )


@pytest.mark.parametrize("side", list(Side))
async def test_stop_trails_new_first_and_closes_on_the_reversal(stack: Stack, side: Side) -> None:
    symbol = "BTCUSDT"
    stack.sim.set_price(symbol, "60000")
    handle = await stack.open(stack.on(symbol, side, trailing=RULE))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry, first_stop = view.snapshot.avg_entry_price, view.snapshot.stop_price
    assert entry is not None and first_stop is not None
    stops = [first_stop]
    for k in range(1, 13):  # +0.25 % a step, 3 % in all, in the position's favour
        price = (entry * (1 + side.sign * Decimal("0.0025") * k)).quantize(Decimal("0.1"))
        band = await tick(stack, handle, symbol, price)
        live = (await stack.view(handle)).snapshot.stop_price
        assert live is not None
        assert side.sign * (live - stops[-1]) >= 0  # never loosens
        stops.append(live)
        # The band brackets the price: the stop below a long, above a short.
        lower, upper = (band.wake_below, band.wake_above)
        if side is Side.LONG:
            assert lower is not None and lower <= live
        else:
            assert upper is not None and upper >= live
    assert side.sign * (stops[-1] - entry) > 0  # profit locked in
    assert len(set(stops)) >= 4  # it moved, more than once
    [live_stop] = stack.open_stops(symbol)  # every old stop was cancelled
    assert Decimal(live_stop["triggerPrice"]) == stops[-1]
    placed = stack.stops_of(view)
    [episode] = [e for e in stack.sim.ground_truth()["episodes"] if e["symbol"] == symbol][-1:]
    if stack.sim.venue == "bybit":
        # Moved in place: one stop order from first to last, never a second beside it.
        assert [a["clientAlgoId"] for a in placed] == [live_stop["clientAlgoId"]]
        assert episode["maxStops"] == 1
    else:
        moves = [a for a in placed if "-mv-" in a["clientAlgoId"]]
        assert len(moves) >= 3
        # New stop first: each move's order exists before the stop it replaced was cancelled.
        by_time = sorted(placed, key=lambda a: a["createTime"])
        for older, newer in itertools.pairwise(by_time):
            assert newer["createTime"] <= older["updateTime"]
        assert episode["maxStops"] == 2
    # The reversal: the trailed stop closes the position in profit.
    await tick(stack, handle, symbol, stops[-1] - side.sign * 50)
    result = await handle.result()
    stack.sim.set_price(symbol, "60000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl > 0
    events = await stack.event_types(view.position_id)
    for expected in ("trailing_created", "trailing_activated", "trailing_stop_moved"):
        assert expected in events
    assert "trailing_removed" in events


async def test_trailing_parameters_change_at_run_time_never_loosen(stack: Stack) -> None:
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, "3000")
    handle = await stack.open(stack.on(symbol, Side.LONG, trailing=RULE))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    await tick(stack, handle, symbol, entry * Decimal("1.03"))
    tight = (await stack.view(handle)).snapshot.stop_price
    assert tight is not None
    looser = TrailingRule(callback_pct=Decimal(5), activation_pct=Decimal("0.5"))
    previous = await handle.execute_update(PositionWorkflow.set_trailing, looser)
    assert previous == RULE
    await tick(stack, handle, symbol, entry * Decimal("1.031"))
    assert (await stack.view(handle)).snapshot.stop_price == tight  # the live stop stays

    # Store writes follow the workflow: wait for the event rather than read it at once.
    async def recorded() -> bool:
        return "trailing_params_changed" in await stack.event_types(view.position_id)

    assert await eventually(recorded)
    await stack.close(handle)
    assert stack.position_amt(symbol) == 0


async def _klines(stack: Stack, symbol: str, interval: str, limit: int) -> list[Candle]:
    """The exchange's candles, as posguard reads them (the stack's venue)."""
    sim = stack.sim
    client = venue_client(sim.venue, sim, api_key=sim.api_key, secret=sim.api_secret)
    gateway = ExchangeGateway(client, account="candles")
    try:
        return await gateway.candles(symbol, interval, limit)
    finally:
        await gateway.close()


@pytest.mark.parametrize("side", list(Side))
async def test_callback_follows_volatility(stack: Stack, side: Side) -> None:
    """Daily candles ranging 8 around 200, then today's: callback = 0.5 x ATR %."""
    symbol = "SOLUSDT"  # tick 0.01; no other test here trades it
    day = 86_400_000
    now = stack.sim.clock.now_ms()
    today = now - now % day
    history: list[tuple[int, Decimal | str]] = []
    for back in range(6, 0, -1):  # six whole days before today: high 204, low 196
        start = today - back * day
        history += [(start + 1_000, "200"), (start + 3_600_000, "204")]
        history += [(start + 7_200_000, "196"), (start + 10_800_000, "200")]
    stack.sim.load_history(symbol, history)
    stack.sim.set_price(symbol, "200")
    vol = VolatilityCallback(
        multiple=Decimal("0.5"),
        min_pct=Decimal("0.5"),
        max_pct=Decimal(50),  # never clamped here: other tests move SOLUSDT today too
        timeframe="1d",
        period=3,
    )
    rule = TrailingRule(callback_pct=Decimal(1), volatility=vol)
    handle = await stack.open(stack.on(symbol, side, trailing=rule))
    view = await stack.wait_for(handle, lambda v: v.measured_callback_pct is not None)
    measured = view.measured_callback_pct
    # What a trader computes from the same candles (a day does not turn in this test).
    expected = volatility_callback_pct(vol, await _klines(stack, symbol, "1d", 5))
    assert measured is not None and measured == expected
    assert measured != rule.callback_pct and vol.min_pct < measured < vol.max_pct
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    price = (entry * (1 + side.sign * Decimal("0.05"))).quantize(Decimal("0.01"))
    await tick(stack, handle, symbol, price)
    live = (await stack.view(handle)).snapshot.stop_price
    assert live == trail_stop(side, price, rule.params(Decimal("0.01"), measured))
    [stop] = stack.open_stops(symbol)
    assert Decimal(stop["triggerPrice"]) == live
    events = await stack.store.events(position_id=view.position_id, limit=5000)
    changes = [e.payload["new"] for e in events if e.type.value == "trailing_params_changed"]
    assert {"callback_pct": str(measured), "source": "volatility"}.items() <= changes[0].items()
    await stack.close(handle)
    stack.sim.set_price(symbol, "200")


@pytest.mark.parametrize("side", list(Side))
async def test_a_close_meeting_a_stop_move_never_hangs(stack: Stack, side: Side) -> None:
    """A crossing and a close arrive together: the close wins, the price update still
    answers, and the workflow ends (a pending move once kept its update, and so the
    workflow, waiting forever)."""
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    handle = await stack.open(stack.on(symbol, side, trailing=RULE))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    price = (entry * (1 + side.sign * Decimal("0.03"))).quantize(Decimal("0.01"))
    stack.sim.set_price(symbol, price)
    crossing = handle.execute_update(
        PositionWorkflow.price, PriceTick(price=price, at=datetime.now(UTC))
    )
    closing = handle.execute_update(PositionWorkflow.close, CloseRequest())
    band, closed = await asyncio.wait_for(asyncio.gather(crossing, closing), PATIENCE_S)
    assert closed.state is PositionState.CLOSED
    assert isinstance(band, BandView)
    result = await asyncio.wait_for(handle.result(), PATIENCE_S)
    assert result.state is PositionState.CLOSED
    assert stack.open_stops(symbol) == [] and stack.position_amt(symbol) == 0
    stack.sim.set_price(symbol, "600")


async def test_the_web_ui_opens_the_state_query_first(stack: Stack) -> None:
    """The Web UI lists a run's queries by name and opens the first: `state`, then the
    gate's `wake_band` (not `band`, which sorted first)."""
    handle = await stack.open(stack.on("SOLUSDT", Side.LONG, trailing=RULE))
    await stack.wait_state(handle, PositionState.ACTIVE)
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    names = [q.name for q in meta.definition.query_definitions]
    user = [n for n in names if not n.startswith("__")]  # the SDK's own come first
    assert user[0] == "state" and BAND_QUERY in user, user
    await stack.close(handle)
