"""Ambiguous outcomes: the order is accepted but the client never sees the response."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt.async_support as ccxt
import pytest

from simulator.client import binanceusdm_client
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC


async def test_dropped_response_then_lookup_by_client_id(ex: Any, sim: PaperExchange) -> None:
    sim.add_fault("drop_response", endpoint="POST /fapi/v1/order", count=1)
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "amb-1"})
    found = await ex.fetch_order(None, BTC, {"clientOrderId": "amb-1"})
    assert found["status"] == "closed" and found["filled"] == 0.01
    positions = await ex.fetch_positions([BTC])
    assert positions[0]["contracts"] == 0.01
    # the rule was single-shot: the next order goes through normally
    await ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})


async def test_dropped_algo_response_then_lookup_by_client_algo_id(
    ex: Any, sim: PaperExchange
) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    sim.add_fault("drop_response", endpoint="POST /fapi/v1/algoOrder", count=1)
    params = {"stopLossPrice": 90000, "reduceOnly": True, "clientOrderId": "amb-sl"}
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order(BTC, "market", "sell", 0.01, None, params)
    found = await ex.fetch_order(None, BTC, {"trigger": True, "clientOrderId": "amb-sl"})
    assert found["status"] == "open"
    # a blind retry with the same id is refused while the first one is open
    with pytest.raises(ccxt.BadRequest, match="-20132"):
        await ex.create_order(BTC, "market", "sell", 0.01, None, params)


async def test_response_delayed_past_client_timeout(sim: PaperExchange) -> None:
    client = binanceusdm_client(
        sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False, timeout=300
    )
    await client.load_markets()
    try:
        sim.add_fault("delay_response", endpoint="POST /fapi/v1/order", latency_ms=800, count=1)
        with pytest.raises(ccxt.RequestTimeout):
            await client.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "slow"})
        found = await client.fetch_order(None, BTC, {"clientOrderId": "slow"})
        assert found["status"] == "closed"
        await asyncio.sleep(0.6)  # let the server finish the delayed reply before shutdown
    finally:
        await client.close()


async def test_new_then_filled_moments_later(ex: Any, sim: PaperExchange) -> None:
    sim.configure(market_fill_delay_ms=150)
    order = await ex.create_order(BTC, "market", "buy", 0.01)
    assert order["status"] == "open" and order["filled"] == 0.0
    await asyncio.sleep(0.3)
    assert (await ex.fetch_order(order["id"], BTC))["status"] == "closed"


async def test_latency_and_symbol_scoped_errors(ex: Any, sim: PaperExchange) -> None:
    sim.add_fault(
        "error",
        endpoint="POST /fapi/v1/order",
        symbol="ETHUSDT",
        code=-1001,
        msg="Internal error; unable to process your request. Please try again.",
    )
    sim.add_fault("latency", endpoint="GET /fapi/v1/ticker/24hr", latency_ms=200, count=1)
    await ex.create_order(BTC, "market", "buy", 0.01)  # other symbols unaffected
    with pytest.raises(ccxt.OperationFailed):
        await ex.create_order("ETH/USDT:USDT", "market", "buy", 0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await ex.fetch_ticker(BTC)
    assert loop.time() - t0 >= 0.2
    sim.clear_faults()
    await ex.create_order("ETH/USDT:USDT", "market", "buy", 0.01)
