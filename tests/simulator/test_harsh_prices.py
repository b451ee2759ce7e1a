"""Harsh market, item 1: separate last, index and mark prices, stops on their own
price, priceProtect, and the REST/WS endpoints that report the three, through ccxt."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from simulator.harsh import HarshConfig
from tests.simulator.test_harsh_support import (
    BTC,
    VENUES,
    exchange,
    open_stop_ids,
    place_stop,
    position_size,
    pro_client,
)


async def test_calm_market_keeps_one_price() -> None:
    async with exchange("binance") as (sim, ex):
        sim.set_price("BTCUSDT", "94000")
        mark = await ex.fetch_mark_price(BTC)
        assert mark["markPrice"] == mark["indexPrice"] == 94000.0
        assert (await ex.fetch_ticker(BTC))["last"] == 94000.0
        assert "harsh" not in sim.ground_truth()


@VENUES
async def test_last_index_and_mark_part_in_a_fast_move(venue: str) -> None:
    async with exchange(venue, HarshConfig(price_series=True)) as (sim, ex):
        sim.set_price("BTCUSDT", "90000")  # last drops 5.3% in one update
        # the index closes half the gap (92500), the mark is 5 bps above it
        assert sim.engine.index["BTCUSDT"] == Decimal("92500.0")
        assert sim.engine.mark["BTCUSDT"] == Decimal("92546.2")
        ticker = await ex.fetch_ticker(BTC)
        assert ticker["last"] == 90000.0
        if venue == "binance":
            prem = await ex.fetch_mark_price(BTC)  # GET /fapi/v1/premiumIndex
            mark, index = prem["markPrice"], prem["indexPrice"]
        else:
            mark, index = ticker["markPrice"], ticker["indexPrice"]  # /v5/market/tickers
        assert (mark, index) == (92546.2, 92500.0)
        # the same last price again: the index catches up, the basis narrows
        sim.set_price("BTCUSDT", "90000")
        assert sim.engine.index["BTCUSDT"] == Decimal("91250.0")
        truth = sim.ground_truth()["harsh"]["prices"]["BTCUSDT"]
        assert truth == {"last": "90000", "mark": "91295.6", "index": "91250"}


@VENUES
async def test_spread_widens_under_stress(venue: str) -> None:
    async with exchange(venue, HarshConfig(price_series=True)) as (sim, ex):
        sim.set_price("BTCUSDT", "95000")  # no move: the calm spread (2 bps)
        calm = (await ex.fetch_bids_asks([BTC]))[BTC]
        sim.set_price("BTCUSDT", "92000")  # a 3.2% move
        stressed = (await ex.fetch_bids_asks([BTC]))[BTC]
        calm_spread = Decimal(str(calm["ask"])) - Decimal(str(calm["bid"]))
        stressed_spread = Decimal(str(stressed["ask"])) - Decimal(str(stressed["bid"]))
        assert calm_spread <= Decimal("19.1")  # 2 bps of 95000
        assert stressed_spread > 10 * calm_spread
        assert stressed["bid"] < 92000 < stressed["ask"]


@VENUES
async def test_stops_trigger_on_their_own_price(venue: str) -> None:
    async with exchange(venue, HarshConfig(price_series=True)) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.03)
        on_mark = await place_stop(ex, venue, "sell", 0.01, 90000, "mark")
        on_last = await place_stop(ex, venue, "sell", 0.01, 90000, "last")
        kinds = {on_mark["id"]: "mark", on_last["id"]: "last"}
        if venue == "bybit":
            on_index = await place_stop(ex, venue, "sell", 0.01, 90000, "index")
            kinds[on_index["id"]] = "index"
        # last trades through the stop, mark and index hold above it
        sim.set_prices("BTCUSDT", last="89000")
        assert {kinds[i] for i in await open_stop_ids(ex)} == set(kinds.values()) - {"last"}
        assert await position_size(ex) == Decimal("0.02")
        if venue == "bybit":
            sim.set_prices("BTCUSDT", index="89900")
            assert {kinds[i] for i in await open_stop_ids(ex)} == {"mark"}
        sim.set_prices("BTCUSDT", mark="89950")
        assert await open_stop_ids(ex) == set()
        assert await position_size(ex) == (Decimal("0.01") if venue == "binance" else 0)


@VENUES
async def test_a_wick_in_last_fires_last_price_stops_only(venue: str) -> None:
    async with exchange(venue, HarshConfig(price_series=True)) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.02)
        on_mark = await place_stop(ex, venue, "sell", 0.01, 91000, "mark")
        await place_stop(ex, venue, "sell", 0.01, 91000, "last")
        sim.wick("BTCUSDT", "88000")  # last spikes 7.4% down for one update and returns
        assert await open_stop_ids(ex) == {on_mark["id"]}
        assert sim.engine.last["BTCUSDT"] == Decimal("95000.0")
        assert sim.engine.mark["BTCUSDT"] > Decimal("91000")


async def test_price_protect_holds_a_binance_stop_while_mark_and_last_diverge() -> None:
    async with exchange("binance", HarshConfig(price_protect=True)) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.02)
        protected = await place_stop(ex, "binance", "sell", 0.01, 90000, priceProtect=True)
        plain = await place_stop(ex, "binance", "sell", 0.01, 90000)
        assert protected["info"]["priceProtect"] is True
        # mark through the trigger, last 6.6% away from it: beyond triggerProtect (5%)
        sim.set_prices("BTCUSDT", mark="89900", last="84000")
        assert await open_stop_ids(ex) == {protected["id"]}
        held = await ex.fetch_order(protected["id"], BTC, {"trigger": True})
        assert held["status"] == "open"
        # last comes back within 5% of the mark: it triggers now
        sim.set_prices("BTCUSDT", last="88000")
        assert await open_stop_ids(ex) == set()
        done = await ex.fetch_order(protected["id"], BTC, {"trigger": True})
        assert done["status"] == "closed"
        assert await position_size(ex) == 0
        assert (await ex.fetch_order(plain["id"], BTC, {"trigger": True}))["status"] == "closed"


async def test_price_protect_releases_a_stop_when_the_price_comes_back() -> None:
    async with exchange("binance", HarshConfig(price_protect=True)) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.01)
        stop = await place_stop(ex, "binance", "sell", 0.01, 90000, priceProtect=True)
        sim.set_prices("BTCUSDT", mark="89900", last="84000")  # held
        sim.set_prices("BTCUSDT", mark="91000", last="91000")  # back above: waits again
        assert await open_stop_ids(ex) == {stop["id"]}
        sim.set_prices("BTCUSDT", mark="89000", last="89100")  # crosses, in agreement
        assert await open_stop_ids(ex) == set()
        assert await position_size(ex) == 0


async def _wait_for(pred: Any, timeout: float = 3.0) -> None:  # float ok: seconds
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)  # float ok: seconds


@VENUES
async def test_streams_report_mark_index_and_last(venue: str) -> None:
    async with exchange(venue, HarshConfig(price_series=True)) as (sim, _):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            if venue == "binance":
                await pro.watch_mark_price(BTC)  # subscribes; the snapshot arrives
            else:
                await pro.watch_ticker(BTC)
            sim.set_price("BTCUSDT", "93000")
            want = (float(sim.engine.mark["BTCUSDT"]), float(sim.engine.index["BTCUSDT"]))

            async def latest() -> Any:
                while True:
                    t = await (
                        pro.watch_mark_price(BTC) if venue == "binance" else pro.watch_ticker(BTC)
                    )
                    if (t["markPrice"], t["indexPrice"]) == want:
                        return t

            async with asyncio.timeout(5):
                t = await latest()
            assert t["markPrice"] != t["indexPrice"]
            if venue == "bybit":
                assert t["last"] == 93000.0
        finally:
            await pro.close()
