"""Admin API (JSON over HTTP, separate port) mirroring PaperExchange's methods.

Decimal fields may be sent as JSON strings or numbers; numbers are parsed
straight into Decimal (never float). Errors come back as ``{"error": "..."}``
with HTTP 400.

Routes:
  GET  /health                      -> {"ok": true}
  GET  /state                       -> ground truth (see PaperExchange.ground_truth)
  POST /price      {"symbol","price","pin"?}  (pins it: the price path leaves it alone
                                              until released; "pin": false sets it once)
  POST /price/release {"symbol"?}              (the price path moves it again; all if none)
  POST /prices {"symbol","last"?,"mark"?,"index"?}   (set them exactly; harsh market)
  POST /price/wick {"symbol","price"}          (last trades there for one update, then back)
  GET|POST /harsh {"preset"?: "harsh"|"calm", field: value, ...}   (harsh-market switches)
  GET  /walk ; POST /walk/pause ; POST /walk/resume   (what holds prices; hold all / let go)
  POST /price/history {"symbol","points":[[time_ms, price], ...]}   (past marks, for klines)
  POST /clock/advance {"ms"}
  POST /position/open  {"symbol","side","quantity"}
  POST /position/close {"symbol", "positionSide"?}   (hedge mode: both sides unless given)
  POST /position/mode  {"hedge": bool, "symbol"?}  (hedge/one-way; refused like the venue)
  POST /order/cancel   {"order_id"}          (orderId or algoId)
  GET  /faults ; POST /faults {kind, endpoint, symbol, count, duration_ms, latency_ms,
                               code, msg, status, probability}
  DELETE /faults ; DELETE /faults/{id}
  POST /ws/drop   {"kind": "all"|"market"|"user", "refuse_ms": 0}
  GET|POST /config {field: value, ...}
  POST /deposit  {"amount"}
  POST /reset
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator import formats as F
from simulator.errors import ApiError

if TYPE_CHECKING:
    from simulator.server import PaperExchange


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=str), status=status, content_type="application/json"
    )


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text:
        return {}
    data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _num(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def build_admin_app(sim: PaperExchange) -> web.Application:
    """Admin application bound to ``sim``."""
    app = web.Application()

    def route(
        fn: Callable[[web.Request, dict[str, Any]], Awaitable[Any] | Any],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = await _body(request)
                result = fn(request, body)
                if hasattr(result, "__await__"):
                    result = await result
                return _ok(result)
            except ApiError as exc:
                return _ok({"error": exc.msg, "code": exc.code}, 400)
            except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
                return _ok({"error": f"{type(exc).__name__}: {exc}"}, 400)

        return handler

    def price(_: web.Request, b: dict[str, Any]) -> Any:
        pin = b.get("pin", True)
        if not isinstance(pin, bool):
            raise ValueError("pin must be true or false")
        symbol = str(b["symbol"]).upper()
        if pin:
            sim.pin_price(symbol, _num(b["price"]))
        else:
            sim.set_price(symbol, _num(b["price"]))
        return {
            "symbol": symbol,
            "markPrice": F.fmt(sim.engine.mark[symbol]),
            "pinned": symbol in sim.pinned,
        }

    def prices(_: web.Request, b: dict[str, Any]) -> Any:
        symbol = str(b["symbol"]).upper()
        kw = {k: _num(b[k]) for k in ("last", "mark", "index") if b.get(k) is not None}
        if not kw:
            raise ValueError("give at least one of last, mark, index")
        sim.set_prices(symbol, **kw)
        e = sim.engine
        return {
            "symbol": symbol,
            "lastPrice": F.fmt(e.last[symbol]),
            "markPrice": F.fmt(e.mark[symbol]),
            "indexPrice": F.fmt(e.index[symbol]),
        }

    def wick(_: web.Request, b: dict[str, Any]) -> Any:
        symbol = str(b["symbol"]).upper()
        sim.wick(symbol, _num(b["price"]))
        return {"symbol": symbol, "lastPrice": F.fmt(sim.engine.last[symbol])}

    def harsh(request: web.Request, b: dict[str, Any]) -> Any:
        if request.method == "POST":
            fields_ = dict(b)
            name = fields_.pop("preset", None)
            for k, v in list(fields_.items()):
                if isinstance(v, Decimal) and isinstance(getattr(sim.harsh, k, None), bool):
                    fields_[k] = bool(v)
            return sim.harden(str(name) if name is not None else None, **fields_)
        return sim.harsh.to_dict()

    def release(_: web.Request, b: dict[str, Any]) -> Any:
        sym = b.get("symbol")
        return {"released": sim.release_price(str(sym) if sym else None), **sim.price_holds()}

    def walk(request: web.Request, b: dict[str, Any]) -> Any:
        if request.method == "POST":
            sim.pause_walk(request.path.endswith("/pause"))
        return sim.price_holds()

    def history(_: web.Request, b: dict[str, Any]) -> Any:
        points: list[tuple[int, Decimal | str]] = []
        for t, p in b["points"]:
            ms = _num(t)
            if ms != ms.to_integral_value():
                raise ValueError(f"time must be integer epoch ms, got {t!r}")
            points.append((int(ms), _num(p)))
        held = sim.load_history(str(b["symbol"]), points)
        return {"symbol": str(b["symbol"]).upper(), "loaded": len(points), "points": held}

    def advance(_: web.Request, b: dict[str, Any]) -> Any:
        return {"timeMs": sim.advance(int(b["ms"]))}

    def open_pos(_: web.Request, b: dict[str, Any]) -> Any:
        return F.order_json(
            sim.open_position(str(b["symbol"]), str(b["side"]), _num(b["quantity"]))
        )

    def close_pos(_: web.Request, b: dict[str, Any]) -> Any:
        ps = b.get("positionSide")
        order = sim.close_position(str(b["symbol"]), str(ps) if ps else None)
        return F.order_json(order) if order else {"closed": False}

    def position_mode(_: web.Request, b: dict[str, Any]) -> Any:
        hedge = b["hedge"]
        if not isinstance(hedge, bool):
            raise ValueError("hedge must be true or false")
        sym = b.get("symbol")
        sim.set_position_mode(hedge, str(sym) if sym else None)
        return {"hedgeSymbols": sorted(sim.engine.hedge_symbols)}

    def cancel(_: web.Request, b: dict[str, Any]) -> Any:
        res = sim.cancel_order(int(b["order_id"]))
        return F.order_json(res) if hasattr(res, "order_id") else F.algo_json(res, sim.engine)  # type: ignore[arg-type]

    def faults_list(_: web.Request, b: dict[str, Any]) -> Any:
        return [r.to_dict() for r in sim.faults.rules]

    def faults_add(_: web.Request, b: dict[str, Any]) -> Any:
        kw = {k: v for k, v in b.items() if k != "kind"}
        for k in ("count", "duration_ms", "latency_ms", "code", "status"):
            if k in kw and kw[k] is not None:
                kw[k] = int(kw[k])
        if "probability" in kw:
            kw["probability"] = float(kw["probability"])  # float ok: not money
        return sim.add_fault(str(b["kind"]), **kw).to_dict()

    def faults_clear(_: web.Request, b: dict[str, Any]) -> Any:
        sim.clear_faults()
        return {"cleared": True}

    def faults_remove(request: web.Request, b: dict[str, Any]) -> Any:
        return {"removed": sim.faults.remove(int(request.match_info["id"]))}

    def ws_drop(_: web.Request, b: dict[str, Any]) -> Any:
        n = sim.drop_websockets(str(b.get("kind", "all")), int(b.get("refuse_ms", 0)))
        return {"dropped": n}

    def config(request: web.Request, b: dict[str, Any]) -> Any:
        if request.method == "POST" and b:
            return sim.configure(**b)
        return sim.config_dict()

    def deposit(_: web.Request, b: dict[str, Any]) -> Any:
        sim.deposit(_num(b["amount"]))
        return {"walletBalance": F.fmt8(sim.engine.wallet_balance)}

    def reset(_: web.Request, b: dict[str, Any]) -> Any:
        sim.reset()
        return {"reset": True}

    app.router.add_get("/health", route(lambda r, b: {"ok": True}))
    app.router.add_get("/state", route(lambda r, b: sim.ground_truth()))
    app.router.add_post("/price", route(price))
    app.router.add_post("/price/history", route(history))
    app.router.add_post("/price/release", route(release))
    app.router.add_post("/prices", route(prices))
    app.router.add_post("/price/wick", route(wick))
    app.router.add_get("/harsh", route(harsh))
    app.router.add_post("/harsh", route(harsh))
    app.router.add_get("/walk", route(walk))
    app.router.add_post("/walk/pause", route(walk))
    app.router.add_post("/walk/resume", route(walk))
    app.router.add_post("/clock/advance", route(advance))
    app.router.add_post("/position/open", route(open_pos))
    app.router.add_post("/position/close", route(close_pos))
    app.router.add_post("/position/mode", route(position_mode))
    app.router.add_post("/order/cancel", route(cancel))
    app.router.add_get("/faults", route(faults_list))
    app.router.add_post("/faults", route(faults_add))
    app.router.add_delete("/faults", route(faults_clear))
    app.router.add_delete("/faults/{id}", route(faults_remove))
    app.router.add_post("/ws/drop", route(ws_drop))
    app.router.add_get("/config", route(config))
    app.router.add_post("/config", route(config))
    app.router.add_post("/deposit", route(deposit))
    app.router.add_post("/reset", route(reset))
    return app
