"""Harsh market, item 4: funding every 8 hours (on the simulated clock) on open
positions, in the balance, the income/execution history and the user stream."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from simulator.harsh import HOUR_MS, HarshConfig
from simulator.server import PaperExchange
from tests.simulator.test_harsh_support import (
    BTC,
    VENUES,
    exchange,
    pro_client,
    user_stream_ready,
)

FUNDING = HarshConfig(funding=True)
EIGHT_H = 8 * HOUR_MS


def _to_next_funding(sim: PaperExchange, extra: int = 0) -> int:
    """Advance just past the next 00:00/08:00/16:00 UTC; returns that funding time."""
    now = sim.clock.now_ms()
    at = (now // EIGHT_H + 1) * EIGHT_H
    sim.advance(at - now + 1 + extra)
    return at


def _total(balance: dict[str, Any]) -> Decimal:
    return Decimal(str(balance["USDT"]["total"]))


async def test_calm_market_charges_no_funding() -> None:
    async with exchange("binance") as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.1)
        before = _total(await ex.fetch_balance())
        _to_next_funding(sim)
        assert _total(await ex.fetch_balance()) == before
        assert await ex.fetch_funding_history(BTC) == []


@VENUES
async def test_longs_pay_funding_every_eight_hours(venue: str) -> None:
    async with exchange(venue, FUNDING) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.1)  # 9,500 USDT long
        before = _total(await ex.fetch_balance())
        at = _to_next_funding(sim)
        # 0.1 * 95000 * 0.01% = 0.95 USDT per settlement
        assert _total(await ex.fetch_balance()) == before - Decimal("0.95")
        _to_next_funding(sim)
        assert _total(await ex.fetch_balance()) == before - Decimal("1.9")
        history = await ex.fetch_funding_history(BTC)
        assert [h["timestamp"] for h in history][:2] in ([at, at + EIGHT_H], [at + EIGHT_H, at])
        assert {abs(h["amount"]) for h in history} == {0.95}
        if venue == "binance":
            assert {h["amount"] for h in history} == {-0.95}  # income: negative is paid
            assert {h["info"]["incomeType"] for h in history} == {"FUNDING_FEE"}
            rate = await ex.fetch_funding_rate(BTC)
            assert rate["fundingRate"] == 0.0001
            assert rate["fundingTimestamp"] == at + 2 * EIGHT_H
        else:
            assert {h["info"]["execType"] for h in history} == {"Funding"}
            assert {h["amount"] for h in history} == {0.95}  # execFee: positive is paid


async def test_shorts_receive_and_flat_accounts_pay_nothing() -> None:
    async with exchange("binance", FUNDING) as (sim, ex):
        await ex.create_order(BTC, "market", "sell", 0.1)
        before = _total(await ex.fetch_balance())
        _to_next_funding(sim)
        assert _total(await ex.fetch_balance()) == before + Decimal("0.95")
        await ex.create_order(BTC, "market", "buy", 0.1, None, {"reduceOnly": True})
        flat = _total(await ex.fetch_balance())
        _to_next_funding(sim)
        assert _total(await ex.fetch_balance()) == flat


async def test_compressed_funding_interval_and_rate() -> None:
    harsh = HarshConfig(funding=True, funding_interval_ms=60_000, funding_rate=Decimal("-0.001"))
    async with exchange("binance", harsh) as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.1)
        before = _total(await ex.fetch_balance())
        sim.advance(3 * 60_000)  # three settlements; a negative rate pays the long
        assert _total(await ex.fetch_balance()) == before + 3 * Decimal("9.5")


@VENUES
async def test_funding_on_the_user_stream(venue: str) -> None:
    async with exchange(venue, FUNDING) as (sim, ex):
        pro = pro_client(sim)
        try:
            await pro.load_markets()
            await ex.create_order(BTC, "market", "buy", 0.1)
            if venue == "binance":
                watcher = asyncio.ensure_future(pro.watch_balance())
                await user_stream_ready(sim)
                _to_next_funding(sim)
                async with asyncio.timeout(5):
                    balance = await watcher
                update = balance["info"]
                assert update["e"] == "ACCOUNT_UPDATE"
                assert update["a"]["m"] == "FUNDING_FEE"
                assert update["a"]["B"][0]["bc"] == "-0.95"
            else:
                # ccxt.pro drops execType Funding from watch_my_trades unless asked for it
                pro.options["watchMyTrades"]["execType"] = ["Trade", "BustTrade", "Funding"]
                watcher = asyncio.ensure_future(pro.watch_my_trades(BTC))
                await user_stream_ready(sim, "execution")
                _to_next_funding(sim)
                async with asyncio.timeout(5):
                    trades = await watcher
                assert trades[-1]["info"]["execType"] == "Funding"
                assert trades[-1]["info"]["execFee"] == "0.95"
        finally:
            await pro.close()


async def test_funding_switched_on_at_run_time_charges_from_then() -> None:
    async with exchange("binance") as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.1)
        sim.advance(3 * EIGHT_H)  # calm: nothing
        before = _total(await ex.fetch_balance())
        sim.harden(funding=True)
        _to_next_funding(sim)
        assert _total(await ex.fetch_balance()) == before - Decimal("0.95")
