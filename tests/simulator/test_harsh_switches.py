"""Harsh market switches: the config, the "harsh" preset, the admin API routes, the
command-line flags and the "wicks" price path."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from simulator.__main__ import _parser, harsh_from_args
from simulator.harsh import DAY_MS, HarshConfig, harsh_preset
from simulator.markets import build_markets
from simulator.prices import SyntheticPath
from simulator.server import PaperExchange
from tests.simulator.test_harsh_support import BTC, VENUES, exchange, place_stop, position_size


def test_everything_is_off_by_default() -> None:
    cfg = HarshConfig()
    assert not cfg.any_on
    assert not any(v for k, v in cfg.to_dict().items() if isinstance(v, bool))
    assert cfg.stream_cut_ms == 0


def test_the_harsh_preset_turns_everything_on() -> None:
    cfg = harsh_preset(stream_cut_ms=60_000)
    assert all(v for v in cfg.to_dict().values() if isinstance(v, bool))
    assert cfg.stream_cut_ms == 60_000
    assert harsh_preset().stream_cut_ms == DAY_MS
    with pytest.raises(ValueError, match="unknown harsh field"):
        harsh_preset(no_such_switch=True)


def test_command_line_flags() -> None:
    assert not harsh_from_args(_parser().parse_args([])).any_on
    everything = harsh_from_args(_parser().parse_args(["--harsh"]))
    assert everything.liquidation and everything.price_series
    some = harsh_from_args(
        _parser().parse_args(
            ["--harsh-set", "liquidation=true", "--harsh-set", "funding_rate=0.001"]
        )
    )
    assert some.liquidation and not some.funding and some.funding_rate == Decimal("0.001")
    with pytest.raises(ValueError):
        harsh_from_args(_parser().parse_args(["--harsh-set", "liquidation"]))


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def test_admin_api_switches_and_prices() -> None:
    async with PaperExchange(mark_interval_ms=100) as sim, aiohttp.ClientSession() as s:
        a = sim.admin_url
        async with s.get(f"{a}/harsh") as r:
            assert (await r.json())["liquidation"] is False
        on = await _post(s, f"{a}/harsh", {"preset": "harsh", "stream_cut_ms": 0})
        assert on["liquidation"] is True and on["stream_cut_ms"] == 0
        assert sim.harsh.price_series
        off = await _post(s, f"{a}/harsh", {"liquidation": False, "funding_rate": "0.0002"})
        assert off["liquidation"] is False and off["funding_rate"] == "0.0002"
        await _post(s, f"{a}/config", {"taker_fee": "0.0004", "funding": False})
        assert not sim.harsh.funding and sim.engine.config.taker_fee == Decimal("0.0004")
        prices = await _post(
            s, f"{a}/prices", {"symbol": "btcusdt", "last": 94000, "mark": "94100"}
        )
        assert prices == {
            "symbol": "BTCUSDT",
            "lastPrice": "94000",
            "markPrice": "94100",
            "indexPrice": "95000",
        }
        wick = await _post(s, f"{a}/price/wick", {"symbol": "BTCUSDT", "price": "90000"})
        assert wick["lastPrice"] == "94000"
        async with s.post(f"{a}/harsh", json={"nope": 1}) as r:
            assert r.status == 400
        truth = sim.ground_truth()["harsh"]
        assert truth["config"]["price_series"] is True
        assert truth["prices"]["BTCUSDT"]["last"] == "94000"
        sim.reset()  # the switches survive a reset, like the engine config
        assert sim.engine.harsh is sim.harsh and sim.harsh.price_series


def test_wicks_price_path_spikes_and_returns() -> None:
    markets = build_markets([])
    path = SyntheticPath({"BTCUSDT": markets["BTCUSDT"]}, seed=3, scenario="wicks")
    prices = [p for _, p in (u for _ in range(2000) for u in path.step())]
    moves = [abs(b - a) / a for a, b in itertools.pairwise(prices)]
    spikes = [i for i, m in enumerate(moves) if m > Decimal("0.025")]
    assert spikes  # some wicks (3%) and gaps (2%)...
    wick_returns = [i for i in spikes if i + 1 < len(prices) - 1 and prices[i] == prices[i + 2]]
    assert wick_returns  # ...and a wick comes back to where it left
    again = SyntheticPath({"BTCUSDT": markets["BTCUSDT"]}, seed=3, scenario="wicks")
    assert [p for _, p in (u for _ in range(2000) for u in again.step())] == prices


@VENUES
async def test_the_harsh_preset_end_to_end(venue: str) -> None:
    """Everything on at once: a long with a stop, the market gaps through it."""
    async with exchange(venue, "harsh") as (sim, ex):
        await ex.create_order(BTC, "market", "buy", 0.1)
        stop = await place_stop(ex, venue, "sell", 0.1, 90000)
        for price in ("93000", "91000", "88000", "88000", "88000"):
            sim.set_price("BTCUSDT", price)  # the mark lags last down through the stop
        assert await position_size(ex) == 0
        trade = (await ex.fetch_my_trades(BTC))[-1]
        assert trade["side"] == "sell" and trade["price"] < 88000
        if venue == "binance":
            algo = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
            assert algo["info"]["algoStatus"] == "FINISHED"
        assert sim.ground_truth()["harsh"]["config"]["liquidation"] is True
