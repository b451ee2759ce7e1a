"""Hedge mode (a long and a short on one symbol) on both venues, through real ccxt.

Binance: ``/fapi/v1/positionSide/dual``, ``positionSide`` LONG/SHORT on every order.
Bybit: ``/v5/position/switch-mode`` mode 3, ``positionIdx`` 1 (long) / 2 (short).
ccxt's ``hedged=True`` picks the side on both (a reduce-only sell is the long side).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.bybit_auth import ws_signature
from simulator.client import binanceusdm_client, bybit_client
from simulator.clock import ManualClock
from simulator.engine import Engine
from simulator.errors import ApiError
from simulator.markets import build_markets
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC
from tests.waiting import PATIENCE_S, until

VENUES = pytest.mark.parametrize("venue", ["binance", "bybit"])
HEDGED = {"hedged": True}
# per venue: unchanged mode, position exists, open order exists, side not matching the mode
CODES = {
    "binance": {"same": "-4059", "position": "-4068", "orders": "-4067", "side": "-4061"},
    "bybit": {"same": "110025", "position": "110024", "orders": "110028", "side": "10001"},
}


class Venue:
    """A running paper exchange and a ccxt client for it."""

    def __init__(self, name: str, sim: PaperExchange, ex: Any) -> None:
        self.name, self.sim, self.ex = name, sim, ex
        self.codes = CODES[name]

    def stop_params(self, price: int) -> dict[str, Any]:
        """A reduce-only stop-loss on the side ccxt's ``hedged`` picks."""
        trigger = (
            {"workingType": "MARK_PRICE"} if self.name == "binance" else {"triggerBy": "MarkPrice"}
        )
        return {"stopLossPrice": price, "reduceOnly": True, **HEDGED, **trigger}

    async def stop(self, exit_side: str, qty: float, price: int) -> dict[str, Any]:
        return await self.ex.create_order(  # type: ignore[no-any-return]
            BTC, "market", exit_side, qty, None, self.stop_params(price)
        )

    def side_param(self, ps: str) -> dict[str, Any]:
        """The raw wire parameter naming a position side (BOTH/LONG/SHORT)."""
        if self.name == "binance":
            return {"positionSide": ps}
        return {"positionIdx": {"BOTH": 0, "LONG": 1, "SHORT": 2}[ps]}

    async def raw_positions(self) -> list[dict[str, Any]]:
        if self.name == "binance":
            return await self.ex.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})  # type: ignore[no-any-return]
        res = await self.ex.privateGetV5PositionList({"category": "linear", "symbol": "BTCUSDT"})
        return res["result"]["list"]  # type: ignore[no-any-return]


async def _venue(name: str, hedge: bool) -> AsyncIterator[Venue]:
    async with PaperExchange(venue=name, hedge_mode=hedge, mark_interval_ms=100) as sim:
        factory = binanceusdm_client if name == "binance" else bybit_client
        ex = factory(sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False)
        await ex.load_markets()
        try:
            yield Venue(name, sim, ex)
        finally:
            await ex.close()


@pytest.fixture
async def hedge(request: pytest.FixtureRequest) -> AsyncIterator[Venue]:
    """A venue whose account starts in hedge mode (``PaperExchange(hedge_mode=True)``)."""
    async for v in _venue(request.param, True):
        yield v


@pytest.fixture
async def oneway(request: pytest.FixtureRequest) -> AsyncIterator[Venue]:
    async for v in _venue(request.param, False):
        yield v


HEDGE = pytest.mark.parametrize("hedge", ["binance", "bybit"], indirect=True)
ONEWAY = pytest.mark.parametrize("oneway", ["binance", "bybit"], indirect=True)


def _episodes(sim: PaperExchange) -> dict[str, dict[str, Any]]:
    """Open episodes by position side."""
    return {e["positionSide"]: e for e in sim.ground_truth()["episodes"] if e["open"]}


