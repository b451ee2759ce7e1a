"""Rendering of engine records as Binance USD-M JSON (REST bodies and WS events).

Numbers that are money are rendered as strings, as Binance does; this module
never converts to float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from simulator.candles import Candle
from simulator.engine import Engine
from simulator.harsh import maint_margin_ratio
from simulator.markets import Market
from simulator.model import ZERO, AlgoOrder, Fill, FundingSettlement, Income, Order, Position

EIGHT = Decimal("0.00000001")
FUNDING_INTERVAL_MS = 8 * 3600 * 1000


def fmt(d: Decimal | None) -> str:
    """Plain decimal string without exponent or superfluous trailing zeros."""
    if d is None:
        return "0"
    if d == 0:
        return "0"
    s = format(d.normalize(), "f")
    return s


def fmt8(d: Decimal) -> str:
    return fmt(d.quantize(EIGHT))


def next_funding(now_ms: int) -> int:
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def mmr(m: Market) -> Decimal:
    """Maintenance margin ratio of the first bracket."""
    return maint_margin_ratio(m)


# ----------------------------------------------------------------- market data
def exchange_info(markets: dict[str, Market], now_ms: int, weight_limit: int) -> dict[str, Any]:
    symbols = []
    for m in markets.values():
        symbols.append(
            {
                "symbol": m.symbol,
                "pair": m.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": m.base,
                "quoteAsset": m.quote,
                "marginAsset": m.quote,
                "pricePrecision": m.price_precision,
                "quantityPrecision": m.qty_precision,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": fmt(m.tick_size),
                        "maxPrice": "10000000",
                        "tickSize": fmt(m.tick_size),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": fmt(m.min_qty),
                        "maxQty": fmt(m.max_qty),
                        "stepSize": fmt(m.step_size),
                    },
                    {
                        "filterType": "MARKET_LOT_SIZE",
                        "minQty": fmt(m.min_qty),
                        "maxQty": fmt(m.max_qty),
                        "stepSize": fmt(m.step_size),
                    },
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": fmt(m.min_notional)},
                    {
                        "filterType": "PERCENT_PRICE",
                        "multiplierUp": "1.0500",
                        "multiplierDown": "0.9500",
                        "multiplierDecimal": "4",
                    },
                ],
                "orderTypes": list(m.order_types),
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "permissionSets": ["GRID", "COPY"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": symbols,
    }


def kline_row(c: Candle) -> list[Any]:
    """One row of ``GET /fapi/v1/klines``: times as ints, money as strings."""
    return [
        c.open_time,
        fmt(c.open),
        fmt(c.high),
        fmt(c.low),
        fmt(c.close),
        fmt(c.volume),
        c.close_time,
        fmt(c.quote_volume),
        c.trades,
        fmt(c.taker_buy_volume),
        fmt(c.taker_buy_quote_volume),
        "0",
    ]


def premium_index(engine: Engine, symbol: str, now_ms: int) -> dict[str, Any]:
    mark = engine.mark[symbol]
    index = engine.index[symbol]  # the mark in the calm market
    return {
        "symbol": symbol,
        "markPrice": fmt(mark),
        "indexPrice": fmt(index),
        "estimatedSettlePrice": fmt(index),
        "lastFundingRate": fmt8(engine.funding_rate()),
        "interestRate": "0.00010000",
        "nextFundingTime": engine.next_funding_ms(now_ms),
        "time": now_ms,
    }


def funding_rate_row(symbol: str, s: FundingSettlement) -> dict[str, Any]:
    """One ``GET /fapi/v1/fundingRate`` row: a symbol's settlement, rate and mark
    with eight decimals as Binance writes them."""
    return {
        "symbol": symbol,
        "fundingRate": f"{s.rate.quantize(EIGHT):f}",
        "fundingTime": s.time,
        "markPrice": f"{s.marks[symbol].quantize(EIGHT):f}",
    }


def book(engine: Engine, symbol: str) -> tuple[Decimal, Decimal]:
    """Best bid/ask: one tick around the mark (calm), around last with a spread
    that widens under stress (harsh market)."""
    return engine.best_bid_ask(symbol)


# --------------------------------------------------------------------- orders
def order_json(o: Order, *, with_time: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price),
        "avgPrice": fmt8(o.avg_price),
        "origQty": fmt(o.orig_qty),
        "executedQty": fmt(o.executed_qty),
        "cumQty": fmt(o.executed_qty),
        "cumQuote": fmt8(o.cum_quote),
        "timeInForce": o.time_in_force,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": o.position_side,
        "stopPrice": fmt(o.stop_price),
        "workingType": o.working_type,
        "priceProtect": False,
        "origType": o.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "updateTime": o.update_time,
    }
    if with_time:
        d["time"] = o.time
    return d


def algo_json(a: AlgoOrder, engine: Engine | None = None) -> dict[str, Any]:
    actual_price = "0"
    actual_qty = "0"
    if engine is not None and a.actual_order_id is not None:
        o = engine.orders[a.actual_order_id]
        actual_price = fmt8(o.avg_price)
        actual_qty = fmt(o.executed_qty)
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": a.position_side,
        "timeInForce": "GTC",
        "quantity": fmt(a.quantity) if a.quantity is not None else "0",
        "algoStatus": a.algo_status,
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id is not None else "",
        "actualPrice": actual_price,
        "actualQty": actual_qty,
        "triggerPrice": fmt(a.trigger_price),
        "price": "0",
        "icebergQuantity": None,
        "tpTriggerPrice": "0",
        "tpPrice": "0",
        "slTriggerPrice": "0",
        "slPrice": "0",
        "tpOrderType": "",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0,
        "failReason": a.fail_reason,
    }


def trade_json(f: Fill) -> dict[str, Any]:
    return {
        "buyer": f.side == "BUY",
        "commission": fmt8(f.commission),
        "commissionAsset": f.commission_asset,
        "id": f.trade_id,
        "maker": f.maker,
        "orderId": f.order_id,
        "price": fmt(f.price),
        "qty": fmt(f.qty),
        "quoteQty": fmt8(f.quote_qty),
        "realizedPnl": fmt8(f.realized_pnl),
        "side": f.side,
        "positionSide": f.position_side,
        "symbol": f.symbol,
        "time": f.time,
    }


# ------------------------------------------------------------------ positions
def _position_numbers(engine: Engine, p: Position) -> dict[str, Decimal]:
    m = engine.markets[p.symbol]
    mark = engine.mark[p.symbol]
    notional = p.amt * mark
    upnl = engine.unrealized_pnl(p.symbol, p.position_side)
    im = abs(notional) / p.leverage
    return {
        "mark": mark,
        "notional": notional,
        "upnl": upnl,
        "im": im,
        "mm": abs(notional) * mmr(m),
    }


def position_risk_json(engine: Engine, p: Position, *, v2: bool = False) -> dict[str, Any]:
    n = _position_numbers(engine, p)
    isolated = p.margin_type == "ISOLATED"
    d: dict[str, Any] = {
        "symbol": p.symbol,
        "positionSide": p.position_side,
        "positionAmt": fmt(p.amt),
        "entryPrice": fmt8(p.entry_price),
        "breakEvenPrice": fmt8(p.entry_price),
        "markPrice": fmt(n["mark"]),
        "unRealizedProfit": fmt8(n["upnl"]),
        "liquidationPrice": fmt8(engine.liquidation_price(p)) if engine.harsh.liquidation else "0",
        "isolatedMargin": fmt8(n["im"] + n["upnl"]) if isolated and p.amt else "0",
        "notional": fmt8(n["notional"]),
        "marginAsset": "USDT",
        "isolatedWallet": fmt8(n["im"]) if isolated and p.amt else "0",
        "initialMargin": fmt8(n["im"]),
        "maintMargin": fmt8(n["mm"]),
        "positionInitialMargin": fmt8(n["im"]),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": p.update_time,
    }
    if v2:
        d.update(
            {
                "leverage": str(p.leverage),
                "marginType": "isolated" if isolated else "cross",
                "isAutoAddMargin": "false",
                "maxNotionalValue": "1000000000",
            }
        )
    return d


def account_json(engine: Engine, *, v2: bool = False) -> dict[str, Any]:
    total_im = ZERO
    total_mm = ZERO
    upnl = ZERO
    positions = []
    # a hedge-mode symbol lists its LONG and SHORT positions instead of BOTH
    for p in (q for s in engine.positions for q in engine.symbol_positions(s)):
        n = _position_numbers(engine, p)
        total_im += n["im"]
        total_mm += n["mm"]
        upnl += n["upnl"]
        if v2 or p.amt != 0:
            row: dict[str, Any] = {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "positionAmt": fmt(p.amt),
                "unrealizedProfit": fmt8(n["upnl"]),
                "isolatedMargin": "0",
                "notional": fmt8(n["notional"]),
                "isolatedWallet": "0",
                "initialMargin": fmt8(n["im"]),
                "maintMargin": fmt8(n["mm"]),
                "updateTime": p.update_time,
            }
            if v2:
                row.update(
                    {
                        "leverage": str(p.leverage),
                        "entryPrice": fmt8(p.entry_price),
                        "isolated": p.margin_type == "ISOLATED",
                        "positionInitialMargin": fmt8(n["im"]),
                        "openOrderInitialMargin": "0",
                        "maxNotional": "1000000000",
                    }
                )
            positions.append(row)
    wallet = engine.wallet_balance
    margin_balance = wallet + upnl
    available = margin_balance - total_im
    asset = {
        "asset": "USDT",
        "walletBalance": fmt8(wallet),
        "unrealizedProfit": fmt8(upnl),
        "marginBalance": fmt8(margin_balance),
        "maintMargin": fmt8(total_mm),
        "initialMargin": fmt8(total_im),
        "positionInitialMargin": fmt8(total_im),
        "openOrderInitialMargin": "0",
        "crossWalletBalance": fmt8(wallet),
        "crossUnPnl": fmt8(upnl),
        "availableBalance": fmt8(available),
        "maxWithdrawAmount": fmt8(available),
        "marginAvailable": True,
        "updateTime": engine.balance_update_time,
    }
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        "totalInitialMargin": fmt8(total_im),
        "totalMaintMargin": fmt8(total_mm),
        "totalWalletBalance": fmt8(wallet),
        "totalUnrealizedProfit": fmt8(upnl),
        "totalMarginBalance": fmt8(margin_balance),
        "totalPositionInitialMargin": fmt8(total_im),
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": fmt8(wallet),
        "totalCrossUnPnl": fmt8(upnl),
        "availableBalance": fmt8(available),
        "maxWithdrawAmount": fmt8(available),
        "assets": [asset],
        "positions": positions,
    }


def balance_json(engine: Engine) -> list[dict[str, Any]]:
    acc = account_json(engine)
    a = acc["assets"][0]
    return [
        {
            "accountAlias": "SgsR",
            "asset": "USDT",
            "balance": a["walletBalance"],
            "crossWalletBalance": a["crossWalletBalance"],
            "crossUnPnl": a["crossUnPnl"],
            "availableBalance": a["availableBalance"],
            "maxWithdrawAmount": a["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": a["updateTime"],
        }
    ]


# ------------------------------------------------------------------ ws events
def ws_order_update(o: Order, exec_type: str, fill: Fill | None, now: int) -> dict[str, Any]:
    liquidation = o.source == "liquidation"  # Binance pushes o/ot LIQUIDATION for it
    payload: dict[str, Any] = {
        "s": o.symbol,
        "c": o.client_order_id,
        "S": o.side,
        "o": "LIQUIDATION" if liquidation else o.type,
        "f": o.time_in_force,
        "q": fmt(o.orig_qty),
        "p": fmt(o.price),
        "ap": fmt8(o.avg_price),
        "sp": fmt(o.stop_price),
        "x": exec_type,
        "X": o.status,
        "i": o.order_id,
        "l": fmt(fill.qty) if fill else "0",
        "z": fmt(o.executed_qty),
        "L": fmt(fill.price) if fill else "0",
        "N": "USDT",
        "n": fmt8(fill.commission) if fill else "0",
        "T": now,
        "t": fill.trade_id if fill else 0,
        "b": "0",
        "a": "0",
        "m": fill.maker if fill else False,
        "R": o.reduce_only,
        "wt": o.working_type,
        "ot": "LIQUIDATION" if liquidation else o.orig_type,
        "ps": o.position_side,
        "cp": o.close_position,
        "rp": fmt8(fill.realized_pnl) if fill else "0",
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": "EXPIRE_MAKER",
        "pm": "NONE",
        "gtd": 0,
    }
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": payload}


def ws_algo_update(a: AlgoOrder, engine: Engine, now: int) -> dict[str, Any]:
    ap = "0"
    aq = "0"
    act = "0"
    if a.actual_order_id is not None:
        o = engine.orders[a.actual_order_id]
        ap = fmt8(o.avg_price)
        aq = fmt(o.executed_qty)
        act = o.type
    payload = {
        "caid": a.client_algo_id,
        "aid": a.algo_id,
        "at": "CONDITIONAL",
        "o": a.order_type,
        "s": a.symbol,
        "S": a.side,
        "ps": a.position_side,
        "f": "GTC",
        "q": fmt(a.quantity) if a.quantity is not None else "0",
        "X": a.algo_status,
        "ai": str(a.actual_order_id) if a.actual_order_id is not None else "",
        "ap": ap,
        "aq": aq,
        "act": act,
        "tp": fmt(a.trigger_price),
        "p": "0",
        "V": "EXPIRE_MAKER",
        "wt": a.working_type,
        "pm": "NONE",
        "cp": a.close_position,
        "pP": a.price_protect,
        "R": a.reduce_only,
        "tt": a.trigger_time,
        "gtd": 0,
        "rm": a.fail_reason,
    }
    return {"e": "ALGO_UPDATE", "T": now, "E": now, "o": payload}


def ws_account_update(
    engine: Engine,
    reason: str,
    symbols: list[str],
    now: int,
    sides: list[str] | None = None,
    balance_change: Decimal = ZERO,
) -> dict[str, Any]:
    """``sides`` pairs with ``symbols`` (hedge mode: the LONG/SHORT side that
    changed); None or empty means BOTH. ``balance_change`` is ``bc`` (funding,
    insurance clear: the change other than trades)."""
    wallet = engine.wallet_balance
    positions = []
    keys = list(zip(symbols, sides, strict=True)) if sides else [(s, "BOTH") for s in symbols]
    for s, ps in keys:
        p = engine.position(s, ps)
        positions.append(
            {
                "s": s,
                "pa": fmt(p.amt),
                "ep": fmt8(p.entry_price),
                "bep": fmt8(p.entry_price),
                "cr": fmt8(p.realized_pnl),
                "up": fmt8(engine.unrealized_pnl(s, ps)),
                "mt": "isolated" if p.margin_type == "ISOLATED" else "cross",
                "iw": "0",
                "ps": ps,
            }
        )
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now,
        "T": now,
        "a": {
            "m": reason,
            "B": [
                {
                    "a": "USDT",
                    "wb": fmt8(wallet),
                    "cw": fmt8(wallet),
                    "bc": fmt8(balance_change) if balance_change else "0",
                }
            ],
            "P": positions,
        },
    }


def ws_mark_price(engine: Engine, symbol: str, now: int) -> dict[str, Any]:
    mark = fmt(engine.mark[symbol])
    index = fmt(engine.index[symbol])  # the mark in the calm market
    return {
        "e": "markPriceUpdate",
        "E": now,
        "s": symbol,
        "p": mark,
        "ap": mark,
        "P": index,
        "i": index,
        "r": fmt8(engine.funding_rate()),
        "T": engine.next_funding_ms(now),
    }


def income_rows(engine: Engine) -> list[dict[str, Any]]:
    """``GET /fapi/v1/income`` rows, oldest first: REALIZED_PNL and COMMISSION of
    every fill, plus the harsh market's FUNDING_FEE and INSURANCE_CLEAR."""
    rows: list[tuple[int, int, dict[str, Any]]] = []
    for f in engine.fills:
        if f.realized_pnl != 0:
            rows.append(
                (
                    f.time,
                    3 * f.trade_id,
                    _income(
                        f.symbol,
                        "REALIZED_PNL",
                        f.realized_pnl,
                        f.time,
                        f.trade_id,
                        str(f.trade_id),
                    ),
                )
            )
        if f.commission != 0:
            rows.append(
                (
                    f.time,
                    3 * f.trade_id + 1,
                    _income(
                        f.symbol, "COMMISSION", -f.commission, f.time, f.trade_id, str(f.trade_id)
                    ),
                )
            )
    for i in engine.incomes:
        info = "FUNDING_FEE" if i.income_type == "FUNDING_FEE" else "INSURANCE_CLEAR"
        rows.append(
            (
                i.time,
                3 * (10**9 + i.income_id) + 2,
                _income(i.symbol, i.income_type, i.amount, i.time, 10**9 + i.income_id, "", info),
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


def _income(
    symbol: str,
    income_type: str,
    amount: Decimal,
    time: int,
    tran_id: int,
    trade_id: str,
    info: str = "",
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "incomeType": income_type,
        "income": fmt8(amount),
        "asset": "USDT",
        "info": info or income_type,
        "time": time,
        "tranId": tran_id,
        "tradeId": trade_id,
    }


def income_json(i: Income) -> dict[str, Any]:
    """One harsh-market income record for the ground truth."""
    return {
        "id": i.income_id,
        "symbol": i.symbol,
        "incomeType": i.income_type,
        "income": fmt8(i.amount),
        "time": i.time,
        "rate": fmt8(i.rate),
        "markPrice": fmt(i.mark),
        "positionAmt": fmt(i.qty),
        "positionSide": i.position_side,
    }


def force_order_json(o: Order) -> dict[str, Any]:
    """A liquidation order as ``GET /fapi/v1/forceOrders`` lists it."""
    d = order_json(o)
    d["time"] = o.time
    return d


def ws_book_ticker(engine: Engine, symbol: str, update_id: int, now: int) -> dict[str, Any]:
    m = engine.markets[symbol]
    bid, ask = book(engine, symbol)
    return {
        "e": "bookTicker",
        "u": update_id,
        "s": symbol,
        "b": fmt(bid),
        "B": fmt(m.min_qty * 100),
        "a": fmt(ask),
        "A": fmt(m.min_qty * 100),
        "T": now,
        "E": now,
    }


def ws_agg_trade(
    symbol: str, agg_id: int, price: Decimal, qty: Decimal, buyer_maker: bool, now: int
) -> dict[str, Any]:
    return {
        "e": "aggTrade",
        "E": now,
        "a": agg_id,
        "s": symbol,
        "p": fmt(price),
        "q": fmt(qty),
        "f": agg_id,
        "l": agg_id,
        "T": now,
        "m": buyer_maker,
    }
