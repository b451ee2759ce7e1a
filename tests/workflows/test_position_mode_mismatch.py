"""An account whose settings name the other position mode than the exchange holds.

The mode is read from the exchange before the first order of each symbol; a mismatch
refuses the entry before anything is sent, names both modes, and rolls back.
Binance: the exchange in hedge mode, the account one-way; Bybit: the reverse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from domain.position import PositionState
from domain.types import Side
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, Stack

# venue -> (the exchange holds hedge mode, the account's settings say hedge mode)
MODES = {"binance": (True, False), "bybit": (False, True)}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=list(MODES))
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[PaperExchange]:
    hedged, _ = MODES[request.param]
    async with PaperExchange(
        venue=request.param, hedge_mode=hedged, mark_interval_ms=200, admin_port=None
    ) as exchange:
        for symbol, price in PRICES.items():
            exchange.set_price(symbol, price)
        yield exchange


@pytest.fixture(scope="module")
def account_options(sim: PaperExchange) -> dict[str, Any]:
    return {"hedge_mode": MODES[sim.venue][1]}


@pytest.mark.parametrize("side", list(Side))
async def test_the_entry_is_refused_unsent_and_rolled_back(stack: Stack, side: Side) -> None:
    symbol = "BTCUSDT"
    hedged = stack.settings.accounts[0].hedge_mode
    handle = await stack.open(stack.on(symbol, side, hedge_mode=hedged))
    result = await handle.result()
    assert result.state is PositionState.ROLLED_BACK
    rows = await stack.store.pool.fetch(
        """SELECT e.payload->>'error_type' AS error_type, e.payload->>'message' AS message
           FROM events e JOIN positions p ON p.id = e.position_id
           WHERE p.workflow_id = $1 AND p.side = $2 AND e.type = 'entry_order_failed'""",
        handle.id,
        side.value,
    )
    [failure] = [dict(r) for r in rows]
    on_exchange, settings = ("one-way", "hedge") if hedged else ("hedge", "one-way")
    assert failure["error_type"] == "PositionModeMismatch"
    assert (
        f"holds {symbol} in {on_exchange} mode on {stack.settings.accounts[0].exchange}, "
        f"but its settings say {settings}" in failure["message"]
    ), failure
    truth = stack.truth()
    assert truth["orders"] == [] and truth["algoOrders"] == []  # nothing was sent