@ONEWAY
async def test_switch_mode_and_its_refusals(oneway: Venue) -> None:
    ex, sim, codes = oneway.ex, oneway.sim, oneway.codes
    if oneway.name == "binance":
        assert (await ex.fetch_position_mode(BTC))["hedged"] is False
    with pytest.raises(ccxt.ExchangeError, match=codes["same"]):
        await ex.set_position_mode(False)
    # one-way mode: a LONG/SHORT side (positionIdx 1/2) does not match
    with pytest.raises(ccxt.ExchangeError, match=codes["side"]):
        await ex.create_order(BTC, "market", "buy", 0.01, None, oneway.side_param("LONG"))
    await ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.ExchangeError, match=codes["position"]):
        await ex.set_position_mode(True)
    await ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    limit = await ex.create_order(BTC, "limit", "buy", 0.01, 90000)
    with pytest.raises(ccxt.ExchangeError, match=codes["orders"]):
        await ex.set_position_mode(True)
    await ex.cancel_order(limit["id"], BTC)
    await ex.set_position_mode(True)
    assert sim.engine.hedge_symbols == set(sim.markets)
    if oneway.name == "binance":
        assert (await ex.fetch_position_mode(BTC))["hedged"] is True
    with pytest.raises(ccxt.ExchangeError, match=codes["same"]):
        await ex.set_position_mode(True)
    # hedge mode: BOTH (positionIdx 0) no longer matches
    with pytest.raises(ccxt.ExchangeError, match=codes["side"]):
        await ex.create_order(BTC, "market", "buy", 0.01, None, oneway.side_param("BOTH"))
    await ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)
    assert sim.engine.position("BTCUSDT", "LONG").amt == Decimal("0.01")
    assert sim.ground_truth()["hedgeSymbols"] == sorted(sim.markets)


async def test_bybit_switches_one_symbol_and_admin_api_switches_the_account() -> None:
    async for v in _venue("bybit", False):
        await v.ex.set_position_mode(True, BTC)  # symbol=BTCUSDT only
        assert v.sim.engine.hedge_symbols == {"BTCUSDT"}
        await v.ex.create_order("ETH/USDT:USDT", "market", "buy", 0.05)  # ETH stays one-way
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{v.sim.admin_url}/position/mode", json={"hedge": True}) as r:
                refused = await r.json()
                assert r.status == 400 and refused["code"] == -4068  # the ETH position
            v.sim.close_position("ETHUSDT")
            async with s.post(f"{v.sim.admin_url}/position/mode", json={"hedge": True}) as r:
                assert r.status == 200
                assert (await r.json())["hedgeSymbols"] == sorted(v.sim.markets)


@HEDGE
async def test_long_and_short_coexist_with_their_own_stops(hedge: Venue) -> None:
    ex, sim = hedge.ex, hedge.sim
    await ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)  # LONG
    await ex.create_order(BTC, "market", "sell", 0.02, None, HEDGED)  # SHORT
    long_sl = await hedge.stop("sell", 0.01, 90000)
    short_sl = await hedge.stop("buy", 0.02, 100000)
    positions = {p["side"]: p for p in await ex.fetch_positions([BTC])}
    assert set(positions) == {"long", "short"}
    assert positions["long"]["contracts"] == 0.01 and positions["short"]["contracts"] == 0.02
    assert positions["long"]["hedged"] is True and positions["short"]["hedged"] is True
    raw = await hedge.raw_positions()
    if hedge.name == "binance":
        assert [(r["positionSide"], r["positionAmt"]) for r in raw] == [
            ("LONG", "0.01"),
            ("SHORT", "-0.02"),
        ]
    else:
        assert [(r["positionIdx"], r["side"], r["size"]) for r in raw] == [
            (1, "Buy", "0.01"),
            (2, "Sell", "0.02"),
        ]
    episodes = _episodes(sim)
    assert episodes["LONG"]["side"] == "long" and episodes["SHORT"]["side"] == "short"
    assert episodes["LONG"]["maxStops"] == 1 and episodes["SHORT"]["maxStops"] == 1

    # the long's stop fires: only the long closes, the short and its stop stay
    sim.set_price("BTCUSDT", Decimal("89000"))
    # (Bybit lists a flat row per side when asked by symbol; ccxt keeps it, with 0 contracts)
    positions = {p["side"]: p for p in await ex.fetch_positions([BTC]) if p["contracts"]}
    assert set(positions) == {"short"} and positions["short"]["contracts"] == 0.02
    assert sim.engine.position("BTCUSDT", "LONG").amt == 0
    open_ids = {o["id"] for o in await ex.fetch_open_orders(BTC, None, None, {"trigger": True})}
    assert open_ids == {short_sl["id"]} and long_sl["id"] not in open_ids
    episodes = _episodes(sim)
    assert set(episodes) == {"SHORT"}
    closed = [e for e in sim.ground_truth()["episodes"] if not e["open"]]
    assert [(e["positionSide"], e["side"]) for e in closed] == [("LONG", "long")]


