"""Bybit v5 REST API (``/v5/...``, category ``linear``) served with aiohttp.

Same pipeline as the Binance side (:mod:`simulator.rest`): fault injection
(pre), authentication, per-endpoint rate limit, the handler, fault injection
(post). Every answer is HTTP 200 with ``{"retCode", "retMsg", "result",
"retExtInfo", "time"}``; errors carry a non-zero retCode (see
:mod:`simulator.bybit_errors`). Private endpoints send the ``X-Bapi-Limit*``
headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from simulator import bybit_errors as E
from simulator import bybit_formats as BF
from simulator.bybit_venue import BOrder, BybitVenue, _dec, _filter_ok, _str
from simulator.candles import INTERVALS, add_fills
from simulator.errors import ApiError
from simulator.faults import POST_KINDS, PRE_KINDS

if TYPE_CHECKING:
    from simulator.engine import Engine
    from simulator.server import PaperExchange

log = logging.getLogger(__name__)

Params = dict[str, Any]

KLINE_INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
}


@dataclass(frozen=True, slots=True)
class Route:
    handler: Callable[[BybitRest, Params], Any]
    private: bool


class BybitLimiter:
    """Requests per second per (API key, endpoint), with Bybit's limit headers."""

    def __init__(self) -> None:
        self._win: dict[tuple[str, str], tuple[int, int]] = {}

    def charge(self, who: str, path: str, limit: int, now_ms: int) -> tuple[bool, dict[str, str]]:
        sec = now_ms // 1000
        start, n = self._win.get((who, path), (sec, 0))
        if start != sec:
            n = 0
        n += 1
        self._win[(who, path)] = (sec, n)
        headers = {
            "X-Bapi-Limit": str(limit),
            "X-Bapi-Limit-Status": str(max(limit - n, 0)),
            "X-Bapi-Limit-Reset-Timestamp": str((sec + 1) * 1000),
        }
        return n <= limit, headers

    def reset(self) -> None:
        self._win.clear()


def _limit(p: Params, default: int, maximum: int) -> int:
    raw = _str(p, "limit")
    if raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise E.params_error("params error: limit invalid")
    return int(raw)


def _page(p: Params, items: list[Any], default: int, maximum: int) -> tuple[list[Any], str]:
    """Cursor pagination: the cursor is the offset of the next page."""
    limit = _limit(p, default, maximum)
    cursor = _str(p, "cursor")
    if cursor and not cursor.isdigit():
        raise E.params_error("params error: cursor invalid")
    start = int(cursor) if cursor else 0
    page = items[start : start + limit]
    nxt = str(start + limit) if start + limit < len(items) else ""
    return page, nxt


