"""Binance USD-M REST API (``/fapi/...``) served with aiohttp.

One catch-all handler dispatches on ``(method, path)`` so every request goes
through the same pipeline, in Binance's order: fault injection (pre),
request-weight limit, authentication, the engine call, fault injection (post).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from simulator import errors
from simulator import formats as F
from simulator.candles import INTERVALS, add_fills
from simulator.clock import wall_ms
from simulator.errors import ApiError
from simulator.faults import POST_KINDS, PRE_KINDS
from simulator.ratelimit import RateLimitError

if TYPE_CHECKING:
    from simulator.engine import Engine
    from simulator.server import PaperExchange

log = logging.getLogger(__name__)

Params = dict[str, str]
Handler = Callable[["RestApi", Params], Any]

NONE, USER_STREAM, SIGNED = "NONE", "USER_STREAM", "SIGNED"


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    security: str
    weight: int
    weight_no_symbol: int | None = None
    weight_fn: Callable[[Params], int] | None = None  # weight that depends on params


# ----------------------------------------------------------------- param parsing
def _dec(p: Params, name: str, required: bool = False) -> Decimal | None:
    raw = p.get(name)
    if raw is None or raw == "":
        if required:
            raise errors.mandatory_param(name)
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite():
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _int(p: Params, name: str, required: bool = False) -> int | None:
    raw = p.get(name)
    if raw is None or raw == "":
        if required:
            raise errors.mandatory_param(name)
        return None
    if not raw.lstrip("-").isdigit():
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.")
    return int(raw)


def _bool(p: Params, name: str) -> bool:
    raw = p.get(name)
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low not in ("true", "false"):
        raise errors.bad_param(name)
    return low == "true"


def _req(p: Params, name: str) -> str:
    raw = p.get(name)
    if raw is None or raw == "":
        raise errors.mandatory_param(name)
    return raw


def _symbol(api: RestApi, p: Params, required: bool = True) -> str | None:
    raw = p.get("symbol")
    if raw is None or raw == "":
        if required:
            raise errors.mandatory_param("symbol")
        return None
    sym = raw.upper()
    if sym not in api.engine.markets:
        raise errors.invalid_symbol()
    return sym


KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1500


def klines_weight(p: Params) -> int:
    """Binance's weight for klines by ``limit``: <100: 1, <500: 2, <=1000: 5, else 10."""
    raw = p.get("limit") or ""
    # Charged before validation, so a malformed limit costs the default's weight.
    limit = int(raw) if raw.isdigit() else KLINES_DEFAULT_LIMIT
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _position_side(api: RestApi, sym: str, p: Params) -> str:
    """The order's ``positionSide`` checked against the account's mode (-4061);
    hedge mode refuses ``reduceOnly`` (-1106): the exit side itself reduces."""
    ps = api.engine.check_position_side(sym, p.get("positionSide", "BOTH"))
    if ps != "BOTH" and _bool(p, "reduceOnly"):
        raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
    return ps