@HEDGE
async def test_ground_truth_counts_unprotected_time_per_side(hedge: Venue) -> None:
    ex, sim = hedge.ex, hedge.sim
    await ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)
    await hedge.stop("sell", 0.01, 90000)
    await ex.create_order(BTC, "market", "sell", 0.01, None, HEDGED)  # no stop
    sim.advance(5_000)
    # the short stays open and unprotected, so its time grows as the real clock runs:
    # the ground truth's figure lies between two direct reads around it
    before = sim.engine.unprotected_ms("BTCUSDT", "SHORT")
    truth = sim.ground_truth()
    after = sim.engine.unprotected_ms("BTCUSDT", "SHORT")
    by_side = truth["unprotectedMsBySide"]
    assert by_side["BTCUSDT:SHORT"] >= 5_000
    assert by_side["BTCUSDT:LONG"] < 5_000  # only the moment before its stop
    assert truth["unprotectedMs"]["BTCUSDT"] == by_side["BTCUSDT:LONG"] + by_side["BTCUSDT:SHORT"]
    assert before <= by_side["BTCUSDT:SHORT"] <= after
    # a stop on the short's exit side protects the short, not the long
    await hedge.stop("buy", 0.01, 100000)

    def short_protected() -> bool:
        return any(
            e["positionSide"] == "SHORT" and e["open"] and e["maxStops"] >= 1
            for e in sim.ground_truth()["episodes"]
        )

    await until(short_protected, "the short's stop counted")
    mid = sim.ground_truth()["unprotectedMsBySide"]
    sim.advance(5_000)
    later = sim.ground_truth()["unprotectedMsBySide"]
    assert later["BTCUSDT:SHORT"] - mid["BTCUSDT:SHORT"] < 1_000  # (a few real ms at most)
    assert later["BTCUSDT:LONG"] == by_side["BTCUSDT:LONG"]


@HEDGE
async def test_order_refusals_in_hedge_mode(hedge: Venue) -> None:
    ex, codes = hedge.ex, hedge.codes
    with pytest.raises(ccxt.ExchangeError, match=codes["side"]):
        await ex.create_order(BTC, "market", "buy", 0.01)  # BOTH / positionIdx 0
    # closing a side that is flat: Binance -2022, Bybit 110017
    flat = "-2022" if hedge.name == "binance" else "110017"
    with pytest.raises(ccxt.InvalidOrder, match=flat):
        await ex.create_order(BTC, "market", "sell", 0.01, None, hedge.side_param("LONG"))
    await ex.create_order(BTC, "market", "buy", 0.01, None, hedge.side_param("LONG"))
    if hedge.name == "binance":
        with pytest.raises(ccxt.BadRequest, match="-1106"):
            await ex.create_order(
                BTC, "market", "sell", 0.01, None, {"positionSide": "LONG", "reduceOnly": True}
            )
    # an exit-side order only reduces its own side, never opens the other one
    await ex.create_order(BTC, "market", "sell", 0.05, None, hedge.side_param("LONG"))
    assert hedge.sim.engine.position("BTCUSDT", "LONG").amt == 0
    assert hedge.sim.engine.position("BTCUSDT", "SHORT").amt == 0


async def test_binance_close_position_stops_and_algo_orders_carry_the_side() -> None:
    async for v in _venue("binance", True):
        ex, sim = v.ex, v.sim
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"positionSide": "LONG"})
        await ex.create_order(BTC, "market", "sell", 0.01, None, {"positionSide": "SHORT"})
        close = {"closePosition": True, "workingType": "MARK_PRICE"}
        long_stop = await ex.create_order(
            BTC,
            "market",
            "sell",
            None,
            None,
            {**close, "triggerPrice": 90000, "positionSide": "LONG"},
        )
        short_stop = await ex.create_order(
            BTC,
            "market",
            "buy",
            None,
            None,
            {**close, "triggerPrice": 99000, "positionSide": "SHORT"},
        )
        # a closePosition stop per side: the same side twice is -4130, the entry side -2022
        with pytest.raises(ccxt.ExchangeError, match="-4130"):
            await ex.create_order(
                BTC,
                "market",
                "sell",
                None,
                None,
                {**close, "triggerPrice": 91000, "positionSide": "LONG"},
            )
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):
            await ex.create_order(
                BTC,
                "market",
                "buy",
                None,
                None,
                {**close, "triggerPrice": 99000, "positionSide": "LONG"},
            )
        algos = await ex.fetch_open_orders(BTC, None, None, {"trigger": True})
        assert {a["id"]: a["info"]["positionSide"] for a in algos} == {
            long_stop["id"]: "LONG",
            short_stop["id"]: "SHORT",
        }
        sim.set_price("BTCUSDT", Decimal("99500"))  # the short's stop fires
        assert sim.engine.position("BTCUSDT", "SHORT").amt == 0
        assert sim.engine.position("BTCUSDT", "LONG").amt == Decimal("0.01")
        [long_pos] = await ex.fetch_positions([BTC])
        assert long_pos["side"] == "long" and long_pos["info"]["positionSide"] == "LONG"
        trades = await ex.fetch_my_trades(BTC)
        assert [t["info"]["positionSide"] for t in trades] == ["LONG", "SHORT", "SHORT"]
        algo = await ex.fetch_order(short_stop["id"], BTC, {"trigger": True})
        fill = await ex.fetch_order(algo["info"]["actualOrderId"], BTC)
        assert fill["info"]["positionSide"] == "SHORT" and fill["info"]["origType"] == "STOP_MARKET"


