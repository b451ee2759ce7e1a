"""Harsh market, item 3: liquidation (isolated and cross) through ccxt: the price in
the position, the exchange's liquidation order and events, the margin lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from simulator.harsh import HarshConfig
from tests.simulator.test_harsh_support import (
    BTC,
    ETH,
    VENUES,
    exchange,
    place_stop,
    position_size,
    pro_client,
    user_stream_ready,
)

LIQ = HarshConfig(liquidation=True)


async def _liq_price(ex: Any) -> float:  # float ok: ccxt's number
    (pos,) = [p for p in await ex.fetch_positions([BTC]) if p["contracts"]]
    return pos["liquidationPrice"]  # type: ignore[no-any-return]


async def test_calm_market_never_liquidates() -> None:
    async with exchange("binance") as (sim, ex):
        await ex.set_margin_mode("isolated", BTC)
        await ex.create_order(BTC, "market", "buy", 0.1)
        (pos,) = [p for p in await ex.fetch_positions([BTC]) if p["contracts"]]
        assert pos["info"]["liquidationPrice"] == "0"
        sim.set_price("BTCUSDT", "80000")  # 20x long, -15.8%: far past its margin
        assert await position_size(ex) == Decimal("0.1")


async def test_isolated_long_is_liquidated_and_loses_its_margin() -> None:
    async with exchange("binance", LIQ) as (sim, ex):
        await ex.set_margin_mode("isolated", BTC)
        await ex.create_order(BTC, "market", "buy", 0.1)  # 9,500 USDT at 20x: 475 margin
        stop = await place_stop(ex, "binance", "sell", 0.1, 85000)  # too far to help
        # Binance: (margin - qty*entry) / (qty*mmr - qty) = 95000 * 0.95 / 0.996
        assert await _liq_price(ex) == 90612.4
        sim.set_price("BTCUSDT", "90700")
        assert await position_size(ex) == Decimal("0.1")
        sim.set_price("BTCUSDT", "90600")
        assert await position_size(ex) == 0
        (liq,) = await ex.fetch_my_liquidations(BTC)  # GET /fapi/v1/forceOrders
        assert liq["contracts"] == 0.1 and liq["price"] == 90600.0
        assert liq["info"]["clientOrderId"].startswith("autoclose-")
        trade = (await ex.fetch_my_trades(BTC))[-1]
        order = await ex.fetch_order(trade["order"], BTC)
        assert order["clientOrderId"].startswith("autoclose-")
        assert order["status"] == "closed" and order["side"] == "sell"
        # the whole 475 margin is gone (realised loss plus the insurance clearance)
        balance = await ex.fetch_balance()
        assert balance["USDT"]["total"] == 10000 - 4.75 - 475
        expired = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
        assert expired["status"] == "expired"
        (truth,) = sim.ground_truth()["harsh"]["liquidations"]
        assert truth["qty"] == "0.1" and truth["side"] == "SELL" and truth["price"] == "90600"
        incomes = await ex.fapiPrivateGetIncome({"incomeType": "INSURANCE_CLEAR"})
        assert Decimal(incomes[0]["income"]) == Decimal("-35")  # 475 - 440 realised


@VENUES
async def test_cross_position_is_liquidated_when_the_wallet_runs_out(venue: str) -> None:
    async with exchange(venue, LIQ) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 2)  # 190,000 notional on 10,000
        # (wallet 9,905 after the fee - 2*95000) / (2*0.004 - 2)
        assert await _liq_price(ex) == 90409.1
        sim.set_price("BTCUSDT", "90500")
        assert await position_size(ex) == 2
        sim.set_price("BTCUSDT", "90300")
        assert await position_size(ex) == 0
        (liq,) = await ex.fetch_my_liquidations(BTC)
        assert liq["contracts"] == 2.0
        balance = await ex.fetch_balance()
        assert balance["USDT"]["total"] == 0  # the cross margin is lost
        if venue == "bybit":
            assert liq["info"]["execType"] == "BustTrade"
            orders = await ex.fetch_canceled_and_closed_orders(BTC)
            assert [o["info"]["createType"] for o in orders].count("CreateByLiq") == 1


@VENUES
async def test_liquidation_price_moves_with_the_wallet(venue: str) -> None:
    async with exchange(venue, LIQ) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 2)
        before = await _liq_price(ex)
        sim.deposit("5000")  # more cross margin: further away
        after = await _liq_price(ex)
        assert after < before
        sim.set_price("BTCUSDT", str(before - 100))
        assert await position_size(ex) == 2


async def test_liquidation_events_on_the_user_stream() -> None:
    async with exchange("binance", LIQ) as (sim, ex):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            await ex.set_margin_mode("isolated", BTC)
            await ex.create_order(BTC, "market", "buy", 0.1)
            await place_stop(ex, "binance", "sell", 0.1, 85000)
            watcher = asyncio.ensure_future(pro.watch_my_liquidations(BTC))
            await user_stream_ready(sim)
            sim.set_price("BTCUSDT", "90000")
            async with asyncio.timeout(5):
                await watcher  # the liquidation order's NEW event (nothing filled yet)
                while not any(x["contracts"] for x in pro.myLiquidations):
                    await pro.watch_my_liquidations(BTC)
            (liq,) = [x for x in pro.myLiquidations if x["contracts"]]
            assert liq["contracts"] == 0.1 and liq["price"] == 90000.0
            assert liq["info"]["o"] == "LIQUIDATION"
            assert liq["info"]["c"].startswith("autoclose-")
            # the order events: NEW, then the fill as CALCULATED (liquidation execution)
            async with asyncio.timeout(5):
                while True:
                    events = [o["info"] for o in pro.orders if o["info"].get("o") == "LIQUIDATION"]
                    if any(e["X"] == "FILLED" for e in events):
                        break
                    await pro.watch_orders(BTC)
            assert [e["x"] for e in events][-1] == "CALCULATED"
            states = {o["info"].get("X") for o in pro.orders if o["info"].get("caid")}
            assert "EXPIRED" in states  # the stop, expired by the liquidation
        finally:
            await pro.close()


async def test_bybit_position_list_shows_the_liquidation_price() -> None:
    async with exchange("bybit", LIQ) as (sim, ex):
        await ex.create_order(BTC, "market", "sell", 2)
        (pos,) = [p for p in await ex.fetch_positions([BTC]) if p["contracts"]]
        assert pos["side"] == "short"
        # short: (wallet + 2*95000) / (2*0.004 + 2)
        assert pos["liquidationPrice"] == 99554.3
        assert pos["info"]["liqPrice"] == "99554.3"
        sim.set_price("BTCUSDT", "99600")
        assert await position_size(ex) == 0


async def test_cross_liquidation_closes_every_cross_position() -> None:
    async with exchange("binance", LIQ) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 1)  # 95,000
        await ex.create_order(ETH, "market", "buy", 10)  # 35,000
        sim.set_price("ETHUSDT", "3400")  # ETH's loss pulls BTC's liquidation price up
        btc_liq = await _liq_price(ex)
        sim.set_price("BTCUSDT", str(btc_liq + 50))
        assert await position_size(ex) == 1
        sim.set_price("BTCUSDT", str(btc_liq - 50))
        assert [p for p in await ex.fetch_positions() if p["contracts"]] == []
        liquidated = {x["symbol"] for x in await ex.fetch_my_liquidations()}
        assert liquidated == {BTC, ETH}
        assert (await ex.fetch_balance())["USDT"]["total"] == 0


async def test_hedge_mode_isolated_side_is_liquidated_alone() -> None:
    async with exchange("binance", LIQ, hedge_mode=True) as (sim, ex):
        await ex.set_margin_mode("isolated", BTC)
        await ex.create_order(BTC, "market", "buy", 0.1, None, {"positionSide": "LONG"})
        await ex.create_order(BTC, "market", "sell", 0.1, None, {"positionSide": "SHORT"})
        sim.set_price("BTCUSDT", "90600")  # the long's liquidation price is 90612.4
        sides = {p["side"] for p in await ex.fetch_positions([BTC]) if p["contracts"]}
        assert sides == {"short"}
        (liq,) = await ex.fetch_my_liquidations(BTC)
        assert liq["info"]["positionSide"] == "LONG"


async def test_a_gap_past_bankruptcy_takes_no_more_than_the_isolated_margin() -> None:
    async with exchange("binance", LIQ) as (sim, ex):
        await ex.set_margin_mode("isolated", BTC)
        await ex.create_order(BTC, "market", "buy", 0.1)
        sim.set_price("BTCUSDT", "80000")  # one update from 95000: far past 90612.4
        assert await position_size(ex) == 0
        trade = (await ex.fetch_my_trades(BTC))[-1]
        assert trade["price"] == 80000.0  # filled where the market was
        balance = await ex.fetch_balance()
        assert balance["USDT"]["total"] == 10000 - 4.75 - 475  # the insurance fund covers the rest