class BybitRest:
    """Handlers for the Bybit endpoints; state lives in the PaperExchange/venue."""

    def __init__(self, sim: PaperExchange, venue: BybitVenue) -> None:
        self.sim = sim
        self.venue = venue

    @property
    def engine(self) -> Engine:
        return self.sim.engine

    def now(self) -> int:
        return self.sim.clock.now_ms()

    # ---- public
    def time(self, p: Params) -> Any:
        now = self.sim.auth_now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def instruments(self, p: Params) -> Any:
        sym = self._category_symbol(p)
        if _str(p, "status") not in ("", "Trading"):
            rows: list[dict[str, Any]] = []
        else:
            rows = [BF.instrument(m) for s, m in self.engine.markets.items() if not sym or s == sym]
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def tickers(self, p: Params) -> Any:
        sym = self._category_symbol(p)
        now = self.now()
        rows = [
            BF.ticker(self.engine, s, self.sim.stats, now)
            for s in self.engine.markets
            if not sym or s == sym
        ]
        return {"category": "linear", "list": rows}

    def kline(self, p: Params) -> Any:
        sym = self._category_symbol(p)
        if not sym:
            raise E.missing("symbol")
        name = KLINE_INTERVALS.get(_str(p, "interval"))
        if name is None:
            raise E.params_error("params error: interval invalid")
        limit = _limit(p, 200, 1000)
        start = _dec(p, "start")
        end = _dec(p, "end")
        s = int(start) if start is not None else None
        e = int(end) if end is not None else None
        if s is not None and e is not None and s > e:
            raise E.params_error("params error: start must be less than end")
        candles = self.engine.history.candles(sym, INTERVALS[name], self.now(), s, e, limit)
        add_fills(candles, self.engine.fills, sym)
        rows = [BF.kline_row(c) for c in reversed(candles)]
        return {"category": "linear", "symbol": sym, "list": rows}

    def funding_history(self, p: Params) -> Any:
        """``GET /v5/market/funding/history``: the symbol's funding settlements
        (harsh market; none in the calm one), **newest first**, as Bybit pages them:
        the last ``limit`` (≤ 200, default 200) up to ``endTime`` (now when absent),
        from ``startTime`` on; ``startTime`` without ``endTime`` is refused."""
        sym = self.venue.symbol(p)
        assert sym is not None  # required: a missing symbol was refused
        start = _dec(p, "startTime")
        end = _dec(p, "endTime")
        if start is not None and end is None:
            raise E.params_error("params error: endTime is required when startTime is given")
        limit = _limit(p, 200, 200)
        until = int(end) if end is not None else self.now()
        rows = [
            BF.funding_history_row(sym, s)
            for s in reversed(self.engine.settlements)
            if s.time <= until and (start is None or s.time >= start)
        ]
        return {"category": "linear", "list": rows[:limit]}

    def _category_symbol(self, p: Params) -> str | None:
        return self.venue.symbol(p, required=False)

    # ---- account
    def wallet_balance(self, p: Params) -> Any:
        if _str(p, "accountType") != "UNIFIED":
            raise E.params_error("accountType only support UNIFIED.")
        return {"list": [BF.wallet(self.engine)]}

    def account_info(self, p: Params) -> Any:
        return {
            "unifiedMarginStatus": 6,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(self.now()),
            "dcpStatus": "OFF",
            "timeWindow": 0,
            "smpGroup": 0,
        }

    def query_api(self, p: Params) -> Any:
        return {
            "id": "1",
            "note": "posguard paper exchange",
            "apiKey": self.sim.api_key,
            "readOnly": 0,
            "secret": "",
            "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
            "ips": ["*"],
            "type": 1,
            "deadlineDay": 90,
            "expiredAt": "",
            "createdAt": "",
            "unified": 0,
            "uta": 1,
            "userID": 1,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
            "parentUid": "0",
            "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
        }

    # ---- positions
    def position_list(self, p: Params) -> Any:
        if _str(p, "category") == "inverse":
            return {"category": "inverse", "list": [], "nextPageCursor": ""}
        sym = self.venue.symbol(p, required=False)
        if not sym and not (_str(p, "settleCoin") or _str(p, "baseCoin")):
            raise E.missing("symbol or settleCoin or baseCoin")
        rows = []
        for s in self.engine.positions:
            if sym:
                if s == sym:  # every row of the symbol, flat ones too
                    rows.extend(self.venue.position_rows(s))
                continue
            # hedge mode: a row per side (positionIdx 1 and 2)
            for pos in self.engine.symbol_positions(s):
                if pos.amt != 0 and not self.venue.position_hidden(s, pos.position_side):
                    rows.append(self.venue.position_row(s, pos.position_side))
        page, nxt = _page(p, rows, 20, 200)
        return {"category": "linear", "list": page, "nextPageCursor": nxt}

    def set_leverage(self, p: Params) -> Any:
        return self.venue.set_leverage(p)

    def switch_mode(self, p: Params) -> Any:
        self.venue.symbol(p, required=False)
        return self.venue.switch_mode(p)

    def trading_stop(self, p: Params) -> Any:
        return self.venue.trading_stop(p)

    # ---- orders
    def create(self, p: Params) -> Any:
        return self.venue.create_order(p)

    def amend(self, p: Params) -> Any:
        return self.venue.amend_order(p)

    def cancel(self, p: Params) -> Any:
        return self.venue.cancel_order(p)

    def cancel_all(self, p: Params) -> Any:
        return self.venue.cancel_all(p)

    def _orders(self, p: Params, open_only: bool) -> list[dict[str, Any]]:
        sym = self.venue.symbol(p, required=False)
        oid = _str(p, "orderId")
        link = _str(p, "orderLinkId")
        if open_only and not (sym or oid or link or _str(p, "settleCoin") or _str(p, "baseCoin")):
            raise E.missing("symbol or settleCoin or baseCoin")
        flt = _str(p, "orderFilter")
        want_status = _str(p, "orderStatus")
        by_id = bool(oid or link)
        rows = []
        records: Iterable[BOrder] = reversed(list(self.venue.orders.values()))
        for b in records:
            if sym and b.symbol != sym:
                continue
            if oid and b.order_id != oid:
                continue
            if link and b.link_id != link:
                continue
            if not _filter_ok(b, flt):
                continue
            trap = self.venue.reported_status(b)
            if trap == "hidden":
                continue
            status = "Created" if trap == "Created" else BF.order_status(self.engine, b)
            if open_only and not by_id and status not in BF.OPEN_STATUSES:
                continue
            if want_status and status != want_status:
                continue
            rows.append(BF.order(self.engine, b, status=status))
        return rows

    def realtime(self, p: Params) -> Any:
        page, nxt = _page(p, self._orders(p, True), 20, 50)
        return {"category": "linear", "list": page, "nextPageCursor": nxt}

    def history(self, p: Params) -> Any:
        page, nxt = _page(p, self._orders(p, False), 20, 50)
        return {"category": "linear", "list": page, "nextPageCursor": nxt}

    def executions(self, p: Params) -> Any:
        sym = self.venue.symbol(p, required=False)
        oid = _str(p, "orderId")
        start = _dec(p, "startTime")
        end = _dec(p, "endTime")
        exec_type = _str(p, "execType")
        rows: list[dict[str, Any]] = []
        venue = self.venue
        if exec_type in ("", "Funding") and not oid:
            # harsh market: funding settlements are executions too
            for i in reversed(self.engine.incomes):
                if i.income_type != "FUNDING_FEE" or (sym and i.symbol != sym):
                    continue
                if (start is not None and i.time < start) or (end is not None and i.time > end):
                    continue
                rows.append(BF.funding_execution(i))
        for f in reversed(self.engine.fills):
            if exec_type == "Funding":
                break
            if sym and f.symbol != sym:
                continue
            if start is not None and f.time < start:
                continue
            if end is not None and f.time > end:
                continue
            o = self.engine.orders[f.order_id]
            b = venue.record_for_order(o)
            if oid and b.order_id != oid:
                continue
            row = BF.execution(self.engine, f, b, o)
            if exec_type and row["execType"] != exec_type:
                continue
            rows.append(row)
        rows.sort(key=lambda r: int(r["execTime"]), reverse=True)
        page, nxt = _page(p, rows, 50, 100)
        return {"category": "linear", "list": page, "nextPageCursor": nxt}