async def test_bybit_trading_stop_attached_stop_and_leverage_per_side() -> None:
    async for v in _venue("bybit", True):
        ex, sim = v.ex, v.sim
        # an entry's attached stop-loss belongs to its side and is live before the fill
        await ex.create_order(
            BTC, "market", "sell", 0.02, None, {**HEDGED, "stopLoss": {"triggerPrice": 99000}}
        )
        await ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)
        await ex.privatePostV5PositionTradingStop(
            {
                "category": "linear",
                "symbol": "BTCUSDT",
                "tpslMode": "Full",
                "positionIdx": 1,
                "stopLoss": "91000",
            }
        )
        with pytest.raises(ccxt.BadRequest, match="10001"):  # positionIdx 0 in hedge mode
            await ex.privatePostV5PositionTradingStop(
                {"category": "linear", "symbol": "BTCUSDT", "tpslMode": "Full", "stopLoss": "91000"}
            )
        await ex.set_leverage(10, BTC, {"buyLeverage": "10", "sellLeverage": "5"})
        rows = {r["positionIdx"]: r for r in await v.raw_positions()}
        assert (rows[1]["stopLoss"], rows[2]["stopLoss"]) == ("91000", "99000")
        assert (rows[1]["leverage"], rows[2]["leverage"]) == ("10", "5")
        positions = {p["side"]: p for p in await ex.fetch_positions([BTC])}
        assert positions["long"]["stopLossPrice"] == 91000.0
        assert positions["short"]["stopLossPrice"] == 99000.0
        episodes = _episodes(sim)
        assert episodes["SHORT"]["unprotectedMs"] == 0 and episodes["SHORT"]["maxStops"] == 1
        assert set(sim.ground_truth()["bybit"]["positionStops"]) == {
            "BTCUSDT:sl:LONG",
            "BTCUSDT:sl:SHORT",
        }
        sim.set_price("BTCUSDT", Decimal("99100"))  # the short's position stop fires
        rows = {r["positionIdx"]: r for r in await v.raw_positions()}
        assert rows[2]["size"] == "0" and rows[2]["side"] == "" and rows[2]["stopLoss"] == ""
        assert rows[1]["size"] == "0.01" and rows[1]["stopLoss"] == "91000"
        opened = await ex.fetch_open_orders(BTC)
        assert [(o["info"]["stopOrderType"], o["info"]["positionIdx"]) for o in opened] == [
            ("StopLoss", 1)
        ]


async def _binance_user_events(v: Venue, want: int) -> list[dict[str, Any]]:
    key = (await v.ex.fapiPrivatePostListenKey())["listenKey"]
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{v.sim.ws_url}/ws/{key}") as ws:
        await until(lambda: bool(v.sim.hub.user_conns), "the user-data stream connected")
        await v.ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)
        await v.ex.create_order(BTC, "market", "sell", 0.02, None, HEDGED)
        while sum(e["e"] == "ACCOUNT_UPDATE" for e in events) < want:
            events.append(json.loads((await asyncio.wait_for(ws.receive(), PATIENCE_S)).data))
    return events


