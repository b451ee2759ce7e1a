"""Harsh market, item 5: Binance conditional orders pass through TRIGGERING before
they fill, and close-position stops of a closed position become EXPIRED."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.harsh import HarshConfig
from simulator.server import PaperExchange
from tests.simulator.test_harsh_support import BTC, exchange, open_stop_ids, place_stop

LIFECYCLE = HarshConfig(algo_lifecycle=True)
SLOW = HarshConfig(algo_lifecycle=True, triggering_ms=60_000)  # a minute of sim time


async def _user_events(sim: PaperExchange, ex: Any) -> tuple[aiohttp.ClientSession, Any]:
    """A raw user-data stream (as Binance serves it) to read every event in order."""
    key = (await ex.fapiPrivatePostListenKey())["listenKey"]
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{sim.ws_url}/ws/{key}")
    return session, ws


async def _drain(ws: Any, until: str, timeout: float = 3.0) -> list[dict[str, Any]]:  # float ok
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads((await ws.receive()).data)
            out.append(msg)
            if msg.get("e") == "ALGO_UPDATE" and msg["o"]["X"] == until:
                return out


async def test_a_stop_goes_new_triggering_triggered_finished() -> None:
    async with exchange("binance", LIFECYCLE) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        session, ws = await _user_events(sim, ex)
        try:
            stop = await place_stop(ex, "binance", "sell", 0.01, 90000)
            sim.set_price("BTCUSDT", "89000")
            events = await _drain(ws, "FINISHED")
        finally:
            await ws.close()
            await session.close()
        algo = [e["o"]["X"] for e in events if e["e"] == "ALGO_UPDATE"]
        assert algo == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
        fill = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
        assert [(o["x"], o["ot"]) for o in fill] == [
            ("NEW", "STOP_MARKET"),
            ("TRADE", "STOP_MARKET"),
        ]
        done = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
        assert done["status"] == "closed" and done["info"]["algoStatus"] == "FINISHED"


async def test_calm_market_skips_triggering() -> None:
    async with exchange("binance") as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        session, ws = await _user_events(sim, ex)
        try:
            await place_stop(ex, "binance", "sell", 0.01, 90000)
            sim.set_price("BTCUSDT", "89000")
            events = await _drain(ws, "FINISHED")
        finally:
            await ws.close()
            await session.close()
        algo = [e["o"]["X"] for e in events if e["e"] == "ALGO_UPDATE"]
        assert algo == ["NEW", "TRIGGERED", "FINISHED"]


async def test_a_stop_can_hang_in_triggering() -> None:
    async with exchange("binance", SLOW) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        stop = await place_stop(ex, "binance", "sell", 0.01, 90000)
        sim.set_price("BTCUSDT", "89000")
        hanging = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
        assert hanging["status"] == "open"  # ccxt maps TRIGGERING to open
        assert hanging["info"]["algoStatus"] == "TRIGGERING"
        assert await open_stop_ids(ex) == set()  # no longer an open algo order
        positions = [p for p in await ex.fetch_positions([BTC]) if p["contracts"]]
        assert positions and positions[0]["contracts"] == 0.01  # not closed yet
        with pytest.raises(ccxt.OrderNotFound):  # -2011: too late to cancel
            await ex.cancel_order(stop["id"], BTC, {"trigger": True})
        sim.advance(60_000)
        done = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
        assert done["status"] == "closed" and done["info"]["algoStatus"] == "FINISHED"
        assert [p for p in await ex.fetch_positions([BTC]) if p["contracts"]] == []


@pytest.mark.parametrize(("harsh", "status"), [(None, "canceled"), (LIFECYCLE, "expired")])
async def test_close_position_stop_of_a_closed_position(
    harsh: HarshConfig | None, status: str
) -> None:
    async with exchange("binance", harsh) as (_, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        stop = await ex.create_order(
            BTC,
            "market",
            "sell",
            None,
            None,
            {"triggerPrice": 90000, "closePosition": True, "workingType": "MARK_PRICE"},
        )
        await ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
        done = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
        assert done["status"] == status
        assert done["info"]["algoStatus"] == status.upper()


async def test_bybit_reports_triggering_as_triggered() -> None:
    async with exchange("bybit", SLOW) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        stop = await place_stop(ex, "bybit", "sell", 0.01, 90000)
        sim.set_price("BTCUSDT", "89000")
        (pending,) = await ex.fetch_open_orders(BTC)
        assert pending["id"] == stop["id"]
        assert pending["info"]["orderStatus"] == "Triggered" and pending["status"] == "open"
        sim.advance(60_000)
        assert await ex.fetch_open_orders(BTC) == []
        closed = {o["id"]: o for o in await ex.fetch_canceled_and_closed_orders(BTC)}
        assert closed[stop["id"]]["info"]["orderStatus"] == "Filled"
