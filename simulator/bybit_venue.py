"""Bybit v5 linear semantics on top of the shared matching engine.

The engine knows Binance-style orders and conditional (algo) orders; this
module keeps what Bybit adds:

* one :class:`BOrder` per Bybit order (string ``orderId``, ``orderLinkId``,
  ``stopOrderType``), pointing at an engine order or an engine algo order. A
  conditional order keeps its ``orderId`` after it triggers (the engine's
  triggered market order is reported through it);
* position-level TP/SL (``/v5/position/trading-stop``, ``stopLoss`` attached to
  an entry): an engine ``closePosition`` algo order, at most one stop-loss and
  one take-profit per symbol, moved in place with :meth:`Engine.amend_algo`.
  An attached stop-loss is placed *before* the entry executes, so the position
  is never without it (ground truth ``unprotectedMs`` stays 0);
* the two Bybit traps of :class:`BybitConfig` (off by default);
* hedge mode (``switch-mode`` mode 3, per symbol or for every USDT symbol):
  ``positionIdx`` 1 is the engine's LONG side, 2 its SHORT side; position TP/SL
  belong to one side.

Every rejection is an :class:`simulator.errors.ApiError` (Bybit retCode or an
engine Binance code that :func:`simulator.bybit_errors.to_bybit` translates).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from simulator import bybit_errors as E
from simulator import bybit_formats as BF
from simulator.engine import AccountEvent, AlgoEvent, Event, OrderEvent
from simulator.errors import ApiError
from simulator.model import AlgoOrder, Order

if TYPE_CHECKING:
    from simulator.engine import Engine
    from simulator.server import PaperExchange

LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
IDX_SIDE = {"0": "BOTH", "1": "LONG", "2": "SHORT"}  # positionIdx -> engine position side


@dataclass(slots=True)
class BybitConfig:
    """Bybit-only switches; all off by default so a calm market stays calm.

    ``created_status_ms``: a new order reports ``orderStatus`` "Created" in
    ``/v5/order/realtime`` and ``/v5/order/history`` for this long.
    ``order_invisible_ms``: a new order is missing from those lists (a lookup by
    id finds nothing) for this long.
    ``position_lag_ms``: after a position opens, ``/v5/position/list`` still
    shows it flat and reduce-only orders / trading-stop answer "zero position"
    (110017 / 10001) for this long.
    ``ret_code_as_string``: send ``"retCode":"0"`` instead of ``0``.
    ``rate_limit_per_s``: requests per second per endpoint and API key
    (10006 beyond it; the X-Bapi-Limit* headers always report it).
    """

    created_status_ms: int = 0
    order_invisible_ms: int = 0
    position_lag_ms: int = 0
    ret_code_as_string: bool = False
    rate_limit_per_s: int = 50


@dataclass(slots=True)
class BOrder:
    """A Bybit order and the engine object behind it."""

    order_id: str
    link_id: str
    symbol: str
    kind: str  # "order" | "conditional" | "tpsl"
    created_wall_ms: int
    last_on_created: Decimal
    engine_order: int | None = None
    engine_algo: int | None = None
    stop_order_type: str = ""  # "" | "Stop" | "StopLoss" | "TakeProfit"
    trigger_by: str = ""
    close_on_trigger: bool = False
    stop_loss: Decimal | None = None  # attached to an entry
    take_profit: Decimal | None = None
    sl_trigger_by: str = ""
    tp_trigger_by: str = ""
    create_type: str = "CreateByUser"
    cancelled_by: str = ""
    silent: bool = False  # no WS updates (an attached stop before its entry is accepted)

    def cancel_type(self, status: str) -> str:
        if status in ("Cancelled", "Deactivated", "PartiallyFilledCanceled"):
            return self.cancelled_by or "CancelByUser"
        return "UNKNOWN"


Publisher = Callable[[str, list[dict[str, Any]]], None]


class BybitVenue:
    """Bybit order records, position TP/SL and traps for one PaperExchange."""

    def __init__(self, sim: PaperExchange, config: BybitConfig | None = None) -> None:
        self.sim = sim
        self.config = config or BybitConfig()
        self.publish: Publisher | None = None  # set by the WS hub: (topic, data rows)
        self.reset()

    def reset(self) -> None:
        self.orders: dict[str, BOrder] = {}
        self.by_link: dict[str, str] = {}
        self.by_engine_order: dict[int, str] = {}
        self.by_engine_algo: dict[int, str] = {}
        # (symbol, "sl"|"tp", position side) -> algo id
        self.position_stops: dict[tuple[str, str, str], int] = {}
        self.position_created: dict[tuple[str, str], int] = {}  # (symbol, position side)
        self._expect_order: BOrder | None = None
        self._expect_algo: BOrder | None = None
        self._held: list[tuple[str, list[dict[str, Any]]]] | None = None
        self._seq = 0

    @property
    def engine(self) -> Engine:
        return self.sim.engine

    def wall_ms(self) -> int:
        return self.sim.clock.now_ms()

    # -------------------------------------------------------------- records
    def _new(self, symbol: str, kind: str, link_id: str = "", **kw: Any) -> BOrder:
        self._seq += 1
        oid = f"{self._seq:08x}-{self.sim.seed & 0xFFFF:04x}-4b0e-8000-{self._seq * 7919:012x}"
        return BOrder(
            order_id=oid,
            link_id=link_id,
            symbol=symbol,
            kind=kind,
            created_wall_ms=self.wall_ms(),
            last_on_created=self.engine.last[symbol],
            **kw,
        )

    def _register(self, b: BOrder) -> None:
        if b.order_id in self.orders:
            return
        self.orders[b.order_id] = b
        if b.link_id:
            self.by_link[b.link_id] = b.order_id
        if b.engine_order is not None:
            self.by_engine_order[b.engine_order] = b.order_id
        if b.engine_algo is not None:
            self.by_engine_algo[b.engine_algo] = b.order_id

    @contextmanager
    def _expect(self, *, order: BOrder | None = None, algo: BOrder | None = None) -> Iterator[None]:
        """Bind the next new engine order/algo to ``order``/``algo`` (events included)."""
        self._expect_order, self._expect_algo = order, algo
        try:
            yield
        finally:
            self._expect_order = self._expect_algo = None

    def record_for_order(self, o: Order) -> BOrder:
        oid = self.by_engine_order.get(o.order_id)
        if oid is not None:
            return self.orders[oid]
        if o.algo_id is not None and o.algo_id in self.by_engine_algo:
            b = self.orders[self.by_engine_algo[o.algo_id]]
            self.by_engine_order[o.order_id] = b.order_id
            return b
        expected = self._expect_order
        if expected is not None and expected.engine_order is None:
            self._expect_order = None
            b = expected
        else:
            b = self._new(o.symbol, "order")  # e.g. a person in the exchange UI
            if o.source == "liquidation":
                b.create_type = "CreateByLiq"
        b.engine_order = o.order_id
        self._register(b)
        return b

    def record_for_algo(self, a: AlgoOrder) -> BOrder:
        oid = self.by_engine_algo.get(a.algo_id)
        if oid is not None:
            return self.orders[oid]
        expected = self._expect_algo
        if expected is not None and expected.engine_algo is None:
            self._expect_algo = None
            b = expected
        else:
            b = self._new(a.symbol, "conditional", stop_order_type="Stop")
        b.engine_algo = a.algo_id
        self._register(b)
        return b

    def find(self, p: dict[str, Any], action: str) -> BOrder:
        oid = _str(p, "orderId")
        link = _str(p, "orderLinkId")
        b: BOrder | None = None
        if oid:
            b = self.orders.get(oid)
        elif link:
            key = self.by_link.get(link)
            b = self.orders.get(key) if key else None
        else:
            raise E.missing("orderId or orderLinkId")
        sym = _str(p, "symbol")
        if b is None or (sym and b.symbol != sym):
            raise E.order_not_exists(action)
        return b

    def is_open(self, b: BOrder) -> bool:
        return BF.order_status(self.engine, b) in BF.OPEN_STATUSES

    # ---------------------------------------------------------------- traps
    def position_hidden(self, symbol: str, ps: str = "BOTH") -> bool:
        lag = self.config.position_lag_ms
        if lag <= 0 or self.engine.position(symbol, ps).amt == 0:
            return False
        opened = self.position_created.get((symbol, ps))
        return opened is not None and self.wall_ms() - opened < lag

    def reported_status(self, b: BOrder) -> str | None:
        """The trap status for ``b`` now: "hidden", "Created" or None (normal)."""
        age = self.wall_ms() - b.created_wall_ms
        if age < self.config.order_invisible_ms:
            return "hidden"
        if age < self.config.created_status_ms:
            return "Created"
        return None

    # ------------------------------------------------------------ orders
    def create_order(self, p: dict[str, Any]) -> dict[str, Any]:
        sym = self.symbol(p)
        assert sym is not None
        side = _side(p)
        otype = _str(p, "orderType")
        if otype not in ("Market", "Limit"):
            raise E.params_error("params error: orderType invalid")
        qty = _dec(p, "qty", required=True)
        assert qty is not None
        price = _dec(p, "price")
        ps = self._position_side(sym, p)
        link = _str(p, "orderLinkId")
        if link:
            if not LINK_ID_RE.match(link):
                raise E.params_error("params error: orderLinkId is invalid")
            if link in self.by_link:
                raise E.duplicate_link_id()
        reduce_only = _bool(p, "reduceOnly")
        close_on_trigger = _bool(p, "closeOnTrigger")
        if (reduce_only or close_on_trigger) and self.position_hidden(sym, ps):
            raise E.reduce_only_zero()
        trigger = _dec(p, "triggerPrice")
        sl = _dec(p, "stopLoss")
        tp = _dec(p, "takeProfit")
        sl = sl if sl else None  # "0" means none
        tp = tp if tp else None
        mode = _str(p, "tpslMode") or "Full"
        if (sl or tp) and mode != "Full":
            raise E.params_error("params error: only tpslMode Full is simulated")
        if trigger is not None:
            if otype != "Market":
                raise E.params_error("params error: conditional limit orders are not simulated")
            if sl or tp:
                raise E.err(
                    110057, "Conditional order or limit order contains TP/SL related params"
                )
            return self._create_conditional(
                p, sym, side, qty, trigger, link, reduce_only, close_on_trigger, ps
            )
        if otype == "Limit" and price is None:
            raise E.params_error("params error: price is required for Limit orders")
        if (sl or tp) and otype != "Market":
            raise E.params_error("params error: TP/SL on limit orders is not simulated")
        tif = {"PostOnly": "GTX", "GTC": "GTC", "IOC": "IOC", "FOK": "FOK"}.get(
            _str(p, "timeInForce") or "GTC", "GTC"
        )
        b = self._new(sym, "order", link, close_on_trigger=close_on_trigger)
        sl_by = _trigger_by(p, "slTriggerBy")
        tp_by = _trigger_by(p, "tpTriggerBy")
        b.stop_loss, b.take_profit, b.sl_trigger_by, b.tp_trigger_by = sl, tp, sl_by, tp_by
        if not (sl or tp):
            self._place_entry(
                b, sym, side, otype, qty, price, reduce_only or close_on_trigger, tif, ps
            )
            return {"orderId": b.order_id, "orderLinkId": b.link_id}
        # Entry with TP/SL: the position stop goes live first; stream messages are held
        # so subscribers see the StopLoss order before the entry's fill, and nothing of
        # a rejected entry.
        self._held = []
        try:
            placed = self._attach_tpsl(sym, side, sl, sl_by, tp, tp_by, ps)
            try:
                self._place_entry(
                    b, sym, side, otype, qty, price, reduce_only or close_on_trigger, tif, ps
                )
            except ApiError:
                for t in placed:
                    assert t.engine_algo is not None
                    self.engine.cancel_algo(algo_id=t.engine_algo)
                raise
            for t in reversed(placed):
                t.silent = False
                self._held.insert(0, ("order", [dict(BF.order(self.engine, t), category="linear")]))
        finally:
            held, self._held = self._held, None
            for topic, rows in held or []:
                self._publish(topic, rows)
        return {"orderId": b.order_id, "orderLinkId": b.link_id}

    def _place_entry(
        self,
        b: BOrder,
        sym: str,
        side: str,
        otype: str,
        qty: Decimal,
        price: Decimal | None,
        reduce_only: bool,
        tif: str,
        ps: str = "BOTH",
    ) -> None:
        with self._expect(order=b):
            self.engine.place_order(
                sym,
                side,
                "MARKET" if otype == "Market" else "LIMIT",
                qty,
                price if otype == "Limit" else None,
                reduce_only=reduce_only,
                client_order_id=b.link_id or None,
                time_in_force=tif,
                position_side=ps,
            )
        self._register(b)

    def _create_conditional(
        self,
        p: dict[str, Any],
        sym: str,
        side: str,
        qty: Decimal,
        trigger: Decimal,
        link: str,
        reduce_only: bool,
        close_on_trigger: bool,
        ps: str = "BOTH",
    ) -> dict[str, Any]:
        direction = _str(p, "triggerDirection")
        if direction not in ("1", "2"):
            raise E.params_error("params error: TriggerDirection invalid")
        rises = direction == "1"
        engine_type = "STOP_MARKET" if (side == "BUY") == rises else "TAKE_PROFIT_MARKET"
        by = _trigger_by(p, "triggerBy")
        b = self._new(
            sym,
            "conditional",
            link,
            stop_order_type="Stop",
            trigger_by=by,
            close_on_trigger=close_on_trigger,
        )
        with self._expect(algo=b), _rising_errors(trigger, self, sym, by, rises):
            self.engine.place_algo(
                sym,
                side,
                engine_type,
                qty,
                trigger,
                reduce_only=reduce_only or close_on_trigger,
                working_type=BF.TRIGGER_BY[by],
                client_algo_id=link or None,
                position_side=ps,
            )
        self._register(b)
        return {"orderId": b.order_id, "orderLinkId": b.link_id}

    def amend_order(self, p: dict[str, Any]) -> dict[str, Any]:
        self.symbol(p)
        b = self.find(p, "replace")
        if not self.is_open(b):
            raise E.order_not_exists("replace")
        if b.engine_algo is None:
            raise E.params_error("params error: only conditional orders can be amended here")
        algo = self.engine.algos[b.engine_algo]
        trigger = _dec(p, "triggerPrice")
        trigger = trigger if trigger else None
        qty = _dec(p, "qty")
        by_raw = _str(p, "triggerBy")
        by = _trigger_by(p, "triggerBy") if by_raw else None
        wt = BF.TRIGGER_BY[by] if by else None
        if b.kind == "tpsl" and qty is not None:
            raise E.params_error("params error: qty of a Full TP/SL order cannot be amended")
        unchanged = (
            (trigger is None or trigger == algo.trigger_price)
            and (qty is None or qty == algo.quantity)
            and (wt is None or wt == algo.working_type)
        )
        if unchanged:
            raise E.params_error(
                "The order remains unchanged as the parameters entered match the existing ones."
            )
        with _rising_errors(
            trigger or algo.trigger_price, self, b.symbol, by or b.trigger_by, algo.rises
        ):
            self.engine.amend_algo(
                b.engine_algo, trigger_price=trigger, quantity=qty, working_type=wt
            )
        if by:
            b.trigger_by = by
        return {"orderId": b.order_id, "orderLinkId": b.link_id}

    def cancel_order(self, p: dict[str, Any]) -> dict[str, Any]:
        self.symbol(p)
        b = self.find(p, "cancel")
        if not self.is_open(b):
            raise E.order_not_exists("cancel")
        self._cancel(b)
        return {"orderId": b.order_id, "orderLinkId": b.link_id}

    def _cancel(self, b: BOrder) -> None:
        if b.engine_algo is not None:
            self.engine.cancel_algo(algo_id=b.engine_algo)
        else:
            assert b.engine_order is not None
            self.engine.cancel_order(b.symbol, order_id=b.engine_order)

    def cancel_all(self, p: dict[str, Any]) -> dict[str, Any]:
        sym = self.symbol(p, required=False)
        if sym is None and not (_str(p, "settleCoin") or _str(p, "baseCoin")):
            raise E.missing("symbol or settleCoin or baseCoin")
        flt = _str(p, "orderFilter")
        out = []
        for b in list(self.orders.values()):
            if sym and b.symbol != sym:
                continue
            if not _filter_ok(b, flt) or not self.is_open(b):
                continue
            self._cancel(b)
            out.append({"orderId": b.order_id, "orderLinkId": b.link_id})
        return {"list": out, "success": "1"}

    # ------------------------------------------------------ position TP/SL
    def _attach_tpsl(
        self,
        sym: str,
        entry_side: str,
        sl: Decimal | None,
        sl_by: str,
        tp: Decimal | None,
        tp_by: str,
        ps: str = "BOTH",
    ) -> list[BOrder]:
        """Make the entry's TP/SL live before the entry executes; returns new records.
        In hedge mode they belong to the entry's position side (idx 1 long, 2 short)."""
        amt = self.engine.position(sym, ps).amt
        if ps != "BOTH":
            long_after = ps == "LONG"
        else:
            long_after = entry_side == "BUY" if amt == 0 else amt > 0
        self._check_tpsl(sym, long_after, sl, sl_by, tp, tp_by)
        exit_side = "SELL" if long_after else "BUY"
        placed = []
        for which, price, by in (("sl", sl, sl_by), ("tp", tp, tp_by)):
            if price is None:
                continue
            new = self._set_position_stop(sym, which, exit_side, price, by, ps, silent=True)
            if new is not None:
                placed.append(new)
        return placed

    def _check_tpsl(
        self,
        sym: str,
        long: bool,
        sl: Decimal | None,
        sl_by: str,
        tp: Decimal | None,
        tp_by: str,
    ) -> None:
        side = "Buy" if long else "Sell"
        if sl is not None:
            base = self.engine.working_price(sym, BF.TRIGGER_BY[sl_by])
            if (long and sl >= base) or (not long and sl <= base):
                rel = "lower" if long else "higher"
                raise E.params_error(
                    f"StopLoss:{BF.fmt(sl)} set for {side} position should {rel} than "
                    f"base_price:{BF.fmt(base)}??LastPrice"
                )
        if tp is not None:
            base = self.engine.working_price(sym, BF.TRIGGER_BY[tp_by])
            if (long and tp <= base) or (not long and tp >= base):
                rel = "higher" if long else "lower"
                raise E.params_error(
                    f"TakeProfit:{BF.fmt(tp)} set for {side} position should {rel} than "
                    f"base_price:{BF.fmt(base)}??LastPrice"
                )

    def _set_position_stop(
        self,
        sym: str,
        which: str,
        exit_side: str,
        price: Decimal,
        by: str,
        ps: str = "BOTH",
        silent: bool = False,
    ) -> BOrder | None:
        """Set or move the position's SL/TP; returns the record when a new one was made."""
        m = self.engine.market(sym)
        if not m.is_tick_multiple(price):
            raise E.params_error("params error: price not match tick size")
        algo_id = self.position_stops.get((sym, which, ps))
        if algo_id is not None:
            algo = self.engine.algos[algo_id]
            if algo.is_open and algo.side == exit_side:
                if algo.trigger_price != price or algo.working_type != BF.TRIGGER_BY[by]:
                    self.engine.amend_algo(
                        algo_id, trigger_price=price, working_type=BF.TRIGGER_BY[by]
                    )
                    self.orders[self.by_engine_algo[algo_id]].trigger_by = by
                return None
            if algo.is_open:
                self.engine.cancel_algo(algo_id=algo_id)
            self.position_stops.pop((sym, which, ps), None)
        b = self._new(
            sym,
            "tpsl",
            stop_order_type="StopLoss" if which == "sl" else "TakeProfit",
            trigger_by=by,
            close_on_trigger=True,
            silent=silent,
        )
        with self._expect(algo=b):
            algo = self.engine.place_algo(
                sym,
                exit_side,
                "STOP_MARKET" if which == "sl" else "TAKE_PROFIT_MARKET",
                None,
                price,
                close_position=True,
                working_type=BF.TRIGGER_BY[by],
                position_side=ps,
            )
        self._register(b)
        self.position_stops[(sym, which, ps)] = algo.algo_id
        return b

    def position_stop(self, sym: str, which: str, ps: str = "BOTH") -> tuple[Decimal | None, str]:
        algo_id = self.position_stops.get((sym, which, ps))
        if algo_id is None:
            return None, ""
        algo = self.engine.algos[algo_id]
        if not algo.is_open:
            return None, ""
        b = self.orders[self.by_engine_algo[algo_id]]
        return algo.trigger_price, b.trigger_by or "LastPrice"

    def trading_stop(self, p: dict[str, Any]) -> dict[str, Any]:
        sym = self.symbol(p)
        assert sym is not None
        ps = self._position_side(sym, p)
        mode = _str(p, "tpslMode") or "Full"
        if mode != "Full":
            raise E.params_error("params error: only tpslMode Full is simulated")
        trailing = _dec(p, "trailingStop")
        if trailing:
            raise E.params_error("params error: trailingStop is not simulated")
        amt = self.engine.position(sym, ps).amt
        if amt == 0 or self.position_hidden(sym, ps):
            raise E.zero_position_tpsl()
        long = amt > 0
        exit_side = "SELL" if long else "BUY"
        sl = _dec(p, "stopLoss")
        tp = _dec(p, "takeProfit")
        sl_by = _trigger_by(p, "slTriggerBy")
        tp_by = _trigger_by(p, "tpTriggerBy")
        self._check_tpsl(sym, long, sl if sl else None, sl_by, tp if tp else None, tp_by)
        for which, price, by in (("sl", sl, sl_by), ("tp", tp, tp_by)):
            if price is None:
                continue
            if price == 0:
                algo_id = self.position_stops.pop((sym, which, ps), None)
                if algo_id is not None and self.engine.algos[algo_id].is_open:
                    self.engine.cancel_algo(algo_id=algo_id)
                continue
            self._set_position_stop(sym, which, exit_side, price, by, ps)
        return {}

    # --------------------------------------------------------- positions
    def set_leverage(self, p: dict[str, Any]) -> dict[str, Any]:
        sym = self.symbol(p)
        assert sym is not None
        buy = _dec(p, "buyLeverage", required=True)
        sell = _dec(p, "sellLeverage", required=True)
        hedge = self.engine.is_hedge(sym)
        if buy != sell and not hedge:  # hedge mode: the long and short sides may differ
            raise E.params_error("buy leverage must equal sell leverage in one-way mode")
        assert buy is not None and sell is not None
        if buy != buy.to_integral_value() or sell != sell.to_integral_value():
            raise E.params_error("params error: the simulator only supports whole leverage")
        if not hedge:
            lev = int(buy)
            if self.engine.positions[sym].leverage == lev:
                raise E.err(E.LEVERAGE_NOT_MODIFIED, "leverage not modified")
            self.engine.set_leverage(sym, lev)
            return {}
        wanted = {"LONG": int(buy), "SHORT": int(sell)}
        if all(self.engine.position(sym, ps).leverage == v for ps, v in wanted.items()):
            raise E.err(E.LEVERAGE_NOT_MODIFIED, "leverage not modified")
        for ps, v in wanted.items():
            self.engine.set_leverage(sym, v, ps)
        return {}

    def switch_mode(self, p: dict[str, Any]) -> dict[str, Any]:
        """Mode 0 (one-way) or 3 (hedge) for ``symbol``, or for every symbol of
        ``coin`` (all simulated symbols settle in USDT)."""
        sym = _str(p, "symbol")
        coin = _str(p, "coin")
        if not (sym or coin):
            raise E.missing("symbol or coin")
        if not sym and coin != "USDT":
            raise E.params_error("params error: coin invalid")
        mode = _str(p, "mode")
        if mode not in ("0", "3"):
            raise E.params_error("params error: mode invalid")
        self.engine.set_position_mode(mode == "3", [sym] if sym else None)
        return {}

    def position_rows(self, sym: str) -> list[dict[str, Any]]:
        """The symbol's rows: one (idx 0), or two in hedge mode (idx 1 and 2)."""
        return [
            self.position_row(sym, pos.position_side) for pos in self.engine.symbol_positions(sym)
        ]

    def position_row(self, sym: str, ps: str = "BOTH") -> dict[str, Any]:
        pos = self.engine.position(sym, ps)
        sl, sl_by = self.position_stop(sym, "sl", ps)
        tp, tp_by = self.position_stop(sym, "tp", ps)
        return BF.position(
            self.engine,
            pos,
            hidden=self.position_hidden(sym, ps),
            stop_loss=sl,
            take_profit=tp,
            sl_trigger_by=sl_by,
            tp_trigger_by=tp_by,
            created_ms=self.position_created.get((sym, ps), pos.update_time),
        )

    def _position_side(self, sym: str, p: dict[str, Any]) -> str:
        """``positionIdx`` as an engine position side, checked against the mode."""
        ps = IDX_SIDE.get(_str(p, "positionIdx") or "0")
        if ps is None:
            raise E.params_error("position idx not match position mode")
        return self.engine.check_position_side(sym, ps)

    # ----------------------------------------------------------- helpers
    def symbol(self, p: dict[str, Any], required: bool = True) -> str | None:
        cat = _str(p, "category")
        if cat != "linear":
            raise E.params_error("params error: category only support linear")
        sym = _str(p, "symbol")
        if not sym:
            if required:
                raise E.missing("symbol")
            return None
        if sym not in self.engine.markets:
            raise E.params_error("params error: symbol invalid")
        return sym

    # ------------------------------------------------------------ events
    def on_event(self, event: Event) -> None:
        """Engine listener: keep records in sync and push private WS topics."""
        if isinstance(event, OrderEvent):
            o = event.order
            b = self.record_for_order(o)
            if event.fill is not None:
                row = BF.execution(self.engine, event.fill, b, o)
                self._publish("execution", [row])
                self._publish("execution.fast", [row])
            if o.algo_id is not None and event.exec_type == "NEW":
                return  # the conditional order's "Triggered" update already went out
            self._publish_order(b)
        elif isinstance(event, AlgoEvent):
            a = event.algo
            b = self.record_for_algo(a)
            if not a.is_open:
                for key, algo_id in list(self.position_stops.items()):
                    if algo_id == a.algo_id:
                        del self.position_stops[key]
                        pos = self.engine.position(a.symbol, a.position_side)
                        if a.algo_status in ("CANCELED", "EXPIRED") and pos.amt == 0:
                            b.cancelled_by = "CancelByTpSlTsClear"  # the position closed
            self._publish_order(b)
        elif isinstance(event, AccountEvent):
            rows = []
            for sym, ps in event.keys():
                pos = self.engine.position(sym, ps)
                if pos.amt != 0 and (sym, ps) not in self.position_created:
                    self.position_created[(sym, ps)] = self.wall_ms()
                elif pos.amt == 0:
                    self.position_created.pop((sym, ps), None)
                rows.append(self.position_row(sym, ps))
            if rows:
                self._publish("position", rows)
            funding = [
                BF.funding_execution(i) for i in event.incomes if i.income_type == "FUNDING_FEE"
            ]
            if funding:
                self._publish("execution", funding)
            self._publish("wallet", [BF.wallet(self.engine)])

    def _publish_order(self, b: BOrder) -> None:
        if not b.silent:
            self._publish("order", [dict(BF.order(self.engine, b), category="linear")])

    def _publish(self, topic: str, rows: list[dict[str, Any]]) -> None:
        if self._held is not None:
            self._held.append((topic, rows))
            return
        if self.publish is None:
            return
        if topic in ("execution", "execution.fast", "position"):
            rows = [dict(r, category="linear") for r in rows]
        self.publish(topic, rows)

    def truth(self) -> dict[str, Any]:
        """Bybit extras for ``ground_truth()``: records and position TP/SL."""
        stops = {}
        for (sym, which, ps), algo_id in self.position_stops.items():
            a = self.engine.algos[algo_id]
            if a.is_open:
                # one-way keys stay "SYMBOL:sl"; hedge mode adds the side
                name = f"{sym}:{which}" if ps == "BOTH" else f"{sym}:{which}:{ps}"
                stops[name] = {
                    "algoId": algo_id,
                    "triggerPrice": BF.fmt(a.trigger_price),
                }
        return {
            "orders": [
                {
                    "orderId": b.order_id,
                    "orderLinkId": b.link_id,
                    "symbol": b.symbol,
                    "kind": b.kind,
                    "stopOrderType": b.stop_order_type,
                    "orderStatus": BF.order_status(self.engine, b),
                    "engineOrderId": b.engine_order,
                    "engineAlgoId": b.engine_algo,
                }
                for b in self.orders.values()
            ],
            "positionStops": stops,
            "config": {
                "created_status_ms": self.config.created_status_ms,
                "order_invisible_ms": self.config.order_invisible_ms,
                "position_lag_ms": self.config.position_lag_ms,
                "ret_code_as_string": self.config.ret_code_as_string,
                "rate_limit_per_s": self.config.rate_limit_per_s,
            },
        }