async def _bybit_position_rows(v: Venue) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{v.sim.ws_url}/v5/private") as ws:
        expires = v.sim.auth_now_ms() + 10_000
        sig = ws_signature(v.sim.api_secret, expires)
        await ws.send_str(json.dumps({"op": "auth", "args": [v.sim.api_key, expires, sig]}))
        assert json.loads((await ws.receive()).data)["success"] is True
        await ws.send_str(json.dumps({"op": "subscribe", "args": ["position", "order"]}))
        assert json.loads((await ws.receive()).data)["success"] is True
        await v.ex.create_order(BTC, "market", "buy", 0.01, None, HEDGED)
        await v.ex.create_order(BTC, "market", "sell", 0.02, None, HEDGED)
        while len([r for r in rows if "size" in r]) < 2:
            msg = json.loads((await asyncio.wait_for(ws.receive(), PATIENCE_S)).data)
            rows.extend(msg["data"])
    return rows


@HEDGE
async def test_private_streams_carry_the_position_side(hedge: Venue) -> None:
    if hedge.name == "binance":
        events = await _binance_user_events(hedge, 2)
        orders = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
        assert {(o["S"], o["ps"]) for o in orders} == {("BUY", "LONG"), ("SELL", "SHORT")}
        updates = [p for e in events if e["e"] == "ACCOUNT_UPDATE" for p in e["a"]["P"]]
        assert [(p["ps"], p["pa"]) for p in updates] == [("LONG", "0.01"), ("SHORT", "-0.02")]
    else:
        rows = await _bybit_position_rows(hedge)
        positions = [r for r in rows if "size" in r]
        assert [(r["positionIdx"], r["side"], r["size"]) for r in positions] == [
            (1, "Buy", "0.01"),
            (2, "Sell", "0.02"),
        ]
        orders = [r for r in rows if "orderStatus" in r]
        assert {(o["side"], o["positionIdx"]) for o in orders} == {("Buy", 1), ("Sell", 2)}


# ---------------------------------------------------------------- engine level
def _hedge_engine() -> tuple[Engine, ManualClock]:
    clock = ManualClock()
    engine = Engine(build_markets(), clock)
    engine.set_position_mode(True)
    return engine, clock


def test_engine_exit_orders_clip_to_their_side_and_never_flip() -> None:
    e, _ = _hedge_engine()
    e.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.02"), position_side="LONG")
    e.place_order("BTCUSDT", "SELL", "MARKET", Decimal("0.01"), position_side="SHORT")
    # a resting SELL LONG larger than the long fills only what the long holds
    e.place_order(
        "BTCUSDT", "SELL", "LIMIT", Decimal("0.05"), Decimal("96000"), position_side="LONG"
    )
    e.set_price("BTCUSDT", Decimal("96000"))
    assert e.position("BTCUSDT", "LONG").amt == 0
    assert e.position("BTCUSDT", "SHORT").amt == Decimal("-0.01")
    assert e.positions["BTCUSDT"].amt == 0  # the one-way position is untouched
    # realised PnL per side: long +20 (0.02 x 1000), the short is still open
    assert e.position("BTCUSDT", "LONG").realized_pnl == Decimal("20")
    with pytest.raises(ApiError) as exc:
        e.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.01"))  # BOTH in hedge mode
    assert exc.value.code == -4061
    with pytest.raises(ApiError) as exc:
        e.set_position_mode(False)  # the short is open
    assert exc.value.code == -4068


def test_engine_manual_ops_and_protection_per_side() -> None:
    e, clock = _hedge_engine()
    e.manual_open("ETHUSDT", "BUY", Decimal("0.1"))
    e.manual_open("ETHUSDT", "SELL", Decimal("0.2"))
    e.place_algo(
        "ETHUSDT",
        "BUY",
        "STOP_MARKET",
        None,
        Decimal("3600"),
        close_position=True,
        position_side="SHORT",
    )
    clock.advance(1000)
    assert e.unprotected_ms("ETHUSDT", "LONG") == 1000
    assert e.unprotected_ms("ETHUSDT", "SHORT") == 0
    e.manual_close("ETHUSDT", "LONG")
    assert e.position("ETHUSDT", "LONG").amt == 0
    assert e.position("ETHUSDT", "SHORT").amt == Decimal("-0.2")
    assert [a.algo_status for a in e.algos.values()] == ["NEW"]  # the short's stop stays
    e.manual_close("ETHUSDT")
    assert e.position("ETHUSDT", "SHORT").amt == 0
    assert [a.algo_status for a in e.algos.values()] == ["CANCELED"]  # its position closed
