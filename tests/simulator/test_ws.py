"""WebSocket streams through ccxt.pro and raw aiohttp clients."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp

from simulator.server import PaperExchange
from tests.simulator.conftest import BTC, ETH
from tests.waiting import PATIENCE_S, until

T = PATIENCE_S  # float ok: seconds, a safety net for a stream message


async def _orders_until(pro: Any, done: Any) -> list[dict[str, Any]]:
    """Wait until ``done(cached orders)`` holds (or patience runs out).

    ccxt.pro resolves a watch on the first message of a burst; the rest land
    in its cache (``pro.orders``) without waking anyone, so the cache, not the
    returned batch, is the complete picture.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while True:
        cached = list(pro.orders) if pro.orders is not None else []
        if done(cached) or loop.time() > deadline:
            return cached
        try:
            await asyncio.wait_for(pro.watch_orders(BTC), 0.2)
        except TimeoutError:
            pass


async def _user_stream_open(sim: PaperExchange) -> None:
    """The user-data socket is connected (ccxt.pro got a listenKey and opened it)."""
    await until(lambda: bool(sim.hub.user_conns), "the user-data stream connected")


async def test_stop_trigger_is_seen_on_user_stream(pro: Any, sim: PaperExchange) -> None:
    first = asyncio.create_task(pro.watch_orders(BTC))
    await _user_stream_open(sim)
    await pro.create_order(BTC, "market", "buy", 0.01)
    params = {
        "stopLossPrice": 94000,
        "reduceOnly": True,
        "workingType": "MARK_PRICE",
        "clientOrderId": "ws-sl",
    }
    stop = await pro.create_order(BTC, "market", "sell", 0.01, None, params)
    await asyncio.wait_for(first, T)
    sim.set_price("BTCUSDT", Decimal("93000"))

    def done(orders: list[dict[str, Any]]) -> bool:
        algo_done = any(o["id"] == stop["id"] and o["info"]["X"] == "FINISHED" for o in orders)
        fill = any(
            o["info"].get("ot") == "STOP_MARKET" and o["info"].get("X") == "FILLED" for o in orders
        )
        return algo_done and fill

    seen = await _orders_until(pro, done)
    assert done(seen)
    algo = next(o for o in seen if o["id"] == stop["id"])
    assert algo["clientOrderId"] == "ws-sl" and algo["info"]["X"] == "FINISHED"
    fill = next(o for o in seen if o["info"].get("ot") == "STOP_MARKET")
    assert fill["info"]["i"] == int(algo["info"]["ai"])
    assert fill["reduceOnly"] is True and fill["filled"] == 0.01


async def test_watch_mark_price_and_prices(pro: Any, sim: PaperExchange) -> None:
    ticker = await asyncio.wait_for(pro.watch_mark_price(BTC), T)
    assert ticker["markPrice"] == 95000.0
    sim.set_price("BTCUSDT", Decimal("95100"))
    for _ in range(20):
        ticker = await asyncio.wait_for(pro.watch_mark_price(BTC), T)
        if ticker["markPrice"] == 95100.0:
            break
    assert ticker["markPrice"] == 95100.0
    tickers = await asyncio.wait_for(pro.watch_mark_prices(), T)
    assert ETH in tickers


async def test_watch_positions_and_my_trades(pro: Any, sim: PaperExchange) -> None:
    positions_task = asyncio.create_task(pro.watch_positions([ETH]))
    trades_task = asyncio.create_task(pro.watch_my_trades(ETH))
    await _user_stream_open(sim)
    await pro.create_order(ETH, "market", "buy", 0.05)
    positions = await asyncio.wait_for(positions_task, T)
    for _ in range(5):
        if positions and positions[-1]["contracts"]:
            break
        positions = await asyncio.wait_for(pro.watch_positions([ETH]), T)
    assert positions[-1]["side"] == "long" and positions[-1]["contracts"] == 0.05
    trades = await asyncio.wait_for(trades_task, T)
    assert trades[-1]["amount"] == 0.05 and trades[-1]["price"] == 3500.0


async def test_user_stream_survives_a_dropped_connection(pro: Any, sim: PaperExchange) -> None:
    first = asyncio.create_task(pro.watch_orders(BTC))
    await _user_stream_open(sim)
    await pro.create_order(BTC, "market", "buy", 0.01)
    await asyncio.wait_for(first, T)
    assert sim.drop_websockets("user") == 1
    await until(lambda: not sim.hub.user_conns, "the user-data stream dropped")
    # ccxt.pro rejects the pending future on disconnect; the next watch reconnects
    for _ in range(3):
        task = asyncio.create_task(pro.watch_orders(BTC))
        await until(lambda t=task: bool(sim.hub.user_conns) or t.done(), "a reconnect or its error")
        await pro.create_order(BTC, "market", "buy", 0.01)
        try:
            orders = await asyncio.wait_for(task, T)
            break
        except Exception:
            continue
    assert orders and orders[-1]["symbol"] == BTC


async def test_raw_streams_combined_and_subscribe(sim: PaperExchange) -> None:
    async with aiohttp.ClientSession() as s:
        url = sim.ws_url + "/stream?streams=btcusdt@markPrice@1s/ethusdt@bookTicker"
        async with s.ws_connect(url) as ws:
            got = {}
            while len(got) < 2:
                msg = json.loads((await asyncio.wait_for(ws.receive(), T)).data)
                got[msg["stream"]] = msg["data"]
            assert got["btcusdt@markprice@1s"]["e"] == "markPriceUpdate"
            assert got["ethusdt@bookticker"]["b"] == "3499.99"
        async with s.ws_connect(sim.ws_url + "/public/ws/1") as ws:
            await ws.send_str(
                json.dumps({"method": "SUBSCRIBE", "params": ["solusdt@aggTrade"], "id": 7})
            )
            assert json.loads((await ws.receive()).data) == {"result": None, "id": 7}
            sim.open_position("SOLUSDT", "buy", Decimal("1"))
            trade = json.loads((await asyncio.wait_for(ws.receive(), T)).data)
            assert trade["e"] == "aggTrade" and trade["p"] == "200" and trade["q"] == "1"
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            assert json.loads((await ws.receive()).data) == {
                "result": ["solusdt@aggtrade"],
                "id": 8,
            }
        async with s.ws_connect(sim.ws_url + "/ws/!markPrice@arr@1s") as ws:
            arr = json.loads((await asyncio.wait_for(ws.receive(), T)).data)
            assert {m["s"] for m in arr} >= {"BTCUSDT", "DOGEUSDT"}


async def test_raw_user_stream_at_ws_listen_key(sim: PaperExchange) -> None:
    key = sim.new_listen_key()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{sim.ws_url}/ws/{key}") as ws:
        sim.open_position("BTCUSDT", "buy", Decimal("0.01"))
        events = [json.loads((await asyncio.wait_for(ws.receive(), T)).data) for _ in range(3)]
        assert [e["e"] for e in events] == [
            "ORDER_TRADE_UPDATE",
            "ORDER_TRADE_UPDATE",
            "ACCOUNT_UPDATE",
        ]
        assert events[1]["o"]["X"] == "FILLED"
        assert events[2]["a"]["P"][0] == {
            "s": "BTCUSDT",
            "pa": "0.01",
            "ep": "95000",
            "bep": "95000",
            "cr": "0",
            "up": "0",
            "mt": "cross",
            "iw": "0",
            "ps": "BOTH",
        }
