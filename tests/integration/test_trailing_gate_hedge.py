"""Hedge mode through the price gate and the user stream, on both venues.

A long and a short on one symbol, each trailing, each its own workflow: the gate
wakes both on the symbol's ticks, each moves only its own stop (the one that the
move favours), and the fill of one side's stop, reported on the user stream, ends
that side's workflow and leaves the other side held and protected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import CloseReason, PositionState
from domain.types import Side
from tests.integration.test_trailing_gate import RULE, active, gate_running, tick
from tests.workflows.harness import QUICK, Stack, live_stack

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["binance", "bybit"])
async def world(
    request: pytest.FixtureRequest,
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
) -> AsyncIterator[Stack]:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="tgh",
        # No periodic mark pushes: only set_price (and the snapshot on subscribe) tick.
        exchange={"venue": request.param, "hedge_mode": True, "mark_interval_ms": 3_600_000},
        # No periodic look: only the gate and the user stream wake the workflows.
        check_interval=timedelta(minutes=10),
        config={**QUICK, "exchange_call_timeout": timedelta(seconds=10), "exchange_attempts": 3},
        account_options={"hedge_mode": True},
    ) as stack:
        if request.param == "bybit":
            stack.sim.configure(rate_limit_per_s=10_000)
        yield stack


def resting(world: Stack, side: Side) -> list[Decimal]:
    return [Decimal(a["triggerPrice"]) for a in world.side_stops(SYMBOL, side)]


def held(world: Stack, side: Side) -> Decimal:
    return abs(world.side_amt(SYMBOL, side))


async def test_both_sides_trail_apart_and_one_stop_ends_only_its_side(world: Stack) -> None:
    world.sim.set_price(SYMBOL, "60000")
    async with gate_running(world) as src:
        handles: dict[Side, Any] = {
            side: await world.open(world.on(SYMBOL, side, trailing=RULE, hedge_mode=True))
            for side in Side
        }
        first = {side: (await active(world, h)).snapshot.stop_price for side, h in handles.items()}
        for side in Side:
            assert resting(world, side) == [first[side]]
        # A rise in steps: the long's stop follows, the short's stays (2 % above entry).
        for price in ("60300", "60600", "60900"):
            await tick(src, world.sim, SYMBOL, Decimal(price))
        views = {side: await world.view(h) for side, h in handles.items()}
        long_stop = views[Side.LONG].snapshot.stop_price
        assert long_stop is not None and first[Side.LONG] is not None
        assert long_stop > first[Side.LONG]
        assert views[Side.SHORT].snapshot.stop_price == first[Side.SHORT]
        assert resting(world, Side.LONG) == [long_stop]
        assert resting(world, Side.SHORT) == [first[Side.SHORT]]

        # The fall through the long's stop: it fires; the user stream ends the long only.
        await tick(src, world.sim, SYMBOL, long_stop - 100)
        result = await handles[Side.LONG].result()
        assert result.state is PositionState.CLOSED, result
        assert result.reason is CloseReason.STOP_FILLED, result
        assert held(world, Side.LONG) == 0
        short = await world.view(handles[Side.SHORT])
        assert short.snapshot.state is PositionState.ACTIVE
        assert held(world, Side.SHORT) == short.snapshot.qty > 0
        assert resting(world, Side.SHORT) == [short.snapshot.stop_price]
        episodes = [e for e in world.truth()["episodes"] if e["symbol"] == SYMBOL]
        by_side = {e["positionSide"]: e for e in episodes}
        assert not by_side["LONG"]["open"] and by_side["SHORT"]["open"]
        if world.venue == "bybit":  # each entry carried its stop: never unprotected
            assert by_side["LONG"]["unprotectedMs"] == by_side["SHORT"]["unprotectedMs"] == 0
        closed = await world.close(handles[Side.SHORT])
        assert closed.state is PositionState.CLOSED
    assert held(world, Side.SHORT) == 0
    assert [a for a in world.orders(SYMBOL, algo=True) if a["algoStatus"] == "NEW"] == []