R = BybitRest
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/v5/market/time"): Route(R.time, False),
    ("GET", "/v5/market/instruments-info"): Route(R.instruments, False),
    ("GET", "/v5/market/tickers"): Route(R.tickers, False),
    ("GET", "/v5/market/kline"): Route(R.kline, False),
    ("GET", "/v5/market/mark-price-kline"): Route(R.kline, False),
    ("GET", "/v5/market/funding/history"): Route(R.funding_history, False),
    ("GET", "/v5/account/wallet-balance"): Route(R.wallet_balance, True),
    ("GET", "/v5/account/info"): Route(R.account_info, True),
    ("GET", "/v5/user/query-api"): Route(R.query_api, True),
    ("GET", "/v5/position/list"): Route(R.position_list, True),
    ("POST", "/v5/position/set-leverage"): Route(R.set_leverage, True),
    ("POST", "/v5/position/switch-mode"): Route(R.switch_mode, True),
    ("POST", "/v5/position/trading-stop"): Route(R.trading_stop, True),
    ("POST", "/v5/order/create"): Route(R.create, True),
    ("POST", "/v5/order/amend"): Route(R.amend, True),
    ("POST", "/v5/order/cancel"): Route(R.cancel, True),
    ("POST", "/v5/order/cancel-all"): Route(R.cancel_all, True),
    ("GET", "/v5/order/realtime"): Route(R.realtime, True),
    ("GET", "/v5/order/history"): Route(R.history, True),
    ("GET", "/v5/execution/list"): Route(R.executions, True),
}

