"""Harsh market, item 6: listen keys expire on the simulated clock (with Binance's
``listenKeyExpired`` event) and every stream is cut after ``stream_cut_ms``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.harsh import DAY_MS, HOUR_MS, HarshConfig
from simulator.server import PaperExchange
from tests.simulator.test_harsh_support import (
    BTC,
    VENUES,
    exchange,
    pro_client,
    user_stream_ready,
)

EXPIRY = HarshConfig(listen_key_expiry=True)
CUT = HarshConfig(stream_cut_ms=DAY_MS)


async def _raw_user_stream(sim: PaperExchange, ex: Any) -> tuple[str, aiohttp.ClientSession, Any]:
    key = (await ex.fapiPrivatePostListenKey())["listenKey"]
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{sim.ws_url}/ws/{key}")
    await user_stream_ready(sim)
    return key, session, ws


async def test_listen_key_expires_on_the_simulated_clock() -> None:
    async with exchange("binance", EXPIRY) as (sim, ex):
        key, session, ws = await _raw_user_stream(sim, ex)
        try:
            sim.advance(HOUR_MS + 1)  # an hour without a keepalive
            async with asyncio.timeout(3):
                msg = await ws.receive()
                event = json.loads(msg.data)
                assert event["e"] == "listenKeyExpired" and event["listenKey"] == key
                while not ws.closed:  # then the stream is cut
                    await ws.receive()
        finally:
            await ws.close()
            await session.close()
        with pytest.raises(ccxt.BaseError, match="-1125"):  # the key is gone
            await ex.fapiPrivatePutListenKey({"listenKey": key})
        assert (await ex.fapiPrivatePostListenKey())["listenKey"] != key


async def test_a_keepalive_keeps_the_listen_key() -> None:
    async with exchange("binance", EXPIRY) as (sim, ex):
        key, session, ws = await _raw_user_stream(sim, ex)
        try:
            sim.advance(50 * 60_000)
            await ex.fapiPrivatePutListenKey({"listenKey": key})
            sim.advance(50 * 60_000)
            await asyncio.sleep(0.1)  # float ok: housekeeping runs every 10 ms
            assert not ws.closed and sim.has_listen_key(key)
        finally:
            await ws.close()
            await session.close()


async def test_calm_listen_key_ignores_the_simulated_clock() -> None:
    async with exchange("binance") as (sim, ex):
        key, session, ws = await _raw_user_stream(sim, ex)
        try:
            sim.advance(5 * HOUR_MS)
            await asyncio.sleep(0.1)  # float ok: housekeeping runs every 10 ms
            assert not ws.closed and sim.has_listen_key(key)
        finally:
            await ws.close()
            await session.close()


@VENUES
async def test_user_stream_is_cut_after_a_day_and_ccxt_reconnects(venue: str) -> None:
    async with exchange(venue, CUT) as (sim, ex):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            watcher = asyncio.ensure_future(pro.watch_orders(BTC))
            await user_stream_ready(sim)
            sim.advance(DAY_MS - 1000)
            await asyncio.sleep(0.1)  # float ok: not yet
            assert not watcher.done()
            sim.advance(1000)
            async with asyncio.timeout(5):
                with pytest.raises(ccxt.NetworkError):
                    await watcher
            # the bot watches again: ccxt reconnects and nothing is missed from then on
            again = asyncio.ensure_future(pro.watch_orders(BTC))
            await user_stream_ready(sim)
            order = await ex.create_order(BTC, "market", "buy", 0.01)
            async with asyncio.timeout(5):
                while not any(o["id"] == order["id"] for o in await again):
                    again = asyncio.ensure_future(pro.watch_orders(BTC))
        finally:
            await pro.close()


async def test_market_streams_are_cut_too() -> None:
    async with exchange("binance", CUT) as (sim, _):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            await pro.watch_mark_price(BTC)
            assert len(sim.hub.market_conns) == 1
            sim.advance(DAY_MS)
            async with asyncio.timeout(3):
                while sim.hub.market_conns:
                    await asyncio.sleep(0.02)  # float ok: seconds
            ticker = await pro.watch_mark_price(BTC)  # reconnects
            assert ticker["markPrice"] == 95000.0
        finally:
            await pro.close()


async def test_expired_key_breaks_ccxt_until_it_asks_for_a_new_one() -> None:
    """The trap a bot must handle: ccxt.pro re-uses its cached listen key for 20 minutes,
    so after listenKeyExpired its reconnects are refused until it authenticates again."""
    async with exchange("binance", EXPIRY) as (sim, ex):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            watcher = asyncio.ensure_future(pro.watch_orders(BTC))
            await user_stream_ready(sim)
            sim.advance(HOUR_MS + 1)
            async with asyncio.timeout(5):
                with pytest.raises(ccxt.NetworkError):
                    await watcher
            with pytest.raises(ccxt.NetworkError):
                async with asyncio.timeout(5):
                    await pro.watch_orders(BTC)  # the stale key: refused
            pro.options["linear"]["lastAuthenticatedTime"] = 0  # force a new listen key
            again = asyncio.ensure_future(pro.watch_orders(BTC))
            await user_stream_ready(sim)
            order = await ex.create_order(BTC, "market", "buy", 0.01)
            async with asyncio.timeout(5):
                got = await again
            assert got[-1]["id"] == order["id"]
        finally:
            await pro.close()
