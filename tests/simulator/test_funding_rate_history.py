"""Harsh market, funding: the market's funding-rate history (Binance
``GET /fapi/v1/fundingRate``, Bybit ``GET /v5/market/funding/history``) through
ccxt's ``fetch_funding_rate_history``, and Bybit's Funding executions of a
hedge-mode account."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

from simulator.harsh import HarshConfig
from simulator.server import PaperExchange
from tests.simulator.test_harsh_support import BTC, VENUES, exchange

INTERVAL_MS = 1000


def _settle(sim: PaperExchange, *rates: str) -> None:
    """One settlement (or a few, as real time also passes) at each of `rates`."""
    for rate in rates:
        sim.harden(funding=True, funding_interval_ms=INTERVAL_MS, funding_rate=rate)
        sim.advance(INTERVAL_MS)


@VENUES
async def test_the_calm_market_has_no_funding_history(venue: str) -> None:
    async with exchange(venue) as (sim, ex):
        sim.advance(3 * 8 * 3_600_000)
        assert await ex.fetch_funding_rate_history(BTC) == []


@VENUES
async def test_every_settlement_is_listed_with_its_rate(venue: str) -> None:
    """Settlements are the market's, listed whether or not the account held anything."""
    async with exchange(venue, HarshConfig(funding=True, funding_interval_ms=INTERVAL_MS)) as (
        sim,
        ex,
    ):
        since = sim.clock.now_ms()
        _settle(sim, "0.0003", "-0.00025", "0")
        rows = await ex.fetch_funding_rate_history(BTC, since, None, {"until": sim.clock.now_ms()})
        truth = [s for s in sim.engine.settlements if s.time >= since]
        assert len(truth) >= 3
        assert [r["timestamp"] for r in rows] == [s.time for s in truth]  # ccxt: oldest first
        assert [Decimal(r["info"]["fundingRate"]) for r in rows] == [s.rate for s in truth]
        assert {r["symbol"] for r in rows} == {BTC}
        if venue == "binance":
            marks = [Decimal(r["info"]["markPrice"]) for r in rows]
            assert marks == [s.marks["BTCUSDT"] for s in truth]
            assert rows[0]["info"]["fundingRate"] in ("0.00030000", "-0.00025000", "0.00000000")
        else:
            assert set(rows[0]["info"]) == {"symbol", "fundingRate", "fundingRateTimestamp"}


async def test_binance_pages_from_the_start_time_else_from_the_end() -> None:
    async with exchange("binance") as (sim, ex):
        _settle(sim, *["0.0001"] * 5)
        times = [s.time for s in sim.engine.settlements]
        first = await ex.fapiPublicGetFundingRate(
            {"symbol": "BTCUSDT", "startTime": times[1], "limit": 2}
        )
        assert [r["fundingTime"] for r in first] == times[1:3]
        last = await ex.fapiPublicGetFundingRate({"symbol": "BTCUSDT", "limit": 2})
        assert [r["fundingTime"] for r in last] == times[-2:]
        every_symbol = await ex.fapiPublicGetFundingRate({"startTime": times[0], "limit": 1000})
        assert len(every_symbol) == len(times) * len(sim.engine.markets)


async def test_bybit_pages_newest_first_and_wants_an_end_with_a_start() -> None:
    async with exchange("bybit") as (sim, ex):
        _settle(sim, *["0.0001"] * 5)
        times = [s.time for s in sim.engine.settlements]
        page = await ex.publicGetV5MarketFundingHistory(
            {"category": "linear", "symbol": "BTCUSDT", "endTime": times[-2], "limit": 2}
        )
        listed = [int(r["fundingRateTimestamp"]) for r in page["result"]["list"]]
        assert listed == [times[-2], times[-3]]
        with pytest.raises(ccxt.BadRequest):
            await ex.publicGetV5MarketFundingHistory(
                {"category": "linear", "symbol": "BTCUSDT", "startTime": times[0]}
            )


@pytest.mark.parametrize("rate", ["0.0005", "-0.0005"])
async def test_bybit_hedge_funding_executions_look_like_bybit_s(rate: str) -> None:
    """A long and a short each get their own Funding execution at a settlement:
    `side` the position's direction, `execFee` positive when paid, `feeRate` signed
    like `execFee` (not the market's rate, which is the funding history's)."""
    async with exchange("bybit", hedge_mode=True) as (sim, ex):
        sim.open_position("BTCUSDT", "buy", "0.1")
        sim.open_position("BTCUSDT", "sell", "0.3")
        _settle(sim, rate)
        rows = await ex.fetch_funding_history(BTC)
        sides = {r["info"]["side"] for r in rows}
        assert sides == {"Buy", "Sell"}
        for row in rows:
            info = row["info"]
            fee, fee_rate = Decimal(info["execFee"]), Decimal(info["feeRate"])
            assert fee != 0 and (fee > 0) == (fee_rate > 0)
            assert abs(fee_rate) == abs(Decimal(rate))
            long = info["side"] == "Buy"
            assert Decimal(info["execQty"]) == Decimal("0.1" if long else "0.3")
            # a positive rate: the long pays and the short receives
            assert (fee > 0) == (long == (Decimal(rate) > 0))
        [market] = await ex.fetch_funding_rate_history(
            BTC, rows[0]["timestamp"], None, {"until": rows[0]["timestamp"]}
        )
        assert Decimal(market["info"]["fundingRate"]) == Decimal(rate)
