"""Bybit v5 WebSocket streams through ccxt.pro ``bybit`` and a raw aiohttp client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro
import pytest

from simulator.bybit_auth import ws_signature
from simulator.client import bybit_client
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC, ETH
from tests.waiting import PATIENCE_S, until

SL = {"reduceOnly": True, "triggerBy": "MarkPrice"}


async def _subscribed(sim: PaperExchange, topic: str) -> None:
    hub = sim.bybit_hub
    assert hub is not None
    await until(lambda: hub.has_subscribers(topic), f"a subscriber to {topic}")


async def _cache_until(
    watch: Callable[[], Any], cache: Callable[[], Any], done: Callable[[list[Any]], bool]
) -> list[Any]:
    """Watch until ``done(cache)``: ccxt.pro wakes on the first message of a burst only."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while True:
        items = list(cache() or [])
        if done(items) or loop.time() > deadline:
            return items
        try:
            await asyncio.wait_for(watch(), 0.2)
        except TimeoutError:
            pass


async def test_watch_orders_sees_stop_trigger_and_fill(bpro: Any, bsim: PaperExchange) -> None:
    first = asyncio.create_task(bpro.watch_orders(BTC))
    await _subscribed(bsim, "order")
    entry = await bpro.create_order(BTC, "market", "buy", 0.01)
    stop = await bpro.create_order(
        BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 94000}
    )
    await asyncio.wait_for(first, PATIENCE_S)
    bsim.set_price("BTCUSDT", Decimal("93000"))

    def done(orders: list[dict[str, Any]]) -> bool:
        by_id = {o["id"]: o for o in orders}
        s = by_id.get(stop["id"])
        return entry["id"] in by_id and s is not None and s["info"]["orderStatus"] == "Filled"

    orders = await _cache_until(lambda: bpro.watch_orders(BTC), lambda: bpro.orders, done)
    assert done(orders)
    s = next(o for o in orders if o["id"] == stop["id"])
    assert s["status"] == "closed" and s["filled"] == 0.01 and s["triggerPrice"] == 94000.0
    e = next(o for o in orders if o["id"] == entry["id"])
    assert e["status"] == "closed" and e["average"] == 95000.0


async def test_watch_my_trades_and_positions(bpro: Any, bsim: PaperExchange) -> None:
    trades_task = asyncio.create_task(bpro.watch_my_trades(BTC))
    await _subscribed(bsim, "execution")
    snapshot = await asyncio.wait_for(bpro.watch_positions([BTC]), PATIENCE_S)  # REST snapshot
    assert snapshot == []
    positions_task = asyncio.create_task(bpro.watch_positions([BTC]))
    await _subscribed(bsim, "position")
    order = await bpro.create_order(
        BTC, "market", "buy", 0.01, None, {"stopLoss": {"triggerPrice": 90000}}
    )
    trades = await asyncio.wait_for(trades_task, PATIENCE_S)
    assert trades[0]["order"] == order["id"] and trades[0]["amount"] == 0.01
    assert trades[0]["price"] == 95000.0 and trades[0]["fee"]["cost"] == 0.475
    positions = await asyncio.wait_for(positions_task, PATIENCE_S)
    [pos] = positions
    assert pos["symbol"] == BTC and pos["side"] == "long" and pos["contracts"] == 0.01
    assert pos["stopLossPrice"] == 90000.0  # the attached stop is on the very first update


async def test_watch_balance(bpro: Any, bsim: PaperExchange) -> None:
    task = asyncio.create_task(bpro.watch_balance())
    await _subscribed(bsim, "wallet")
    await bpro.create_order(BTC, "market", "buy", 0.01)
    balance = await asyncio.wait_for(task, PATIENCE_S)
    assert balance["USDT"]["total"] == 9999.525


async def test_watch_ticker_snapshot_and_updates(bpro: Any, bsim: PaperExchange) -> None:
    ticker = await asyncio.wait_for(bpro.watch_ticker(BTC), PATIENCE_S)
    assert ticker["symbol"] == BTC and ticker["last"] == 95000.0
    bsim.set_price("BTCUSDT", Decimal("95500"))

    async def moved() -> bool:
        t = await asyncio.wait_for(bpro.watch_ticker(BTC), PATIENCE_S)
        return bool(t["last"] == 95500.0 and t["markPrice"] == 95500.0)

    await until(moved, "the ticker shows 95500")


