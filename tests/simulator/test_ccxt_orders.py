"""Orders, stops and positions through the real ccxt binanceusdm client over HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt

from simulator.client import binanceusdm_client
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC, ETH

SL = {"reduceOnly": True, "workingType": "MARK_PRICE"}


async def test_load_markets_exposes_filters(ex: Any) -> None:
    for sym in (BTC, ETH, "SOL/USDT:USDT", "BNB/USDT:USDT", "XRP/USDT:USDT", "DOGE/USDT:USDT"):
        assert sym in ex.markets
    m = ex.market(BTC)
    assert m["linear"] and m["swap"] and m["settle"] == "USDT"
    assert m["precision"]["price"] == 0.1
    assert m["precision"]["amount"] == 0.001
    assert m["limits"]["amount"]["min"] == 0.001
    assert m["limits"]["cost"]["min"] == 100
    assert "STOP_MARKET" in m["info"]["orderTypes"]


async def test_extra_symbols_are_listed() -> None:
    async with PaperExchange(symbols=["ADAUSDT"], admin_port=None) as sim:
        ex = binanceusdm_client(sim, api_key=sim.api_key, secret=sim.api_secret)
        try:
            await ex.load_markets()
            assert "ADA/USDT:USDT" in ex.markets
        finally:
            await ex.close()


async def test_market_entry_fills_and_shows_in_position(ex: Any, sim: PaperExchange) -> None:
    order = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "entry-1"})
    assert order["status"] == "closed"
    assert order["clientOrderId"] == "entry-1"
    fetched = await ex.fetch_order(order["id"], BTC)
    assert fetched["status"] == "closed" and fetched["filled"] == 0.01
    assert fetched["average"] == 95000.0
    by_cid = await ex.fetch_order(None, BTC, {"clientOrderId": "entry-1"})
    assert by_cid["id"] == order["id"]
    positions = await ex.fetch_positions([BTC])
    assert len(positions) == 1
    pos = positions[0]
    assert pos["side"] == "long" and pos["contracts"] == 0.01 and pos["entryPrice"] == 95000.0
    trades = await ex.fetch_my_trades(BTC)
    assert [t["order"] for t in trades] == [order["id"]]
    assert trades[0]["fee"]["cost"] == 0.475  # 950 USDT * 0.05% taker
    balance = await ex.fetch_balance()
    assert balance["USDT"]["total"] == 9999.525
    truth = sim.ground_truth()
    assert truth["positions"][0]["positionAmt"] == "0.01"


async def test_slippage_and_partial_fills(ex: Any, sim: PaperExchange) -> None:
    sim.configure(slippage_bps="10", fill_parts=3)
    order = await ex.create_order(ETH, "market", "sell", 0.01)
    assert order["status"] == "closed"
    trades = await ex.fetch_my_trades(ETH)
    assert len(trades) == 3
    assert sum(Decimal(t["info"]["qty"]) for t in trades) == Decimal("0.01")
    # 3500 * (1 - 10 bps) = 3496.5, rounded down to tick for a sell
    assert {t["info"]["price"] for t in trades} == {"3496.5"}


async def test_stop_market_lifecycle_place_list_fetch_cancel(ex: Any) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    params = {**SL, "stopLossPrice": 90000, "clientOrderId": "sl-life"}
    stop = await ex.create_order(BTC, "market", "sell", 0.01, None, params)
    assert stop["status"] == "open" and stop["clientOrderId"] == "sl-life"
    assert stop["triggerPrice"] == 90000.0
    assert await ex.fetch_open_orders(BTC) == []  # algo orders are invisible without trigger
    listed = await ex.fetch_open_orders(BTC, params={"trigger": True})
    assert [o["id"] for o in listed] == [stop["id"]]
    by_cid = await ex.fetch_order(None, BTC, {"trigger": True, "clientOrderId": "sl-life"})
    assert by_cid["id"] == stop["id"] and by_cid["status"] == "open"
    assert by_cid["info"]["workingType"] == "MARK_PRICE"
    assert by_cid["reduceOnly"] is True
    await ex.cancel_order(stop["id"], BTC, {"trigger": True})
    after = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
    assert after["status"] == "canceled"
    assert await ex.fetch_open_orders(BTC, params={"trigger": True}) == []
    history = await ex.fetch_orders(BTC, params={"trigger": True})
    assert [o["status"] for o in history] == ["canceled"]


async def test_stop_triggers_on_mark_price_and_closes_position(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.02)
    params = {**SL, "stopLossPrice": 94000, "clientOrderId": "sl-trig"}
    stop = await ex.create_order(BTC, "market", "sell", 0.02, None, params)
    sim.set_price("BTCUSDT", Decimal("94500"))
    assert (await ex.fetch_order(stop["id"], BTC, {"trigger": True}))["status"] == "open"
    sim.set_price("BTCUSDT", Decimal("93999.9"))
    algo = await ex.fetch_order(stop["id"], BTC, {"trigger": True})
    assert algo["status"] == "closed" and algo["info"]["algoStatus"] == "FINISHED"
    actual = await ex.fetch_order(algo["info"]["actualOrderId"], BTC)
    assert actual["status"] == "closed" and actual["filled"] == 0.02
    assert actual["reduceOnly"] is True and actual["info"]["origType"] == "STOP_MARKET"
    assert await ex.fetch_positions([BTC]) == []


async def test_take_profit_on_contract_price(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(ETH, "market", "sell", 0.1)
    tp = await ex.create_order(
        ETH,
        "market",
        "buy",
        0.1,
        None,
        {"takeProfitPrice": 3400, "reduceOnly": True, "workingType": "CONTRACT_PRICE"},
    )
    assert tp["info"]["orderType"] == "TAKE_PROFIT_MARKET"
    sim.set_price("ETHUSDT", Decimal("3400"))
    assert (await ex.fetch_order(tp["id"], ETH, {"trigger": True}))["status"] == "closed"
    assert await ex.fetch_positions([ETH]) == []
    truth = sim.ground_truth()
    assert truth["positions"][0]["realizedPnl"] == "10"  # 0.1 * (3500 - 3400)


async def test_close_position_stop_is_cancelled_when_position_closes(
    ex: Any, sim: PaperExchange
) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    stop = await ex.create_order(
        BTC,
        "market",
        "sell",
        None,
        None,
        {"triggerPrice": 90000, "closePosition": True, "workingType": "MARK_PRICE"},
    )
    assert stop["status"] == "open"
    await ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    assert (await ex.fetch_order(stop["id"], BTC, {"trigger": True}))["status"] == "canceled"


async def test_close_position_stop_closes_whole_position(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    await ex.create_order(
        BTC,
        "market",
        "sell",
        None,
        None,
        {"triggerPrice": 90000, "closePosition": True, "workingType": "MARK_PRICE"},
    )
    await ex.create_order(BTC, "market", "buy", 0.02)  # position grows after the stop
    sim.set_price("BTCUSDT", Decimal("89000"))
    assert await ex.fetch_positions([BTC]) == []


async def test_oversized_reduce_only_stops_never_flip(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    a = await ex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 94000})
    b = await ex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 93000})
    sim.set_price("BTCUSDT", Decimal("92000"))  # crosses both in one tick
    assert (await ex.fetch_order(a["id"], BTC, {"trigger": True}))["info"][
        "algoStatus"
    ] == "FINISHED"
    second = await ex.fetch_order(b["id"], BTC, {"trigger": True})
    assert second["status"] == "expired"
    assert await ex.fetch_positions([BTC]) == []


async def test_reduce_only_market_is_clipped_to_position(ex: Any) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    order = await ex.create_order(BTC, "market", "sell", 0.05, None, {"reduceOnly": True})
    fetched = await ex.fetch_order(order["id"], BTC)
    assert fetched["filled"] == 0.01 and fetched["status"] == "expired"
    assert await ex.fetch_positions([BTC]) == []


async def test_limit_order_rests_then_fills_as_maker(ex: Any, sim: PaperExchange) -> None:
    order = await ex.create_order(ETH, "limit", "buy", 0.01, 3400, {"clientOrderId": "lim-1"})
    assert order["status"] == "open"
    assert [o["id"] for o in await ex.fetch_open_orders(ETH)] == [order["id"]]
    sim.set_price("ETHUSDT", Decimal("3399"))
    done = await ex.fetch_order(order["id"], ETH)
    assert done["status"] == "closed" and done["average"] == 3400.0
    trades = await ex.fetch_my_trades(ETH)
    assert trades[0]["takerOrMaker"] == "maker"


async def test_cancel_all_and_leverage_and_margin_mode(ex: Any) -> None:
    await ex.create_order(ETH, "limit", "buy", 0.01, 3000)
    await ex.cancel_all_orders(ETH)
    assert await ex.fetch_open_orders(ETH) == []
    res = await ex.set_leverage(5, ETH)
    assert res["leverage"] == 5
    await ex.set_margin_mode("isolated", ETH)
    with_err: Exception | None = None
    try:
        await ex.set_margin_mode("isolated", ETH)
    except ccxt.MarginModeAlreadySet as exc:
        with_err = exc
    assert with_err is not None


async def test_stops_via_trigger_cancel_all(ex: Any) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    for p in (90000, 91000):
        await ex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": p})
    await ex.cancel_all_orders(BTC, {"trigger": True})
    assert await ex.fetch_open_orders(BTC, params={"trigger": True}) == []


async def test_public_market_data(ex: Any, sim: PaperExchange) -> None:
    sim.set_price("SOLUSDT", Decimal("201.5"))
    mark = await ex.fetch_mark_price("SOL/USDT:USDT")
    assert mark["markPrice"] == 201.5
    ticker = await ex.fetch_ticker("SOL/USDT:USDT")
    assert ticker["last"] == 201.5 and ticker["high"] == 201.5
    book = await ex.fetch_order_book("SOL/USDT:USDT", 5)
    assert book["bids"][0][0] < book["asks"][0][0]
    bidask = await ex.fetch_bids_asks(["SOL/USDT:USDT"])
    assert bidask["SOL/USDT:USDT"]["bid"] == 201.49
    assert (await ex.fetch_time()) > 0
    tickers = await ex.fetch_mark_prices()
    assert "BTC/USDT:USDT" in tickers