# ---------------------------------------------------------------------- the API
class RestApi:
    """Handlers for the Binance endpoints; state lives in the owning PaperExchange."""

    def __init__(self, sim: PaperExchange) -> None:
        self.sim = sim

    @property
    def engine(self) -> Engine:
        return self.sim.engine

    def now(self) -> int:
        return self.sim.clock.now_ms()

    # ---- public market data
    def ping(self, p: Params) -> Any:
        return {}

    def time(self, p: Params) -> Any:
        return {"serverTime": self.sim.auth_now_ms()}

    def exchange_info(self, p: Params) -> Any:
        return F.exchange_info(self.engine.markets, self.now(), self.sim.limiter.limit)

    def premium_index(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        now = self.now()
        if sym:
            return F.premium_index(self.engine, sym, now)
        return [F.premium_index(self.engine, s, now) for s in self.engine.markets]

    def funding_rate(self, p: Params) -> Any:
        """``GET /fapi/v1/fundingRate``: the funding settlements (harsh market; none
        in the calm one) of ``symbol`` (every symbol when absent), oldest first,
        ``startTime``/``endTime`` inclusive. Binance's paging: with ``startTime`` the
        first ``limit`` from it, otherwise the last ``limit`` (default 100, max 1000)."""
        sym = _symbol(self, p, required=False)
        start = _int(p, "startTime")
        end = _int(p, "endTime")
        limit = _int(p, "limit") or 100
        if limit < 1:
            raise errors.invalid_param_value("limit")
        limit = min(limit, 1000)
        rows = [
            F.funding_rate_row(symbol, s)
            for s in self.engine.settlements
            if (start is None or s.time >= start) and (end is None or s.time <= end)
            for symbol in ([sym] if sym else self.engine.markets)
        ]
        return rows[:limit] if start is not None else rows[-limit:]

    def ticker_24hr(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        if sym:
            return self.sim.stats.ticker(self.engine, sym, self.now())
        return [self.sim.stats.ticker(self.engine, s, self.now()) for s in self.engine.markets]

    def ticker_price(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        now = self.now()

        def one(s: str) -> dict[str, Any]:
            return {"symbol": s, "price": F.fmt(self.engine.last[s]), "time": now}

        return one(sym) if sym else [one(s) for s in self.engine.markets]

    def book_ticker(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        now = self.now()

        def one(s: str) -> dict[str, Any]:
            bid, ask = F.book(self.engine, s)
            qty = F.fmt(self.engine.markets[s].min_qty * 100)
            return {
                "symbol": s,
                "bidPrice": F.fmt(bid),
                "bidQty": qty,
                "askPrice": F.fmt(ask),
                "askQty": qty,
                "time": now,
                "lastUpdateId": now,
            }

        return one(sym) if sym else [one(s) for s in self.engine.markets]

    def depth(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        m = self.engine.markets[sym]
        bid, ask = F.book(self.engine, sym)
        limit = _int(p, "limit") or 20
        qty = F.fmt(m.min_qty * 100)
        bids = [
            [F.fmt(bid - m.tick_size * i), qty] for i in range(limit) if bid - m.tick_size * i > 0
        ]
        asks = [[F.fmt(ask + m.tick_size * i), qty] for i in range(limit)]
        now = self.now()
        return {"lastUpdateId": now, "E": now, "T": now, "bids": bids, "asks": asks}

    def klines(self, p: Params) -> Any:
        """Candles from the recorded marks (see :mod:`simulator.candles`)."""
        sym = _symbol(self, p)
        assert sym is not None
        interval = INTERVALS.get(_req(p, "interval"))
        if interval is None:
            raise errors.invalid_interval()
        limit = _int(p, "limit")
        if limit is None:
            limit = KLINES_DEFAULT_LIMIT
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            raise errors.invalid_param_value("limit")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        if start is not None and end is not None and start > end:
            raise errors.start_after_end()
        candles = self.engine.history.candles(sym, interval, self.now(), start, end, limit)
        add_fills(candles, self.engine.fills, sym)
        return [F.kline_row(c) for c in candles]

    # ---- user data stream
    def listen_key_post(self, p: Params) -> Any:
        return {"listenKey": self.sim.new_listen_key()}

    def listen_key_put(self, p: Params) -> Any:
        key = p.get("listenKey") or self.sim.current_listen_key()
        if key is None or not self.sim.touch_listen_key(key):
            raise ApiError(-1125, "This listenKey does not exist.")
        return {"listenKey": key}

    def listen_key_delete(self, p: Params) -> Any:
        key = p.get("listenKey") or self.sim.current_listen_key()
        if key is not None:
            self.sim.close_listen_key(key)
        return {}

    # ---- account
    def position_risk(self, p: Params, v2: bool) -> Any:
        sym = _symbol(self, p, required=False)
        rows = []
        for s in self.engine.positions:
            if sym and s != sym:
                continue
            # hedge mode: a LONG and a SHORT row per symbol instead of BOTH
            for pos in self.engine.symbol_positions(s):
                # v3 lists only symbols with a position or open orders; v2 lists all
                if v2 or pos.amt != 0 or self.engine.open_orders(s) or sym:
                    rows.append(F.position_risk_json(self.engine, pos, v2=v2))
        return rows

    def position_risk_v2(self, p: Params) -> Any:
        return self.position_risk(p, True)

    def position_risk_v3(self, p: Params) -> Any:
        return self.position_risk(p, False)

    def leverage_bracket(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        out = []
        for s, m in self.engine.markets.items():
            if sym and s != sym:
                continue
            out.append(
                {
                    "symbol": s,
                    "notionalCoef": "1.0",
                    "brackets": [
                        {
                            "bracket": 1,
                            "initialLeverage": m.max_leverage,
                            "notionalCap": "1000000000",
                            "notionalFloor": "0",
                            "maintMarginRatio": F.fmt(F.mmr(m)),
                            "cum": "0",
                        }
                    ],
                }
            )
        return out[0] if sym else out

    def account_v2(self, p: Params) -> Any:
        return F.account_json(self.engine, v2=True)

    def account_v3(self, p: Params) -> Any:
        return F.account_json(self.engine, v2=False)

    def balance(self, p: Params) -> Any:
        return F.balance_json(self.engine)

    def commission_rate(self, p: Params) -> Any:
        sym = _symbol(self, p)
        cfg = self.engine.config
        return {
            "symbol": sym,
            "makerCommissionRate": F.fmt(cfg.maker_fee),
            "takerCommissionRate": F.fmt(cfg.taker_fee),
        }

    def set_leverage(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        lev = _int(p, "leverage", required=True)
        assert lev is not None
        pos = self.engine.set_leverage(sym, lev)
        return {"leverage": pos.leverage, "maxNotionalValue": "1000000000", "symbol": sym}

    def set_margin_type(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        self.engine.set_margin_type(sym, _req(p, "marginType"))
        return {"code": 200, "msg": "success"}

    def position_side_get(self, p: Params) -> Any:
        # Binance's mode is per account: every symbol is in it
        return {"dualSidePosition": bool(self.engine.hedge_symbols)}

    def position_side_post(self, p: Params) -> Any:
        _req(p, "dualSidePosition")
        self.engine.set_position_mode(_bool(p, "dualSidePosition"))
        return {"code": 200, "msg": "success"}

    # ---- orders
    def order_post(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        ps = _position_side(self, sym, p)
        if _bool(p, "closePosition"):
            raise ApiError(-1106, "Parameter 'closePosition' sent when not required.")
        order = self.engine.place_order(
            sym,
            _req(p, "side").upper(),
            _req(p, "type").upper(),
            _dec(p, "quantity"),
            _dec(p, "price"),
            reduce_only=_bool(p, "reduceOnly"),
            client_order_id=p.get("newClientOrderId"),
            time_in_force=p.get("timeInForce", "GTC").upper(),
            position_side=ps,
        )
        return F.order_json(order, with_time=False)

    def order_get(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        order = self.engine.find_order(sym, _int(p, "orderId"), p.get("origClientOrderId"))
        return F.order_json(order)

    def order_delete(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        order = self.engine.cancel_order(sym, _int(p, "orderId"), p.get("origClientOrderId"))
        return F.order_json(order, with_time=False)

    def open_order(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        order = self.engine.find_order(sym, _int(p, "orderId"), p.get("origClientOrderId"))
        if not order.is_open:
            raise ApiError(-2013, "Order does not exist.")
        return F.order_json(order)

    def open_orders(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        return [F.order_json(o) for o in self.engine.open_orders(sym)]

    def _window(self, p: Params, items: list[Any], time_of: Callable[[Any], int]) -> list[Any]:
        start = _int(p, "startTime")
        end = _int(p, "endTime")
        limit = min(_int(p, "limit") or 500, 1000)
        if start is not None:
            items = [i for i in items if time_of(i) >= start]
        if end is not None:
            items = [i for i in items if time_of(i) <= end]
        return items[-limit:]

    def all_orders(self, p: Params) -> Any:
        sym = _symbol(self, p)
        orders = self.engine.all_orders(sym)
        oid = _int(p, "orderId")
        if oid is not None:
            orders = [o for o in orders if o.order_id >= oid]
        return [F.order_json(o) for o in self._window(p, orders, lambda o: o.time)]

    def user_trades(self, p: Params) -> Any:
        sym = _symbol(self, p)
        fills = [f for f in self.engine.fills if f.symbol == sym]
        oid = _int(p, "orderId")
        if oid is not None:
            fills = [f for f in fills if f.order_id == oid]
        from_id = _int(p, "fromId")
        if from_id is not None:
            fills = [f for f in fills if f.trade_id >= from_id]
        return [F.trade_json(f) for f in self._window(p, fills, lambda f: f.time)]

    def income(self, p: Params) -> Any:
        """``GET /fapi/v1/income``: REALIZED_PNL, COMMISSION, and (harsh market)
        FUNDING_FEE and INSURANCE_CLEAR rows, oldest first; ``limit`` default 100."""
        sym = _symbol(self, p, required=False)
        kind = p.get("incomeType")
        rows = [
            r
            for r in F.income_rows(self.engine)
            if (not sym or r["symbol"] == sym) and (not kind or r["incomeType"] == kind)
        ]
        start = _int(p, "startTime")
        end = _int(p, "endTime")
        if start is not None:
            rows = [r for r in rows if r["time"] >= start]
        if end is not None:
            rows = [r for r in rows if r["time"] <= end]
        limit = min(_int(p, "limit") or 100, 1000)
        return rows[:limit]

    def force_orders(self, p: Params) -> Any:
        """``GET /fapi/v1/forceOrders``: the account's liquidation orders (harsh market)."""
        sym = _symbol(self, p, required=False)
        close_type = p.get("autoCloseType")
        if close_type not in (None, "", "LIQUIDATION", "ADL"):
            raise errors.bad_param("autoCloseType")
        orders = [
            o
            for o in self.engine.orders.values()
            if o.source == "liquidation" and (not sym or o.symbol == sym)
        ]
        if close_type == "ADL":
            orders = []
        return [F.force_order_json(o) for o in self._window(p, orders, lambda o: o.time)]

    def all_open_orders_delete(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        self.engine.cancel_all_orders(sym)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ---- algo orders
    def algo_post(self, p: Params) -> Any:
        algo_type = _req(p, "algoType").upper()
        if algo_type != "CONDITIONAL":
            raise errors.bad_param("algoType")
        sym = _symbol(self, p)
        assert sym is not None
        ps = _position_side(self, sym, p)
        order_type = _req(p, "type").upper()
        if order_type in ("STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
            raise ApiError(-1116, "Invalid orderType.")
        working_type = p.get("workingType", "CONTRACT_PRICE").upper()
        if working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise errors.bad_param("workingType")
        algo = self.engine.place_algo(
            sym,
            _req(p, "side").upper(),
            order_type,
            _dec(p, "quantity"),
            _dec(p, "triggerPrice", required=True),
            reduce_only=_bool(p, "reduceOnly"),
            close_position=_bool(p, "closePosition"),
            working_type=working_type,
            client_algo_id=p.get("clientAlgoId"),
            price_protect=_bool(p, "priceProtect"),
            position_side=ps,
        )
        return F.algo_json(algo, self.engine)

    def algo_get(self, p: Params) -> Any:
        algo = self.engine.find_algo(_int(p, "algoId"), p.get("clientAlgoId"))
        return F.algo_json(algo, self.engine)

    def algo_delete(self, p: Params) -> Any:
        algo = self.engine.cancel_algo(_int(p, "algoId"), p.get("clientAlgoId"))
        return {
            "algoId": algo.algo_id,
            "clientAlgoId": algo.client_algo_id,
            "code": "200",
            "msg": "success",
        }

    def open_algos(self, p: Params) -> Any:
        sym = _symbol(self, p, required=False)
        return [F.algo_json(a, self.engine) for a in self.engine.open_algos(sym)]

    def all_algos(self, p: Params) -> Any:
        sym = _symbol(self, p)
        algos = self.engine.all_algos(sym)
        return [
            F.algo_json(a, self.engine) for a in self._window(p, algos, lambda a: a.create_time)
        ]

    def algo_open_delete(self, p: Params) -> Any:
        sym = _symbol(self, p)
        assert sym is not None
        self.engine.cancel_all_algos(sym)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}


R = RestApi
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/fapi/v1/ping"): Route(R.ping, NONE, 1),
    ("GET", "/fapi/v1/time"): Route(R.time, NONE, 1),
    ("GET", "/fapi/v1/exchangeInfo"): Route(R.exchange_info, NONE, 1),
    ("GET", "/fapi/v1/premiumIndex"): Route(R.premium_index, NONE, 1, 10),
    # Binance counts it against a 500 / 5 min / IP limit of its own; one unit here
    ("GET", "/fapi/v1/fundingRate"): Route(R.funding_rate, NONE, 1),
    ("GET", "/fapi/v1/ticker/24hr"): Route(R.ticker_24hr, NONE, 1, 40),
    ("GET", "/fapi/v1/ticker/price"): Route(R.ticker_price, NONE, 1, 2),
    ("GET", "/fapi/v2/ticker/price"): Route(R.ticker_price, NONE, 1, 2),
    ("GET", "/fapi/v1/ticker/bookTicker"): Route(R.book_ticker, NONE, 2, 5),
    ("GET", "/fapi/v1/depth"): Route(R.depth, NONE, 2),
    ("GET", "/fapi/v1/klines"): Route(R.klines, NONE, 5, weight_fn=klines_weight),
    ("POST", "/fapi/v1/listenKey"): Route(R.listen_key_post, USER_STREAM, 1),
    ("PUT", "/fapi/v1/listenKey"): Route(R.listen_key_put, USER_STREAM, 1),
    ("DELETE", "/fapi/v1/listenKey"): Route(R.listen_key_delete, USER_STREAM, 1),
    ("GET", "/fapi/v2/positionRisk"): Route(R.position_risk_v2, SIGNED, 5),
    ("GET", "/fapi/v3/positionRisk"): Route(R.position_risk_v3, SIGNED, 5),
    ("GET", "/fapi/v1/leverageBracket"): Route(R.leverage_bracket, SIGNED, 1),
    ("GET", "/fapi/v2/account"): Route(R.account_v2, SIGNED, 5),
    ("GET", "/fapi/v3/account"): Route(R.account_v3, SIGNED, 5),
    ("GET", "/fapi/v2/balance"): Route(R.balance, SIGNED, 5),
    ("GET", "/fapi/v3/balance"): Route(R.balance, SIGNED, 5),
    ("GET", "/fapi/v1/commissionRate"): Route(R.commission_rate, SIGNED, 20),
    ("POST", "/fapi/v1/leverage"): Route(R.set_leverage, SIGNED, 1),
    ("POST", "/fapi/v1/marginType"): Route(R.set_margin_type, SIGNED, 1),
    ("GET", "/fapi/v1/positionSide/dual"): Route(R.position_side_get, SIGNED, 30),
    ("POST", "/fapi/v1/positionSide/dual"): Route(R.position_side_post, SIGNED, 1),
    ("POST", "/fapi/v1/order"): Route(R.order_post, SIGNED, 1),
    ("GET", "/fapi/v1/order"): Route(R.order_get, SIGNED, 1),
    ("DELETE", "/fapi/v1/order"): Route(R.order_delete, SIGNED, 1),
    ("GET", "/fapi/v1/openOrder"): Route(R.open_order, SIGNED, 1),
    ("GET", "/fapi/v1/openOrders"): Route(R.open_orders, SIGNED, 1, 40),
    ("GET", "/fapi/v1/allOrders"): Route(R.all_orders, SIGNED, 5),
    ("GET", "/fapi/v1/userTrades"): Route(R.user_trades, SIGNED, 5),
    ("DELETE", "/fapi/v1/allOpenOrders"): Route(R.all_open_orders_delete, SIGNED, 1),
    ("GET", "/fapi/v1/income"): Route(R.income, SIGNED, 30),
    ("GET", "/fapi/v1/forceOrders"): Route(R.force_orders, SIGNED, 20, 50),
    ("POST", "/fapi/v1/algoOrder"): Route(R.algo_post, SIGNED, 1),
    ("GET", "/fapi/v1/algoOrder"): Route(R.algo_get, SIGNED, 1),
    ("DELETE", "/fapi/v1/algoOrder"): Route(R.algo_delete, SIGNED, 1),
    ("GET", "/fapi/v1/openAlgoOrders"): Route(R.open_algos, SIGNED, 1, 40),
    ("GET", "/fapi/v1/allAlgoOrders"): Route(R.all_algos, SIGNED, 5),
    ("DELETE", "/fapi/v1/algoOpenOrders"): Route(R.algo_open_delete, SIGNED, 1),
}


def _json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error_response(exc: ApiError, used: int | None) -> web.Response:
    headers = {}
    if used is not None:
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    if isinstance(exc, RateLimitError):
        headers["Retry-After"] = str(exc.retry_after_s)
    return _json_response(exc.body(), exc.status, headers)


_HTTP_TEXT = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def build_app(sim: PaperExchange) -> web.Application:
    """The REST application; all state is read from and written to ``sim``."""
    api = RestApi(sim)
    app = web.Application(client_max_size=1 << 20)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        method = request.method
        path = request.path
        route = ROUTES.get((method, path))
        sim.stats.requests += 1
        if route is None:
            if any(p == path for (_, p) in ROUTES):
                return _json_response({"code": -1, "msg": "Method not allowed."}, 405)
            return web.Response(status=404, text="Not Found")
        raw_query = request.query_string
        raw_body = await request.text() if request.can_read_body else ""
        params: Params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if raw_body:
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        symbol = params.get("symbol")
        ip = request.remote or "unknown"
        used: int | None = None
        try:
            for rule in sim.faults.take(method, path, symbol, PRE_KINDS, params):
                if rule.kind == "latency":
                    await asyncio.sleep(rule.latency_ms / 1000)  # float ok: seconds
                elif rule.kind == "error":
                    raise ApiError(rule.code, rule.msg, rule.status)
                elif rule.kind == "maintenance":
                    raise errors.maintenance()
                elif rule.kind == "rate_limit":
                    # The ban ends when the fault does (60 s for one bounded by a count).
                    left = rule.left_ms(wall_ms())
                    left_ms = 60_000 if left is None else left
                    base = (
                        errors.banned(sim.auth_now_ms() + left_ms)
                        if rule.status == 418
                        else errors.too_many_requests(sim.limiter.limit)
                    )
                    raise RateLimitError(base, max(1, (left_ms + 999) // 1000))
                elif rule.kind == "http_status":
                    return web.Response(
                        status=rule.status, text=_HTTP_TEXT.get(rule.status, "Server Error")
                    )
            weight = route.weight
            if route.weight_fn is not None:
                weight = route.weight_fn(params)
            elif route.weight_no_symbol is not None and not symbol:
                weight = route.weight_no_symbol
            used = sim.limiter.charge(ip, weight)
            if route.security == SIGNED:
                sim.auth.check_signed(
                    request.headers.get("X-MBX-APIKEY"),
                    raw_query,
                    raw_body,
                    params,
                    sim.auth_now_ms(),
                )
            elif route.security == USER_STREAM:
                sim.auth.check_key(request.headers.get("X-MBX-APIKEY"))
            sim.engine.poll()
            body = route.handler(api, params)
        except ApiError as exc:
            sim.stats.errors += 1
            return _error_response(exc, used)
        except Exception:  # an engine bug must look like Binance's -1000, not a hang
            log.exception("internal error on %s %s", method, path)
            return _error_response(errors.unknown(), used)
        for rule in sim.faults.take(method, path, symbol, POST_KINDS, params):
            if rule.kind == "drop_response":
                # The request took effect; the client never learns it (ambiguous outcome).
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            if rule.kind == "delay_response":
                await asyncio.sleep(rule.latency_ms / 1000)  # float ok: seconds
        return _json_response(body, 200, {"X-MBX-USED-WEIGHT-1M": str(used)})

    app.router.add_route("*", "/fapi/{tail:.*}", dispatch)
    app.router.add_route("*", "/sapi/{tail:.*}", dispatch)
    return app


def new_listen_key() -> str:
    return secrets.token_urlsafe(45)[:60]