async def test_bad_ws_signature_is_refused(bsim: PaperExchange) -> None:
    ex = bybit_client(bsim, api_key=bsim.api_key, secret="0" * 64, pro=True, enableRateLimit=False)
    try:
        await ex.load_markets()
        with pytest.raises(ccxtpro.AuthenticationError):
            await asyncio.wait_for(ex.watch_orders(BTC), PATIENCE_S)
    finally:
        await ex.close()


async def test_raw_private_socket_auth_subscribe_ping(bsim: PaperExchange) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{bsim.ws_url}/v5/private") as ws:
        await ws.send_str(json.dumps({"op": "subscribe", "req_id": "1", "args": ["order"]}))
        refused = json.loads((await ws.receive()).data)
        assert refused["success"] is False and refused["op"] == "subscribe"
        expires = bsim.auth_now_ms() + 10_000
        sig = ws_signature(bsim.api_secret, expires)
        await ws.send_str(json.dumps({"op": "auth", "args": [bsim.api_key, expires, sig]}))
        auth = json.loads((await ws.receive()).data)
        assert auth["success"] is True and auth["op"] == "auth"
        await ws.send_str(
            json.dumps({"op": "subscribe", "req_id": "2", "args": ["order", "position"]})
        )
        sub = json.loads((await ws.receive()).data)
        assert sub["success"] is True and sub["req_id"] == "2"
        await ws.send_str(json.dumps({"op": "ping", "req_id": "3"}))
        pong = json.loads((await ws.receive()).data)
        assert pong["op"] == "pong" and pong["req_id"] == "3"
        bsim.open_position("BTCUSDT", "sell", Decimal("0.02"))
        topics: set[str] = set()
        while not {"order", "position"} <= topics:
            msg = json.loads((await asyncio.wait_for(ws.receive(), PATIENCE_S)).data)
            topics.add(msg["topic"])
            assert isinstance(msg["data"], list) and msg["creationTime"] > 0
            if msg["topic"] == "position":
                assert msg["data"][0]["side"] == "Sell" and msg["data"][0]["size"] == "0.02"


async def test_attached_stop_is_streamed_before_the_entry_fill(
    bex: Any, bsim: PaperExchange
) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{bsim.ws_url}/v5/private") as ws:
        expires = bsim.auth_now_ms() + 10_000
        sig = ws_signature(bsim.api_secret, expires)
        await ws.send_str(json.dumps({"op": "auth", "args": [bsim.api_key, expires, sig]}))
        assert json.loads((await ws.receive()).data)["success"] is True
        await ws.send_str(json.dumps({"op": "subscribe", "args": ["order", "execution"]}))
        assert json.loads((await ws.receive()).data)["success"] is True
        await bex.create_order(
            BTC, "market", "buy", 0.01, None, {"stopLoss": {"triggerPrice": 90000}}
        )
        seen: list[tuple[str, str, str]] = []
        while not any(t == "execution" for t, _, _ in seen):
            msg = json.loads((await asyncio.wait_for(ws.receive(), PATIENCE_S)).data)
            for row in msg["data"]:
                seen.append(
                    (msg["topic"], row.get("stopOrderType", ""), row.get("orderStatus", ""))
                )
        assert seen[0] == ("order", "StopLoss", "Untriggered")
        # a rejected entry leaves nothing on the stream
        with pytest.raises(ccxtpro.InsufficientFunds):
            await bex.create_order(
                BTC, "market", "buy", 5, None, {"stopLoss": {"triggerPrice": 90000}}
            )
        await bex.create_order(ETH, "market", "buy", 0.1)
        while True:
            msg = json.loads((await asyncio.wait_for(ws.receive(), PATIENCE_S)).data)
            symbols = {row["symbol"] for row in msg["data"]}
            if "ETHUSDT" in symbols:
                break
            assert msg["data"][0]["orderStatus"] not in ("Deactivated",), msg
