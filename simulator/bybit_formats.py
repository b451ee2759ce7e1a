"""Bybit v5 JSON shapes built from engine state (all money as strings).

Pure functions: the engine and the venue's order records in, dicts out. Field
names and value spellings follow Bybit's v5 docs for ``category=linear``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from simulator import formats as F
from simulator.candles import Candle
from simulator.markets import Market
from simulator.model import ZERO, AlgoOrder, Fill, FundingSettlement, Income, Order, Position

if TYPE_CHECKING:
    from simulator.bybit_venue import BOrder
    from simulator.engine import Engine

fmt = F.fmt
SIDE = {"BUY": "Buy", "SELL": "Sell"}
POSITION_IDX = {"BOTH": 0, "LONG": 1, "SHORT": 2}  # engine position side -> positionIdx
ENGINE_SIDE = {"Buy": "BUY", "Sell": "SELL"}
# IndexPrice triggers on the engine's index (the mark in the calm market)
TRIGGER_BY = {"MarkPrice": "MARK_PRICE", "LastPrice": "CONTRACT_PRICE", "IndexPrice": "INDEX_PRICE"}
OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered", "Triggered", "Created"})


def envelope(
    result: Any, now_ms: int, code: int = 0, msg: str = "OK", as_string: bool = False
) -> str:
    """The ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` body."""
    body = {
        "retCode": str(code) if as_string else code,
        "retMsg": msg,
        "result": result if result is not None else {},
        "retExtInfo": {},
        "time": now_ms,
    }
    return json.dumps(body, separators=(",", ":"))


# ------------------------------------------------------------------ market data
def instrument(m: Market) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "launchTime": "1585526400000",
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(m.price_precision),
        "leverageFilter": {
            "minLeverage": "1",
            "maxLeverage": f"{m.max_leverage}.00",
            "leverageStep": "0.01",
        },
        "priceFilter": {
            "minPrice": fmt(m.tick_size),
            "maxPrice": fmt(m.tick_size * 10_000_000),
            "tickSize": fmt(m.tick_size),
        },
        "lotSizeFilter": {
            "maxOrderQty": fmt(m.max_qty),
            "maxMktOrderQty": fmt(m.max_qty),
            "minOrderQty": fmt(m.min_qty),
            "qtyStep": fmt(m.step_size),
            "postOnlyMaxOrderQty": fmt(m.max_qty),
            "minNotionalValue": fmt(m.min_notional),
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": m.quote,
        "copyTrading": "both",
        "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375",
        "isPreListing": False,
        "preListingInfo": None,
    }


def ticker(engine: Engine, symbol: str, stats: Any, now_ms: int) -> dict[str, Any]:
    """A linear ticker; ``stats`` is the server's since-start 24h figures."""
    st = stats.symbols[symbol]
    last = engine.last[symbol]
    mark = engine.mark[symbol]
    bid, ask = F.book(engine, symbol)
    size = fmt(engine.markets[symbol].min_qty * 100)
    pct = ((last - st.open) / st.open).quantize(Decimal("0.000001")) if st.open else ZERO
    return {
        "symbol": symbol,
        "lastPrice": fmt(last),
        "indexPrice": fmt(engine.index[symbol]),
        "markPrice": fmt(mark),
        "prevPrice24h": fmt(st.open),
        "price24hPcnt": fmt(pct),
        "highPrice24h": fmt(st.high),
        "lowPrice24h": fmt(st.low),
        "prevPrice1h": fmt(st.open),
        "openInterest": "0",
        "openInterestValue": "0",
        "turnover24h": F.fmt8(st.quote_volume),
        "volume24h": fmt(st.volume),
        "fundingRate": fmt(engine.funding_rate()),
        "nextFundingTime": str(engine.next_funding_ms(now_ms)),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": size,
        "bid1Price": fmt(bid),
        "ask1Price": fmt(ask),
        "bid1Size": size,
        "basis": "",
    }


def kline_row(c: Candle) -> list[str]:
    """``[startTime, open, high, low, close, volume, turnover]``, all strings."""
    return [
        str(c.open_time),
        fmt(c.open),
        fmt(c.high),
        fmt(c.low),
        fmt(c.close),
        fmt(c.volume),
        F.fmt8(c.quote_volume),
    ]


# --------------------------------------------------------------------- account
def wallet(engine: Engine) -> dict[str, Any]:
    """The UNIFIED account entry with its USDT coin."""
    wallet_bal = engine.wallet_balance
    upnl = engine.total_unrealized()
    im = ZERO
    mm = ZERO
    for pos in engine.all_positions():
        if pos.amt != 0:
            notional = abs(pos.amt) * engine.mark[pos.symbol]
            im += notional / pos.leverage
            mm += notional * F.mmr(engine.markets[pos.symbol])
    equity = wallet_bal + upnl
    available = engine.available_balance()
    e8 = F.fmt8
    coin = {
        "coin": "USDT",
        "equity": e8(equity),
        "usdValue": e8(equity),
        "walletBalance": e8(wallet_bal),
        "free": "",
        "locked": "0",
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "availableToWithdraw": e8(max(available, ZERO)),
        "availableToBorrow": "",
        "accruedInterest": "0",
        "totalOrderIM": "0",
        "totalPositionIM": e8(im),
        "totalPositionMM": e8(mm),
        "unrealisedPnl": e8(upnl),
        "cumRealisedPnl": e8(sum((p.realized_pnl for p in engine.all_positions()), ZERO)),
        "bonus": "0",
        "marginCollateral": True,
        "collateralSwitch": True,
    }
    return {
        "accountType": "UNIFIED",
        "accountIMRate": e8(im / equity) if equity > 0 else "0",
        "accountMMRate": e8(mm / equity) if equity > 0 else "0",
        "totalEquity": e8(equity),
        "totalWalletBalance": e8(wallet_bal),
        "totalMarginBalance": e8(equity),
        "totalAvailableBalance": e8(max(available, ZERO)),
        "totalPerpUPL": e8(upnl),
        "totalInitialMargin": e8(im),
        "totalMaintenanceMargin": e8(mm),
        "accountLTV": "0",
        "coin": [coin],
    }


def position(
    engine: Engine,
    pos: Position,
    *,
    hidden: bool,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    sl_trigger_by: str,
    tp_trigger_by: str,
    created_ms: int,
) -> dict[str, Any]:
    """One position-list row: ``positionIdx`` 0 (one-way), 1 (hedge long) or 2 (hedge short).

    ``hidden``: report the position as flat (the position-lag trap).
    """
    amt = ZERO if hidden else pos.amt
    mark = engine.mark[pos.symbol]
    m = engine.markets[pos.symbol]
    side = "Buy" if amt > 0 else ("Sell" if amt < 0 else "")
    size = abs(amt)
    value = size * pos.entry_price if amt else ZERO
    upnl = amt * (mark - pos.entry_price) if amt else ZERO
    im = size * mark / pos.leverage if amt else ZERO
    mm = size * mark * F.mmr(m) if amt else ZERO
    liq = ""
    if engine.harsh.liquidation:  # the price the engine liquidates at
        lp = engine.liquidation_price(pos) if amt else ZERO
        liq = fmt(lp) if lp > 0 else ""
    elif amt and pos.leverage > 0:
        liq_p = pos.entry_price * (1 - Decimal(1) / pos.leverage + F.mmr(m)) if amt > 0 else None
        if amt < 0:
            liq_p = pos.entry_price * (1 + Decimal(1) / pos.leverage - F.mmr(m))
        if liq_p is not None and liq_p > 0:
            liq = fmt(m.round_price(liq_p))
    return {
        "positionIdx": POSITION_IDX[pos.position_side],
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": pos.symbol,
        "side": side,
        "size": fmt(size) if amt else "0",
        "avgPrice": F.fmt8(pos.entry_price) if amt else "0",
        "positionValue": F.fmt8(value),
        "tradeMode": 0,
        "autoAddMargin": 0,
        "positionStatus": "Normal",
        "leverage": str(pos.leverage),
        "markPrice": fmt(mark),
        "liqPrice": liq,
        "bustPrice": "",
        "positionIM": F.fmt8(im),
        "positionMM": F.fmt8(mm),
        "positionBalance": F.fmt8(im),
        "takeProfit": fmt(take_profit) if (take_profit is not None and amt) else "",
        "stopLoss": fmt(stop_loss) if (stop_loss is not None and amt) else "",
        "trailingStop": "0",
        "sessionAvgPrice": "",
        "delta": "",
        "gamma": "",
        "vega": "",
        "theta": "",
        "unrealisedPnl": F.fmt8(upnl),
        "curRealisedPnl": F.fmt8(pos.realized_pnl),
        "cumRealisedPnl": F.fmt8(pos.realized_pnl),
        "adlRankIndicator": 2 if amt else 0,
        "createdTime": str(created_ms),
        "updatedTime": str(pos.update_time or created_ms),
        "seq": pos.update_time,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "tpslMode": "Full",
        "slTriggerBy": sl_trigger_by if stop_loss is not None else "",
        "tpTriggerBy": tp_trigger_by if take_profit is not None else "",
    }


# ----------------------------------------------------------------------- orders
def _order_status(o: Order) -> str:
    st = o.status
    if st == "NEW":
        return "New"
    if st == "PARTIALLY_FILLED":
        return "PartiallyFilled"
    if st == "FILLED":
        return "Filled"
    if st == "REJECTED":
        return "Rejected"
    return "PartiallyFilledCanceled" if o.executed_qty > 0 else "Cancelled"


def _trigger_by_name(working_type: str, preferred: str) -> str:
    if working_type == "CONTRACT_PRICE":
        return "LastPrice"
    if working_type == "INDEX_PRICE":
        return "IndexPrice"
    return "IndexPrice" if preferred == "IndexPrice" else "MarkPrice"


def order_status(engine: Engine, b: BOrder) -> str:
    if b.engine_algo is not None:
        a = engine.algos[b.engine_algo]
        if a.algo_status == "NEW":
            return "Untriggered"
        if a.algo_status in ("CANCELED", "EXPIRED", "REJECTED"):
            return "Deactivated"
        if a.actual_order_id is None:
            return "Triggered"
        st = _order_status(engine.orders[a.actual_order_id])
        return "Triggered" if st == "New" else st
    assert b.engine_order is not None
    return _order_status(engine.orders[b.engine_order])


def order(engine: Engine, b: BOrder, *, status: str | None = None) -> dict[str, Any]:
    """An order record as ``/v5/order/realtime`` and the ``order`` topic send it."""
    algo: AlgoOrder | None = None
    exe: Order | None = None
    if b.engine_algo is not None:
        algo = engine.algos[b.engine_algo]
        if algo.actual_order_id is not None:
            exe = engine.orders[algo.actual_order_id]
    else:
        assert b.engine_order is not None
        exe = engine.orders[b.engine_order]
    st = status or order_status(engine, b)
    filled = exe.executed_qty if exe else ZERO
    cum_value = exe.cum_quote if exe else ZERO
    fee = _fees(engine, exe) if (exe is not None and exe.fill_ids) else ZERO
    if algo is not None:
        qty = algo.quantity if algo.quantity is not None else ZERO
        side = algo.side
        price = ZERO
        trigger = fmt(algo.trigger_price)
        direction = 1 if algo.rises else 2
        trigger_by = _trigger_by_name(algo.working_type, b.trigger_by)
        position_side = algo.position_side
        reduce_only = algo.reduce_only or algo.close_position
        close_on_trigger = b.close_on_trigger or algo.close_position
        created = algo.create_time
        updated = max(algo.update_time, exe.update_time if exe else 0)
        order_type = "Market"
        tif = "IOC"
    else:
        assert exe is not None
        qty = exe.orig_qty
        side = exe.side
        price = exe.price
        trigger = "0"
        direction = 0
        trigger_by = ""
        position_side = exe.position_side
        reduce_only = exe.reduce_only
        close_on_trigger = b.close_on_trigger
        created = exe.time
        updated = exe.update_time
        order_type = "Market" if exe.type == "MARKET" else "Limit"
        tif = {"GTX": "PostOnly"}.get(exe.time_in_force, exe.time_in_force)
        if order_type == "Market":
            tif = "IOC"
    open_ = st in OPEN_STATUSES
    leaves = max(qty - filled, ZERO) if open_ else ZERO
    avg = (cum_value / filled) if filled else ZERO
    return {
        "orderId": b.order_id,
        "orderLinkId": b.link_id,
        "blockTradeId": "",
        "symbol": b.symbol,
        "price": fmt(price) if price else "0",
        "qty": fmt(qty) if qty else "0",
        "side": SIDE[side],
        "isLeverage": "",
        "positionIdx": POSITION_IDX[position_side],
        "orderStatus": st,
        "createType": b.create_type,
        "cancelType": b.cancel_type(st),
        "rejectReason": "EC_NoError",
        "avgPrice": F.fmt8(avg) if filled else "",
        "leavesQty": fmt(leaves) if leaves else "0",
        "leavesValue": F.fmt8(leaves * price) if (leaves and price) else "0",
        "cumExecQty": fmt(filled) if filled else "0",
        "cumExecValue": F.fmt8(cum_value) if filled else "0",
        "cumExecFee": F.fmt8(fee) if filled else "0",
        "timeInForce": tif,
        "orderType": order_type,
        "stopOrderType": b.stop_order_type,
        "orderIv": "",
        "triggerPrice": trigger,
        "takeProfit": fmt(b.take_profit) if b.take_profit is not None else "",
        "stopLoss": fmt(b.stop_loss) if b.stop_loss is not None else "",
        "tpTriggerBy": b.tp_trigger_by if b.take_profit is not None else "",
        "slTriggerBy": b.sl_trigger_by if b.stop_loss is not None else "",
        "triggerDirection": direction,
        "triggerBy": trigger_by,
        "lastPriceOnCreated": fmt(b.last_on_created),
        "reduceOnly": reduce_only,
        "closeOnTrigger": close_on_trigger,
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "tpslMode": "Full" if (b.stop_loss is not None or b.take_profit is not None) else "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "placeType": "",
        "createdTime": str(created),
        "updatedTime": str(updated),
    }


def _fees(engine: Engine, o: Order) -> Decimal:
    fills = engine.fills
    total = ZERO
    for tid in o.fill_ids:
        # trade ids are 1, 2, 3... in append order, so a fill sits at index id - 1
        f = fills[tid - 1] if 0 < tid <= len(fills) else None
        if f is None or f.trade_id != tid:
            f = next(x for x in fills if x.trade_id == tid)
        total += f.commission
    return total


def execution(engine: Engine, f: Fill, b: BOrder | None, o: Order) -> dict[str, Any]:
    """One ``/v5/execution/list`` row (also the ``execution`` topic's data)."""
    return {
        "symbol": f.symbol,
        "orderType": "Market" if o.type == "MARKET" else "Limit",
        "underlyingPrice": "",
        "orderLinkId": b.link_id if b else "",
        "side": SIDE[f.side],
        "indexPrice": "",
        "orderId": b.order_id if b else str(o.order_id),
        "stopOrderType": b.stop_order_type if b else "UNKNOWN",
        "leavesQty": fmt(max(o.orig_qty - o.executed_qty, ZERO)) if o.is_open else "0",
        "execTime": str(f.time),
        "feeCurrency": "",
        "isMaker": f.maker,
        "execFee": F.fmt8(f.commission),
        "feeRate": fmt(engine.config.maker_fee if f.maker else engine.config.taker_fee),
        "execId": f"{f.trade_id:08d}-0000-4000-8000-{f.order_id:012d}",
        "tradeIv": "",
        "blockTradeId": "",
        "markPrice": fmt(engine.mark[f.symbol]),
        "execPrice": fmt(f.price),
        "markIv": "",
        "orderQty": fmt(o.orig_qty),
        "orderPrice": fmt(o.price) if o.price else "0",
        "execValue": F.fmt8(f.quote_qty),
        "execType": "BustTrade" if o.source == "liquidation" else "Trade",
        "execQty": fmt(f.qty),
        "closedSize": fmt(f.qty) if f.realized_pnl != 0 or o.reduce_only else "0",
        "seq": f.trade_id,
    }


def funding_execution(i: Income) -> dict[str, Any]:
    """A funding settlement as an ``execType: Funding`` execution row (harsh market).

    ``execFee`` is what the account paid (negative: received), ``execPrice`` and
    ``markPrice`` the mark, ``execQty`` the position size, ``side`` the position's
    direction (Buy long, Sell short). ``feeRate`` is the rate as the position saw it,
    signed like ``execFee`` (``execFee = execValue × feeRate``): the market's rate for
    a long, its negation for a short. So it is in the real Funding executions on
    record (Bybit's example on its pre-upgrade execution page, the one in ccxt's
    ``bybit.parse_income``): ``feeRate`` has ``execFee``'s sign whatever the side.
    The market's rate is in ``/v5/market/funding/history``, never here.
    """
    size = abs(i.qty)
    return {
        "symbol": i.symbol,
        "orderType": "UNKNOWN",
        "underlyingPrice": "",
        "orderLinkId": "",
        "side": "Buy" if i.qty > 0 else "Sell",
        "indexPrice": "",
        "orderId": f"funding-{i.income_id:08d}",
        "stopOrderType": "UNKNOWN",
        "leavesQty": "0",
        "execTime": str(i.time),
        "feeCurrency": "",
        "isMaker": False,
        "execFee": F.fmt8(-i.amount),
        "feeRate": fmt(i.rate if i.qty > 0 else -i.rate),
        "execId": f"{i.income_id:08d}-0000-4000-8000-f0000000f000",
        "tradeIv": "",
        "blockTradeId": "",
        "markPrice": fmt(i.mark),
        "execPrice": fmt(i.mark),
        "markIv": "",
        "orderQty": "0",
        "orderPrice": "0",
        "execValue": F.fmt8(size * i.mark),
        "execType": "Funding",
        "execQty": fmt(size),
        "closedSize": "0",
        "seq": i.income_id,
    }


def funding_history_row(symbol: str, s: FundingSettlement) -> dict[str, Any]:
    """One ``GET /v5/market/funding/history`` row: the market's rate of a settlement."""
    return {"symbol": symbol, "fundingRate": fmt(s.rate), "fundingRateTimestamp": str(s.time)}
