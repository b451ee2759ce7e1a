"""A worker SIGKILLed mid-entry on a hedge-mode account, on both venues.

The short of a symbol is open and protected; the long is being opened when the
worker dies between its entry's fill and its stop (Binance: the stop on its way;
Bybit: the entry, with its stop attached, on its way). The worker that replaces it
finds what was sent instead of sending it again: one long entry, one stop on the
long's side, and the short, its stop and its quantity untouched throughout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionState
from domain.types import Side
from simulator.faults import FaultRule
from tests.integration.test_crash import (
    EXCHANGES,
    LATENCY_MS,
    Crash,
    crash_world,
    is_state,
    until,
)

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"


@pytest_asyncio.fixture(loop_scope="session", params=list(EXCHANGES))
async def hedge_crash(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Crash]:
    async with crash_world(
        temporal_env, database_url, store, request.param, hedge_mode=True
    ) as world:
        yield world


def side_orders(crash: Crash, side: Side, *, algo: bool) -> list[dict[str, Any]]:
    key = "algoOrders" if algo else "orders"
    return [
        o
        for o in crash.truth()[key]
        if o["symbol"] == SYMBOL and o.get("positionSide") == side.name
    ]


def side_amt(crash: Crash, side: Side) -> Decimal:
    for p in crash.truth()["positions"]:
        if p["symbol"] == SYMBOL and p.get("positionSide") == side.name:
            return Decimal(p["positionAmt"])
    return Decimal(0)


async def test_kill_mid_entry_of_one_side_places_nothing_twice_and_spares_the_other(
    hedge_crash: Crash,
) -> None:
    crash = hedge_crash
    attached = crash.sim.venue == "bybit"
    first = await crash.start_worker()
    short = await crash.open(SYMBOL, Side.SHORT)
    await until("the short active", is_state(crash, short, PositionState.ACTIVE), crash)
    short_amt = side_amt(crash, Side.SHORT)
    [short_stop] = [
        a for a in side_orders(crash, Side.SHORT, algo=True) if a["algoStatus"] == "NEW"
    ]

    slow: FaultRule = crash.fault("latency", "order" if attached else "stop", latency_ms=LATENCY_MS)
    long = await crash.open(SYMBOL, Side.LONG)

    async def long_entry_in_flight() -> bool:
        filled = [o for o in side_orders(crash, Side.LONG, algo=False) if o["status"] == "FILLED"]
        return (attached or bool(filled)) and slow.hits >= 1

    await until("the long's entry filled and its stop in flight", long_entry_in_flight, crash)
    await first.kill()
    crash.sim.clear_faults()
    await crash.start_worker()
    await until("the long active", is_state(crash, long, PositionState.ACTIVE), crash)

    view = await crash.view(long)
    entries = [o for o in side_orders(crash, Side.LONG, algo=False) if o["type"] == "MARKET"]
    assert len(entries) == 1 and entries[0]["status"] == "FILLED", entries  # one entry ever
    assert side_amt(crash, Side.LONG) == view.snapshot.qty > 0
    long_stops = side_orders(crash, Side.LONG, algo=True)
    assert len(long_stops) == 1, long_stops  # the in-flight stop was found, not sent again
    assert long_stops[0]["algoStatus"] == "NEW" and long_stops[0]["side"] == "SELL"
    # The short: the same quantity, the same one stop, never touched.
    assert side_amt(crash, Side.SHORT) == short_amt < 0
    short_stops = side_orders(crash, Side.SHORT, algo=True)
    assert [(a["algoId"], a["algoStatus"]) for a in short_stops] == [(short_stop["algoId"], "NEW")]
    assert (await crash.view(short)).snapshot.state is PositionState.ACTIVE
