"""Harsh market, item 2: a price that gaps through a stop fills the triggered market
order at a worse price from a thin book, and every report of the fill says so."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from simulator.harsh import HarshConfig
from tests.simulator.test_harsh_support import (
    BTC,
    VENUES,
    exchange,
    place_stop,
    pro_client,
    user_stream_ready,
)

DEPTH = HarshConfig(depth_slippage=True)


async def _gap_fill(venue: str, harsh: HarshConfig | None, qty: float) -> Decimal:  # float ok
    """Long ``qty`` at 95000, a mark stop at 90000, the price gaps to 88000: the fill."""
    async with exchange(venue, harsh) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", qty)
        await place_stop(ex, venue, "sell", qty, 90000)
        sim.set_price("BTCUSDT", "88000")
        trades = await ex.fetch_my_trades(BTC)
        assert [t["side"] for t in trades] == ["buy", "sell"]
        return Decimal(trades[-1]["info"]["price" if venue == "binance" else "execPrice"])


@VENUES
async def test_a_gapped_stop_fills_below_the_price_it_gapped_to(venue: str) -> None:
    calm = await _gap_fill(venue, None, 0.5)
    small = await _gap_fill(venue, DEPTH, 0.5)
    big = await _gap_fill(venue, DEPTH, 2)
    assert calm == Decimal("88000")  # the calm market fills at the mark
    # best bid 1 bp under 88000, then 0.44 bps of depth for 44,000 USDT and a tenth
    # of the 222 bps gap past the trigger
    assert small == Decimal("87791.7")
    assert big < small < Decimal("88000") < Decimal("90000")


async def test_a_bigger_gap_costs_more() -> None:
    fills = []
    for gap_to in ("89000", "85000"):
        async with exchange("binance", DEPTH) as (sim, ex):
            await ex.create_order(BTC, "market", "buy", 0.1)
            await place_stop(ex, "binance", "sell", 0.1, 90000)
            sim.set_price("BTCUSDT", gap_to)
            trade = (await ex.fetch_my_trades(BTC))[-1]
            fills.append((Decimal(gap_to) - Decimal(str(trade["price"]))) / Decimal(gap_to))
    assert fills[1] > 3 * fills[0] > 0


async def test_a_plain_market_order_pays_spread_and_depth() -> None:
    async with exchange("binance", DEPTH) as (_, ex):
        small = await ex.create_order(BTC, "market", "buy", 0.01)
        big = await ex.create_order(BTC, "market", "buy", 1)
        assert 95000 < small["average"] < big["average"]


@VENUES
async def test_every_report_of_a_gapped_fill_agrees(venue: str) -> None:
    async with exchange(venue, DEPTH) as (sim, ex):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            await ex.create_order(BTC, "market", "buy", 0.5)
            stop = await place_stop(ex, venue, "sell", 0.5, 90000)
            watcher = asyncio.ensure_future(pro.watch_my_trades(BTC))
            await user_stream_ready(sim, "execution")
            sim.set_price("BTCUSDT", "88000")
            async with asyncio.timeout(5):
                streamed = await watcher
            want = 87791.7
            assert streamed[-1]["price"] == want and streamed[-1]["side"] == "sell"
            rest = (await ex.fetch_my_trades(BTC))[-1]
            assert rest["price"] == want
            if venue == "binance":
                algo = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
                assert algo["status"] == "closed"
                assert algo["info"]["actualPrice"] == "87791.7"
                filled = await ex.fetch_order(algo["info"]["actualOrderId"], BTC)
                assert filled["average"] == want and filled["info"]["stopPrice"] == "90000"
            else:
                done: Any = await ex.fetch_canceled_and_closed_orders(BTC)
                by_id = {o["id"]: o for o in done}
                assert by_id[stop["id"]]["average"] == want
        finally:
            await pro.close()
