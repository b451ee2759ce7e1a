"""Bybit v5 linear venue: markets, orders, stops and positions through real ccxt ``bybit``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from simulator.server import PaperExchange
from tests.simulator.conftest import BTC, ETH

SL = {"reduceOnly": True, "triggerBy": "MarkPrice"}
SIDES = pytest.mark.parametrize(
    ("entry", "exit_", "stop", "cross"),
    [
        ("buy", "sell", 90000, "89000"),
        ("sell", "buy", 100000, "101000"),
    ],
    ids=["long", "short"],
)


def _open_stops(sim: PaperExchange) -> list[dict[str, Any]]:
    return [a for a in sim.ground_truth()["algoOrders"] if a["algoStatus"] == "NEW"]


async def test_markets_load_with_filters(bex: Any) -> None:
    for sym in (BTC, ETH, "SOL/USDT:USDT", "DOGE/USDT:USDT"):
        assert sym in bex.markets
    m = bex.market(BTC)
    assert m["linear"] and m["swap"] and m["active"] and m["settle"] == "USDT"
    assert m["id"] == "BTCUSDT"
    assert m["precision"] == {"amount": 0.001, "price": 0.1}
    assert m["limits"]["amount"]["min"] == 0.001
    assert m["limits"]["cost"]["min"] == 100
    assert m["limits"]["leverage"]["max"] == 125
    assert m["info"]["status"] == "Trading"


async def test_time_balance_ticker(bex: Any, bsim: PaperExchange) -> None:
    assert abs(await bex.fetch_time() - bsim.auth_now_ms()) < 60_000
    balance = await bex.fetch_balance()
    assert balance["USDT"]["total"] == 10000.0
    assert balance["USDT"]["free"] == 10000.0
    bsim.set_price("BTCUSDT", Decimal("96000"))
    ticker = await bex.fetch_ticker(BTC)
    assert ticker["last"] == 96000.0
    assert ticker["markPrice"] == 96000.0 and ticker["indexPrice"] == 96000.0


async def test_klines_newest_first_become_ccxt_ohlcv(bex: Any, bsim: PaperExchange) -> None:
    now = bsim.clock.now_ms()
    start = now - now % 60_000 - 5 * 60_000
    bsim.load_history("BTCUSDT", [(start + i * 60_000, str(95000 + i * 10)) for i in range(5)])
    raw = await bex.publicGetV5MarketKline(
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "limit": "3"}
    )
    times = [int(r[0]) for r in raw["result"]["list"]]
    assert times == sorted(times, reverse=True) and len(times) == 3
    ohlcv = await bex.fetch_ohlcv(BTC, "1m", limit=10)
    assert [c[0] for c in ohlcv] == sorted(c[0] for c in ohlcv)  # ccxt re-sorts oldest first
    assert [c[1] for c in ohlcv][:5] == [95000.0, 95010.0, 95020.0, 95030.0, 95040.0]


@SIDES
async def test_market_entry_fills_and_shows_in_positions(
    bex: Any, bsim: PaperExchange, entry: str, exit_: str, stop: int, cross: str
) -> None:
    order = await bex.create_order(BTC, "market", entry, 0.01, None, {"clientOrderId": "entry-1"})
    assert order["id"] and order["clientOrderId"] == "entry-1"
    [pos] = await bex.fetch_positions([BTC])
    assert pos["side"] == ("long" if entry == "buy" else "short")
    assert pos["contracts"] == 0.01 and pos["entryPrice"] == 95000.0
    assert pos["info"]["positionIdx"] == 0
    listed = await bex.fetch_positions()
    assert [p["symbol"] for p in listed] == [BTC]
    [closed] = await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "entry-1"})
    assert closed["id"] == order["id"] and closed["status"] == "closed"
    assert closed["filled"] == 0.01 and closed["average"] == 95000.0
    trades = await bex.fetch_my_trades(BTC)
    assert [t["order"] for t in trades] == [order["id"]]
    assert trades[0]["fee"]["cost"] == 0.475
    assert (await bex.fetch_balance())["USDT"]["total"] == 9999.525


@SIDES
async def test_stop_loss_rests_then_triggers_on_mark(
    bex: Any, bsim: PaperExchange, entry: str, exit_: str, stop: int, cross: str
) -> None:
    await bex.create_order(BTC, "market", entry, 0.01)
    params = {**SL, "stopLossPrice": stop, "clientOrderId": "sl-1"}
    placed = await bex.create_order(BTC, "market", exit_, 0.01, None, params)
    [listed] = await bex.fetch_open_orders(BTC)
    assert listed["id"] == placed["id"] and listed["clientOrderId"] == "sl-1"
    assert listed["status"] == "open" and listed["info"]["orderStatus"] == "Untriggered"
    assert listed["triggerPrice"] == stop and listed["stopLossPrice"] == stop
    assert listed["reduceOnly"] is True and listed["info"]["triggerBy"] == "MarkPrice"
    assert bsim.ground_truth()["unprotectedMs"]["BTCUSDT"] >= 0
    bsim.set_price("BTCUSDT", Decimal(cross))
    assert await bex.fetch_positions() == []
    assert await bex.fetch_open_orders(BTC) == []
    [done] = await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "sl-1"})
    assert done["id"] == placed["id"] and done["info"]["orderStatus"] == "Filled"
    assert done["filled"] == 0.01


async def test_edit_order_moves_the_stop_in_place(bex: Any, bsim: PaperExchange) -> None:
    await bex.create_order(BTC, "market", "buy", 0.01)
    stop = await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    algo_ids = {a["algoId"] for a in _open_stops(bsim)}
    edited = await bex.edit_order(
        stop["id"],
        BTC,
        "market",
        "sell",
        None,
        None,
        {"stopLossPrice": 93000, "triggerBy": "MarkPrice"},
    )
    assert edited["id"] == stop["id"]
    [listed] = await bex.fetch_open_orders(BTC)
    assert listed["id"] == stop["id"] and listed["triggerPrice"] == 93000.0
    assert {a["algoId"] for a in _open_stops(bsim)} == algo_ids  # same engine order
    truth = bsim.ground_truth()
    assert len(truth["algoOrders"]) == 1
    assert truth["episodes"][0]["maxStops"] == 1
    bsim.set_price("BTCUSDT", Decimal("92900"))
    assert await bex.fetch_positions() == []


async def test_edit_without_trigger_by_falls_back_to_last_price(bex: Any) -> None:
    """ccxt forces triggerBy=LastPrice on amend unless told otherwise (notes §0.5)."""
    await bex.create_order(BTC, "market", "buy", 0.01)
    stop = await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    await bex.edit_order(stop["id"], BTC, "market", "sell", None, None, {"stopLossPrice": 91000})
    [listed] = await bex.fetch_open_orders(BTC)
    assert listed["info"]["triggerBy"] == "LastPrice"


@SIDES
async def test_entry_with_attached_stop_is_never_unprotected(
    bex: Any, bsim: PaperExchange, entry: str, exit_: str, stop: int, cross: str
) -> None:
    params = {"stopLoss": {"triggerPrice": stop}, "slTriggerBy": "MarkPrice"}
    order = await bex.create_order(BTC, "market", entry, 0.01, None, params)
    truth = bsim.ground_truth()
    [episode] = truth["episodes"]
    assert episode["unprotectedMs"] == 0 and episode["maxStops"] == 1
    [pos] = await bex.fetch_positions([BTC])
    assert pos["stopLossPrice"] == stop
    assert pos["info"]["slTriggerBy"] == "MarkPrice"
    orders = await bex.fetch_open_orders(BTC)
    assert len(orders) == 1
    assert orders[0]["info"]["stopOrderType"] == "StopLoss" and orders[0]["triggerPrice"] == stop
    # Bybit's order history lists every status; the untriggered StopLoss is open
    [entry_order] = [
        o for o in await bex.fetch_canceled_and_closed_orders(BTC) if o["status"] == "closed"
    ]
    assert entry_order["id"] == order["id"] and entry_order["info"]["stopLoss"] == str(stop)
    bsim.set_price("BTCUSDT", Decimal(cross))
    assert await bex.fetch_positions() == []
    assert bsim.ground_truth()["episodes"][0]["unprotectedMs"] == 0


async def test_attached_stop_is_undone_when_the_entry_is_rejected(
    bex: Any, bsim: PaperExchange
) -> None:
    import ccxt.async_support as ccxt

    with pytest.raises(ccxt.InsufficientFunds):
        await bex.create_order(BTC, "market", "buy", 5, None, {"stopLoss": {"triggerPrice": 90000}})
    assert await bex.fetch_open_orders(BTC) == []
    assert _open_stops(bsim) == []


async def _trading_stop(bex: Any, **fields: str) -> Any:
    return await bex.privatePostV5PositionTradingStop(
        {"category": "linear", "symbol": "BTCUSDT", "tpslMode": "Full", "positionIdx": 0, **fields}
    )


async def test_trading_stop_set_move_clear(bex: Any, bsim: PaperExchange) -> None:
    await bex.create_order(BTC, "market", "buy", 0.01)
    # ccxt's own route to trading-stop: stopLossPrice with tradingStopEndpoint
    await bex.create_order(
        BTC, "market", "sell", None, None, {"stopLossPrice": 90000, "tradingStopEndpoint": True}
    )
    [pos] = await bex.fetch_positions([BTC])
    assert pos["stopLossPrice"] == 90000.0
    [first] = await bex.fetch_open_orders(BTC)
    await _trading_stop(bex, stopLoss="92000", slTriggerBy="MarkPrice")
    [moved] = await bex.fetch_open_orders(BTC)
    assert moved["id"] == first["id"] and moved["triggerPrice"] == 92000.0
    assert (await bex.fetch_positions([BTC]))[0]["stopLossPrice"] == 92000.0
    await _trading_stop(bex, takeProfit="99000")
    assert len(await bex.fetch_open_orders(BTC)) == 2
    await _trading_stop(bex, stopLoss="0", takeProfit="0")
    assert await bex.fetch_open_orders(BTC) == []
    [pos] = await bex.fetch_positions([BTC])
    assert pos["stopLossPrice"] is None and pos["info"]["stopLoss"] == ""
    truth = bsim.ground_truth()
    assert truth["episodes"][0]["maxStops"] == 1
    assert truth["unprotectedMs"]["BTCUSDT"] > 0 or truth["episodes"][0]["open"]


async def test_trading_stop_and_attached_stop_share_one_position_stop(
    bex: Any, bsim: PaperExchange
) -> None:
    await bex.create_order(BTC, "market", "buy", 0.01, None, {"stopLoss": {"triggerPrice": 90000}})
    await bex.create_order(BTC, "market", "buy", 0.01, None, {"stopLoss": {"triggerPrice": 91000}})
    await _trading_stop(bex, stopLoss="92000")
    [stop] = await bex.fetch_open_orders(BTC)
    assert stop["triggerPrice"] == 92000.0
    assert bsim.ground_truth()["episodes"][0]["maxStops"] == 1
    bsim.set_price("BTCUSDT", Decimal("91900"))
    assert await bex.fetch_positions() == []  # the position stop closes all 0.02


async def test_trading_stop_on_flat_position_is_rejected(bex: Any) -> None:
    import ccxt.async_support as ccxt

    with pytest.raises(ccxt.BadRequest, match="zero position"):
        await _trading_stop(bex, stopLoss="90000")


async def test_cancel_by_id_link_id_and_all(bex: Any) -> None:
    await bex.create_order(BTC, "market", "buy", 0.01)
    a = await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    await bex.create_order(
        BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 89000, "clientOrderId": "c-2"}
    )
    await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 88000})
    cancelled = await bex.cancel_order(a["id"], BTC)
    assert cancelled["id"] == a["id"]
    await bex.cancel_order(None, BTC, {"orderLinkId": "c-2"})
    assert len(await bex.fetch_open_orders(BTC)) == 1
    await bex.cancel_all_orders(BTC)
    assert await bex.fetch_open_orders(BTC) == []
    history = await bex.fetch_canceled_and_closed_orders(BTC)
    assert sum(1 for o in history if o["status"] == "canceled") == 3


async def test_open_orders_page_at_most_50(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(rate_limit_per_s=1000)
    params = {"triggerPrice": 99000, "triggerDirection": "ascending"}
    for i in range(55):
        await bex.create_order(
            BTC, "market", "buy", 0.002, None, {**params, "clientOrderId": f"o{i}"}
        )
    assert len(await bex.fetch_open_orders(BTC)) == 20  # Bybit's default page
    first = await bex.fetch_open_orders(BTC, None, 50)
    assert len(first) == 50
    # ccxt puts the page cursor on the first raw row (then sorts the parsed orders)
    cursor = next(o["info"]["nextPageCursor"] for o in first if "nextPageCursor" in o["info"])
    rest = await bex.fetch_open_orders(BTC, None, 50, {"cursor": cursor})
    assert len(rest) == 5
    ids = {o["id"] for o in first} | {o["id"] for o in rest}
    assert len(ids) == 55
    everything = await bex.fetch_open_orders(BTC, params={"paginate": True})
    assert len({o["id"] for o in everything}) == 55
    without_symbol = await bex.fetch_open_orders(None, None, 50)  # ccxt adds settleCoin=USDT
    assert len(without_symbol) == 50
    import ccxt.async_support as ccxt

    with pytest.raises(ccxt.BadRequest):
        await bex.fetch_open_orders(BTC, None, 51)


async def test_history_and_executions(bex: Any, bsim: PaperExchange) -> None:
    e = await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "h-entry"})
    s = await bex.create_order(
        BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 94000, "clientOrderId": "h-sl"}
    )
    bsim.set_price("BTCUSDT", Decimal("93000"))
    history = await bex.fetch_canceled_and_closed_orders(BTC)
    assert {o["id"] for o in history} == {e["id"], s["id"]}
    raw = await bex.privateGetV5OrderHistory({"category": "linear", "symbol": "BTCUSDT"})
    assert [o["orderId"] for o in raw["result"]["list"]] == [
        s["id"],
        e["id"],
    ]  # Bybit: newest first
    trades = await bex.fetch_my_trades(BTC)
    assert {t["order"] for t in trades} == {e["id"], s["id"]}
    stop_trade = next(t for t in trades if t["order"] == s["id"])
    assert stop_trade["price"] == 93000.0 and stop_trade["side"] == "sell"
    only = await bex.fetch_my_trades(BTC, params={"orderId": e["id"]})
    assert [t["order"] for t in only] == [e["id"]]


async def test_leverage_and_position_mode(bex: Any) -> None:
    import ccxt.async_support as ccxt

    await bex.set_leverage(10, BTC)
    with pytest.raises(ccxt.BadRequest, match="110043"):
        await bex.set_leverage(10, BTC)
    [pos] = await bex.fetch_positions([BTC])
    assert pos["leverage"] == 10
    # already one-way: Bybit's 110025 (hedge mode itself: test_hedge_mode.py)
    with pytest.raises(ccxt.NoChange, match="110025"):
        await bex.set_position_mode(False, BTC)
    await bex.set_position_mode(True, BTC)
    await bex.set_position_mode(False, BTC)


async def test_never_leaves_localhost(bex: Any, bsim: PaperExchange) -> None:
    for url in bex.urls["api"].values():
        if isinstance(url, str):
            assert url.startswith("http://127.0.0.1:")
    assert bsim.rest_url.startswith("http://127.0.0.1:")


async def test_main_serves_bybit_with_venue_flag() -> None:
    import asyncio
    import json
    import signal
    import sys

    import aiohttp

    from tests.waiting import PATIENCE_S

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--venue",
        "bybit",
        "--price-path",
        "random_walk",
        "--tick-interval",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = {}
        while not info:
            line = (await asyncio.wait_for(proc.stdout.readline(), PATIENCE_S)).decode()
            if line.startswith("{"):
                info = json.loads(line)
        assert info["venue"] == "bybit"
        async with aiohttp.ClientSession() as s:
            async with s.get(info["rest_url"] + "/v5/market/time") as r:
                body = await r.json()
                assert body["retCode"] == 0 and body["result"]["timeSecond"]
            async with s.get(info["rest_url"] + "/fapi/v1/ping") as r:
                assert r.status == 404  # one venue per server
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), PATIENCE_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