@contextmanager
def _rising_errors(
    trigger: Decimal, venue: BybitVenue, sym: str, by: str, rises: bool
) -> Iterator[None]:
    """Turn the engine's -2021 (would trigger now) into Bybit's 110092/110093."""
    try:
        yield
    except ApiError as exc:
        if exc.code != -2021:
            raise
        current = venue.engine.working_price(sym, BF.TRIGGER_BY.get(by, "CONTRACT_PRICE"))
        t, c = BF.fmt(trigger), BF.fmt(current)
        if rises:
            raise E.err(
                E.EXPECT_RISING, f"expect Rising, but trigger_price[{t}] <= current[{c}]??{by}"
            ) from None
        raise E.err(
            E.EXPECT_FALLING, f"expect Falling, but trigger_price[{t}] >= current[{c}]??{by}"
        ) from None


def _filter_ok(b: BOrder, flt: str) -> bool:
    if not flt:
        return True
    if flt == "Order":
        return b.kind == "order"
    if flt == "StopOrder":
        return b.kind in ("conditional", "tpsl")
    if flt == "tpslOrder":
        return b.kind == "tpsl"
    return False


def _str(p: dict[str, Any], name: str) -> str:
    v = p.get(name)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _dec(p: dict[str, Any], name: str, required: bool = False) -> Decimal | None:
    raw = _str(p, name)
    if raw == "":
        if required:
            raise E.missing(name)
        return None
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise E.params_error(f"params error: {name} invalid") from None
    if not value.is_finite() or value < 0:
        raise E.params_error(f"params error: {name} invalid")
    return value


def _bool(p: dict[str, Any], name: str) -> bool:
    v = p.get(name)
    if isinstance(v, bool):
        return v
    return _str(p, name).lower() in ("true", "1")


def _side(p: dict[str, Any]) -> str:
    side = _str(p, "side")
    if side not in BF.ENGINE_SIDE:
        raise E.params_error("params error: side invalid")
    return BF.ENGINE_SIDE[side]


def _trigger_by(p: dict[str, Any], name: str) -> str:
    by = _str(p, name) or "LastPrice"
    if by not in BF.TRIGGER_BY:
        raise E.params_error(f"params error: {name} invalid")
    return by