_HTTP_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def build_app(sim: PaperExchange, venue: BybitVenue) -> web.Application:
    """The Bybit REST application; all state is read from and written to ``sim``."""
    api = BybitRest(sim, venue)
    limiter = BybitLimiter()
    sim.bybit_limiter = limiter
    app = web.Application(client_max_size=1 << 20)

    def reply(
        result: Any, code: int = 0, msg: str = "OK", headers: dict[str, str] | None = None
    ) -> web.Response:
        text = BF.envelope(result, sim.auth_now_ms(), code, msg, venue.config.ret_code_as_string)
        return web.Response(text=text, status=200, content_type="application/json", headers=headers)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        route = ROUTES.get((method, path))
        sim.stats.requests += 1
        if route is None:
            return web.Response(status=404, text="Not Found")
        raw_query = request.query_string
        raw_body = await request.text() if request.can_read_body else ""
        params: Params = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers: dict[str, str] = {}
        try:
            if method == "POST" and raw_body:
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    raise E.params_error("params error: request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise E.params_error("params error: request body must be an object")
                params.update(body)
            symbol = _str(params, "symbol") or None
            for rule in sim.faults.take(method, path, symbol, PRE_KINDS, params):
                if rule.kind == "latency":
                    await asyncio.sleep(rule.latency_ms / 1000)  # float ok: seconds
                elif rule.kind == "error":
                    raise ApiError(rule.code, rule.msg, 200)
                elif rule.kind == "maintenance":
                    raise E.err(E.SERVER_ERROR, "System is under maintenance.")
                elif rule.kind == "rate_limit":
                    now = sim.auth_now_ms()
                    headers = {
                        "X-Bapi-Limit": str(venue.config.rate_limit_per_s),
                        "X-Bapi-Limit-Status": "0",
                        "X-Bapi-Limit-Reset-Timestamp": str(now + 1000),
                    }
                    raise E.rate_limited()
                elif rule.kind == "http_status":
                    return web.Response(
                        status=rule.status, text=_HTTP_TEXT.get(rule.status, "Server Error")
                    )
            if route.private:
                payload = raw_body if method == "POST" else raw_query
                key = sim.bybit_auth.check_rest(request.headers, payload, sim.auth_now_ms())
                ok, headers = limiter.charge(
                    key, path, venue.config.rate_limit_per_s, sim.auth_now_ms()
                )
                if not ok:
                    raise E.rate_limited()
            sim.engine.poll()
            result = route.handler(api, params)
        except ApiError as exc:
            sim.stats.errors += 1
            code, msg = E.to_bybit(exc)
            return reply({}, code, msg, headers)
        except Exception:  # an engine bug must look like Bybit's 10016, not a hang
            log.exception("internal error on %s %s", method, path)
            return reply({}, E.SERVER_ERROR, "Internal server error.", headers)
        for rule in sim.faults.take(method, path, symbol, POST_KINDS, params):
            if rule.kind == "drop_response":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            if rule.kind == "delay_response":
                await asyncio.sleep(rule.latency_ms / 1000)  # float ok: seconds
        return reply(result, headers=headers)

    if sim.bybit_hub is not None:  # WS paths first: the catch-all below would shadow them
        from simulator.bybit_ws import add_routes

        add_routes(app, sim.bybit_hub)
    app.router.add_route("*", "/v5/{tail:.*}", dispatch)
    return app
