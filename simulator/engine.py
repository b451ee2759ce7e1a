"""The matching engine: a pure, synchronous, deterministic linear-perpetual venue.

No I/O and no host clock: time comes from the injected clock, prices from
:meth:`Engine.set_price`. All money is ``Decimal``. Every rejection raises
:class:`simulator.errors.ApiError` with Binance's code, so the REST layer only
translates. State changes are reported to listeners as events (see
:class:`OrderEvent`, :class:`AlgoEvent`, :class:`AccountEvent`).

Fill model: market orders fill at the mark price moved against the taker by
``slippage_bps`` (rounded to tick), optionally split into ``fill_parts``
executions; limit orders rest and fill at their price (maker) when the mark
crosses them. Positions are one-way (``positionSide=BOTH``) unless a symbol is in
hedge mode (Binance ``dualSidePosition``, Bybit mode 3): then it has a LONG and a
SHORT position, every order names its side, and an order on the exit side of its
position side (SELL LONG, BUY SHORT) only reduces that side.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from simulator import errors
from simulator.candles import PriceHistory
from simulator.clock import Clock
from simulator.harsh import HarshConfig, maint_margin_ratio
from simulator.markets import Market
from simulator.model import (
    ZERO,
    AlgoOrder,
    Episode,
    Fill,
    FundingSettlement,
    Income,
    Order,
    Position,
)
from simulator.triggers import TriggerBook

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
EIGHT_DP = Decimal("0.00000001")
BPS = Decimal(10000)
STOP_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
PROTECTIVE_TYPES = ("STOP_MARKET",)
# INDEX_PRICE is the engine's name for Bybit's triggerBy=IndexPrice (Binance has no such
# workingType; its REST layer only passes MARK_PRICE / CONTRACT_PRICE)
WORKING_TYPES = ("MARK_PRICE", "CONTRACT_PRICE", "INDEX_PRICE")
BOTH, LONG, SHORT = "BOTH", "LONG", "SHORT"
HEDGE_SIDES = (LONG, SHORT)


@dataclass(slots=True)
class OrderEvent:
    """An order changed: ``exec_type`` is NEW, TRADE, CANCELED, EXPIRED (Binance ``x``),
    or CALCULATED (the fill of a liquidation order, harsh market only)."""

    order: Order
    exec_type: str
    fill: Fill | None
    time: int


@dataclass(slots=True)
class AlgoEvent:
    """An algo order changed status (Binance ALGO_UPDATE)."""

    algo: AlgoOrder
    time: int


@dataclass(slots=True)
class AccountEvent:
    """Balance and/or the positions of ``symbols`` changed (Binance ACCOUNT_UPDATE).

    ``sides`` pairs with ``symbols`` (the position side that changed); empty means
    BOTH for every symbol (one-way mode)."""

    reason: str
    symbols: list[str]
    time: int
    sides: list[str] = field(default_factory=list)
    # harsh market: funding / insurance-clear records behind this balance change
    incomes: list[Income] = field(default_factory=list)
    balance_change: Decimal = ZERO

    def keys(self) -> list[tuple[str, str]]:
        """``(symbol, position side)`` of every changed position."""
        if not self.sides:
            return [(s, BOTH) for s in self.symbols]
        return list(zip(self.symbols, self.sides, strict=True))


Event = OrderEvent | AlgoEvent | AccountEvent


@dataclass(slots=True)
class EngineConfig:
    """Tunable behaviour of the engine. Fee rates and slippage are fractions/bps."""

    taker_fee: Decimal = Decimal("0.0005")
    maker_fee: Decimal = Decimal("0.0002")
    slippage_bps: Decimal = ZERO
    fill_parts: int = 1
    # Share of an opening market order the book can fill (thin liquidity); the
    # rest expires, as a Binance market order does when it runs out of depth.
    market_fill_ratio: Decimal = Decimal(1)
    market_fill_delay_ms: int = 0
    initial_balance: Decimal = Decimal("10000")
    default_leverage: int = 20
    check_margin: bool = True
    order_id_start: int = 4_000_000_000
    algo_id_start: int = 1_000_000
    per_symbol_slippage_bps: dict[str, Decimal] = field(default_factory=dict)


def round_tick(m: Market, price: Decimal) -> Decimal:
    """Nearest tick, half-even, at least one tick. Unlike ``Market.round_price`` this
    does not read the thread's decimal context (ccxt sets it to ROUND_HALF_UP in the
    thread it runs in), so the harsh market's derived prices never depend on it."""
    ticks = (price / m.tick_size).to_integral_value(rounding=ROUND_HALF_EVEN)
    return (max(ticks, Decimal(1)) * m.tick_size).quantize(m.tick_size)


def _sign(x: Decimal) -> int:
    return 1 if x > 0 else (-1 if x < 0 else 0)


def exits(side: str, position_side: str) -> bool:
    """True for an order side that reduces a hedge-mode position side (SELL LONG, BUY SHORT)."""
    return (position_side == LONG and side == "SELL") or (position_side == SHORT and side == "BUY")


class Engine:
    """Deterministic USD-M perpetual matching engine.

    Contract:
      * Same markets, config, clock readings and call sequence => same state.
      * A reduce-only execution never increases ``abs(position)`` nor flips it.
      * ``wallet_balance`` changes only by realised PnL minus fees.
    """

    def __init__(
        self,
        markets: dict[str, Market],
        clock: Clock,
        config: EngineConfig | None = None,
        harsh: HarshConfig | None = None,
    ):
        self.markets = markets
        self.clock = clock
        self.config = config or EngineConfig()
        # The harsh market's switches (all off: the calm market). Shared, mutable.
        self.harsh = harsh or HarshConfig()
        self.wallet_balance: Decimal = self.config.initial_balance
        self.mark: dict[str, Decimal] = {s: m.initial_price for s, m in markets.items()}
        self.last: dict[str, Decimal] = dict(self.mark)
        self.index: dict[str, Decimal] = dict(self.mark)
        # harsh market state: recent relative moves (bps), stops held by priceProtect,
        # funding/insurance records, algos waiting in TRIGGERING
        self._stress: dict[str, Decimal] = {}
        self._protect_wait: dict[str, set[int]] = {}
        self.incomes: list[Income] = []
        self.settlements: list[FundingSettlement] = []  # oldest first
        self._funding_last = self.clock.now_ms()
        self._triggering: list[tuple[int, int]] = []  # (due_ms, algo_id)
        self._liq_seq = 0
        self._liquidating = False
        # Every mark change, for klines. The initial marks are not points: candles
        # start at the first set_price (or loaded history), not at engine creation.
        self.history = PriceHistory()
        # One-way (BOTH) positions by symbol, and hedge-mode LONG/SHORT positions; a
        # symbol in ``hedge_symbols`` trades only the latter.
        self.positions: dict[str, Position] = {
            s: Position(s, leverage=self.config.default_leverage) for s in markets
        }
        self.hedge_positions: dict[tuple[str, str], Position] = {
            (s, ps): Position(s, leverage=self.config.default_leverage, position_side=ps)
            for s in markets
            for ps in HEDGE_SIDES
        }
        self.hedge_symbols: set[str] = set()
        self.orders: dict[int, Order] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.fills: list[Fill] = []
        self.episodes: list[Episode] = []
        self._open_episode: dict[tuple[str, str], Episode] = {}  # (symbol, position side)
        self._orders_by_cid: dict[str, list[int]] = {}
        self._algos_by_cid: dict[str, list[int]] = {}
        self._open_orders: dict[int, Order] = {}
        self._open_algos: dict[int, AlgoOrder] = {}
        # (symbol, position side, order side) -> open protective stops; O(1) checks
        self._protective: dict[tuple[str, str, str], int] = {}
        # trigger books keyed by (symbol, "MARK_PRICE"|"CONTRACT_PRICE"|"INDEX_PRICE"|"LIMIT")
        self._books: dict[tuple[str, str], TriggerBook] = {}
        self._delayed: list[tuple[int, int]] = []  # (due_ms, order_id)
        self._next_order_id = self.config.order_id_start
        self._next_algo_id = self.config.algo_id_start
        self._next_trade_id = 1
        self._next_cid = 1
        self._listeners: list[Callable[[Event], None]] = []
        self.balance_update_time = self.clock.now_ms()
        for sym in markets:
            for kind in ("MARK_PRICE", "CONTRACT_PRICE", "INDEX_PRICE", "LIMIT"):
                self._books[(sym, kind)] = TriggerBook()
        # the same books per symbol, for set_price's hot path (one dict look-up)
        self._symbol_books: dict[str, tuple[TriggerBook, TriggerBook, TriggerBook, TriggerBook]] = {
            sym: (
                self._books[(sym, "MARK_PRICE")],
                self._books[(sym, "CONTRACT_PRICE")],
                self._books[(sym, "INDEX_PRICE")],
                self._books[(sym, "LIMIT")],
            )
            for sym in markets
        }

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` synchronously for every state change."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)

    # ------------------------------------------------------------------ prices
    def market(self, symbol: str) -> Market:
        m = self.markets.get(symbol)
        if m is None:
            raise errors.invalid_symbol()
        return m

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Set the price of ``symbol`` and fire crossed triggers.

        Calm market: mark, index and last are all ``price``. With the harsh
        ``price_series`` switch ``price`` is the last (traded) price and the index
        and mark follow it (see :meth:`_derive_prices`).

        Hot path: when nothing crosses this is a few dict writes, a history append
        and four heap peeks.
        """
        harsh = self.harsh
        if harsh.price_series:
            self._derive_prices(symbol, price)
            return
        self.mark[symbol] = price
        self.last[symbol] = price
        self.index[symbol] = price
        self.history.record(symbol, self.clock.now_ms(), price)
        mb, cb, ib, lb = self._symbol_books[symbol]
        if (
            mb.would_fire(price)
            or cb.would_fire(price)
            or ib.would_fire(price)
            or lb.would_fire(price)
        ):
            self._fire(symbol)
        if harsh.liquidation or self._protect_wait:
            self._after_prices(symbol)

    def set_prices(
        self,
        symbol: str,
        *,
        last: Decimal | None = None,
        mark: Decimal | None = None,
        index: Decimal | None = None,
    ) -> None:
        """Set any of last, mark and index of ``symbol`` exactly (the others keep
        their values) and fire what crossed. The history (klines) records last."""
        if last is not None:
            self.last[symbol] = last
            self.history.record(symbol, self.clock.now_ms(), last)
        if mark is not None:
            self.mark[symbol] = mark
        if index is not None:
            self.index[symbol] = index
        self._fire(symbol)
        self._after_prices(symbol)

    def _derive_prices(self, symbol: str, last: Decimal) -> None:
        """Harsh ``price_series``: ``last`` traded; the index closes ``index_follow``
        of its gap to last, the mark is the index plus ``basis_bps``; the stress
        (largest recent move, bps, fading by ``stress_decay``) widens the spread."""
        h = self.harsh
        m = self.markets[symbol]
        prev = self.last[symbol]
        move = abs(last - prev) / prev * BPS if prev > 0 else ZERO
        self._stress[symbol] = max(move, self._stress.get(symbol, ZERO) * h.stress_decay)
        index = self.index[symbol]
        new_index = round_tick(m, index + (last - index) * h.index_follow)
        mark = round_tick(m, new_index * (BPS + h.basis_bps) / BPS)
        self.set_prices(symbol, last=last, mark=mark, index=new_index)

    def stress_bps(self, symbol: str) -> Decimal:
        """Harsh market: the symbol's recent relative move in bps (0 when calm)."""
        return self._stress.get(symbol, ZERO)

    def half_spread_bps(self, symbol: str) -> Decimal:
        h = self.harsh
        return h.spread_bps / 2 + h.stress_spread * self.stress_bps(symbol)

    def best_bid_ask(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Best bid and ask. Calm: one tick around the mark. Harsh (``price_series``
        or ``depth_slippage``): around last, ``half_spread_bps`` each side (at least
        a tick), wider under stress."""
        m = self.markets[symbol]
        tick = m.tick_size
        if not (self.harsh.price_series or self.harsh.depth_slippage):
            mark = self.mark[symbol]
            return max(mark - tick, tick), mark + tick
        last = self.last[symbol]
        half = self.half_spread_bps(symbol)
        bid = (last * (BPS - half) / BPS / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
        ask = (last * (BPS + half) / BPS / tick).to_integral_value(rounding=ROUND_CEILING) * tick
        return max(min(bid, last - tick), tick), max(ask, last + tick)

    def _fire(self, symbol: str) -> None:
        now = self.clock.now_ms()
        books = self._books
        for kind, price in (
            ("MARK_PRICE", self.mark[symbol]),
            ("CONTRACT_PRICE", self.last[symbol]),
            ("INDEX_PRICE", self.index[symbol]),
        ):
            book = books[(symbol, kind)]
            if not book.would_fire(price):
                continue
            for algo_id in book.pop_crossed(price):
                algo = self.algos[algo_id]
                if not algo.is_open:
                    continue
                if self._protect_holds(algo):
                    self._protect_wait.setdefault(symbol, set()).add(algo_id)
                    continue
                self._trigger(algo, now)
        lb = books[(symbol, "LIMIT")]
        last = self.last[symbol]
        if lb.would_fire(last):
            for order_id in lb.pop_crossed(last):
                order = self.orders[order_id]
                if order.is_open:
                    rest = order.orig_qty - order.executed_qty
                    self._execute(order, rest, order.price, True, now)

    def _protect_holds(self, algo: AlgoOrder) -> bool:
        """Harsh ``price_protect``: a ``priceProtect`` stop does not trigger while mark
        and last differ by more than ``trigger_protect`` (Binance triggerProtect)."""
        h = self.harsh
        if not (h.price_protect and algo.price_protect):
            return False
        mark = self.mark[algo.symbol]
        return mark > 0 and abs(mark - self.last[algo.symbol]) / mark > h.trigger_protect

    def _after_prices(self, symbol: str) -> None:
        """Harsh checks after a price change: held priceProtect stops, liquidation."""
        wait = self._protect_wait.get(symbol)
        if wait:
            now = self.clock.now_ms()
            for algo_id in sorted(wait):
                algo = self.algos[algo_id]
                if not algo.is_open:
                    wait.discard(algo_id)
                    continue
                price = self.working_price(symbol, algo.working_type)
                crossed = price >= algo.trigger_price if algo.rises else price <= algo.trigger_price
                if not crossed:  # back in the book until the price crosses again
                    wait.discard(algo_id)
                    book = self._books[(symbol, algo.working_type)]
                    book.add(algo_id, algo.trigger_price, algo.rises)
                elif not self._protect_holds(algo):
                    wait.discard(algo_id)
                    self._trigger(algo, now)
            if not wait:
                self._protect_wait.pop(symbol, None)
        if self.harsh.liquidation:
            self._check_liquidation(symbol)

    def working_price(self, symbol: str, working_type: str) -> Decimal:
        if working_type == "MARK_PRICE":
            return self.mark[symbol]
        if working_type == "INDEX_PRICE":
            return self.index[symbol]
        return self.last[symbol]

    # ------------------------------------------------------------ client ids
    def _check_cid(self, cid: str | None, prefix: str) -> str:
        if cid is None or cid == "":
            cid = f"{prefix}{self._next_cid:016d}"
            self._next_cid += 1
            return cid
        if not CLIENT_ID_RE.match(cid):
            raise errors.invalid_client_id()
        return cid

    def _order_by_cid(self, cid: str) -> Order | None:
        ids = self._orders_by_cid.get(cid)
        return self.orders[ids[-1]] if ids else None

    def _algo_by_cid(self, cid: str) -> AlgoOrder | None:
        ids = self._algos_by_cid.get(cid)
        return self.algos[ids[-1]] if ids else None

    # ------------------------------------------------------------ validation
    def _check_qty(self, m: Market, qty: Decimal) -> None:
        if qty <= 0:
            raise errors.qty_le_zero()
        if not m.is_step_multiple(qty):
            raise errors.precision_over_max()
        if qty < m.min_qty:
            raise errors.ApiError(-1013, "Filter failure: LOT_SIZE")
        if qty > m.max_qty:
            raise errors.qty_gt_max()

    def _check_price(self, m: Market, price: Decimal) -> None:
        if price <= 0:
            raise errors.ApiError(-4001, "Price less than 0.")
        if not m.is_tick_multiple(price):
            raise errors.price_not_tick()

    # ------------------------------------------------------- position mode
    def is_hedge(self, symbol: str) -> bool:
        return symbol in self.hedge_symbols

    def position(self, symbol: str, position_side: str = BOTH) -> Position:
        if position_side == BOTH:
            return self.positions[symbol]
        return self.hedge_positions[(symbol, position_side)]

    def symbol_positions(self, symbol: str) -> list[Position]:
        """The positions ``symbol`` trades in its mode: [BOTH], or [LONG, SHORT]."""
        if symbol in self.hedge_symbols:
            return [self.hedge_positions[(symbol, LONG)], self.hedge_positions[(symbol, SHORT)]]
        return [self.positions[symbol]]

    def all_positions(self) -> list[Position]:
        """Every position object, one-way ones first (flat ones included)."""
        return [*self.positions.values(), *self.hedge_positions.values()]

    def check_position_side(self, symbol: str, position_side: str) -> str:
        """The order's position side, validated against the symbol's mode (-4061)."""
        ps = position_side.upper()
        ok = ps in HEDGE_SIDES if symbol in self.hedge_symbols else ps == BOTH
        if not ok:
            raise errors.ApiError(-4061, "Order's position side does not match user's setting.")
        return ps

    def set_position_mode(self, hedge: bool, symbols: list[str] | None = None) -> None:
        """Switch ``symbols`` (default: all) to hedge or one-way mode.

        Rejections as Binance: -4059 nothing to change, -4068 a position exists,
        -4067 an open order or algo order exists (on any of the symbols).
        """
        targets = list(self.markets) if symbols is None else symbols
        for s in targets:
            self.market(s)
        if all((s in self.hedge_symbols) == hedge for s in targets):
            raise errors.ApiError(-4059, "No need to change position side.")
        wanted = set(targets)
        for pos in self.all_positions():
            if pos.symbol in wanted and pos.amt != 0:
                raise errors.ApiError(
                    -4068, "Position side cannot be changed if there exists position."
                )
        if any(o.symbol in wanted for o in self._open_orders.values()) or any(
            a.symbol in wanted for a in self._open_algos.values()
        ):
            raise errors.ApiError(
                -4067, "Position side cannot be changed if there exists open orders."
            )
        if hedge:
            self.hedge_symbols |= wanted
        else:
            self.hedge_symbols -= wanted

    def _reducing(self, side: str, position_side: str, reduce_only: bool) -> bool:
        """Whether an order may only reduce: reduce-only, or the exit side in hedge mode."""
        return reduce_only or exits(side, position_side)

    def _reducible(self, symbol: str, side: str, position_side: str = BOTH) -> Decimal:
        """How much an order of ``side`` could reduce the current position (>= 0)."""
        amt = self.position(symbol, position_side).amt
        if side == "SELL" and amt > 0:
            return amt
        if side == "BUY" and amt < 0:
            return -amt
        return ZERO

    def available_balance(self) -> Decimal:
        """Wallet + unrealised PnL - initial margin of all positions (cross)."""
        total = self.wallet_balance
        for pos in self.all_positions():
            if pos.amt != 0:
                mark = self.mark[pos.symbol]
                total += pos.amt * (mark - pos.entry_price)
                total -= abs(pos.amt) * mark / pos.leverage
        return total

    def _check_margin(
        self, symbol: str, side: str, qty: Decimal, price: Decimal, position_side: str = BOTH
    ) -> None:
        if not self.config.check_margin:
            return
        opening = qty - self._reducible(symbol, side, position_side)
        if opening <= 0:
            return
        need = opening * price / self.position(symbol, position_side).leverage
        if need > self.available_balance():
            raise errors.margin_insufficient()

    # ---------------------------------------------------------------- orders
    def place_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal | None,
        price: Decimal | None = None,
        *,
        reduce_only: bool = False,
        client_order_id: str | None = None,
        time_in_force: str = "GTC",
        source: str = "api",
        position_side: str = BOTH,
    ) -> Order:
        """Validate and accept a MARKET or LIMIT order; market orders execute now
        (or after ``market_fill_delay_ms``). Raises ApiError on rejection.

        In hedge mode ``position_side`` is LONG or SHORT and an exit-side order
        (SELL LONG, BUY SHORT) behaves as reduce-only on that side."""
        m = self.market(symbol)
        if side not in ("BUY", "SELL"):
            raise errors.invalid_side()
        ps = self.check_position_side(symbol, position_side)
        reducing = self._reducing(side, ps, reduce_only)
        if order_type in ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            raise errors.ApiError(
                -4120, "Order type not supported for this endpoint. Please use the Algo Order API."
            )
        if order_type not in ("MARKET", "LIMIT"):
            raise errors.invalid_order_type()
        if quantity is None:
            raise errors.mandatory_param("quantity")
        self._check_qty(m, quantity)
        if order_type == "LIMIT":
            if price is None:
                raise errors.mandatory_param("price")
            self._check_price(m, price)
        ref_price = price if (order_type == "LIMIT" and price is not None) else self.mark[symbol]
        if not reducing and quantity * ref_price < m.min_notional:
            raise errors.notional_too_small(str(m.min_notional))
        cid = self._check_cid(client_order_id, "sim-")
        existing = self._order_by_cid(cid)
        if existing is not None and existing.is_open:
            raise errors.duplicate_client_order_id()
        if reducing and self._reducible(symbol, side, ps) == 0:
            raise errors.reduce_only_rejected()
        if not reducing:
            self._check_margin(symbol, side, quantity, ref_price, ps)
        now = self.clock.now_ms()
        order = self._new_order(
            symbol,
            side,
            order_type,
            order_type,
            quantity,
            price if order_type == "LIMIT" and price is not None else ZERO,
            ZERO,
            reduce_only,
            False,
            time_in_force,
            "CONTRACT_PRICE",
            cid,
            source,
            now,
            position_side=ps,
        )
        self._emit(OrderEvent(order, "NEW", None, now))
        if order_type == "MARKET":
            if self.config.market_fill_delay_ms > 0:
                self._delayed.append((now + self.config.market_fill_delay_ms, order.order_id))
            else:
                self._execute_market(order, now)
        else:
            assert price is not None
            last = self.last[symbol]  # the mark in the calm market (the same number)
            marketable = (side == "BUY" and price >= last) or (side == "SELL" and price <= last)
            if marketable:
                if time_in_force == "GTX":
                    self._finish(order, "EXPIRED", now)
                else:
                    self._execute(order, quantity, last, False, now)
            else:
                # buy limit fills when the price falls to it, sell limit when it rises
                self._books[(symbol, "LIMIT")].add(order.order_id, price, side == "SELL")
        return order

    def _new_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        orig_type: str,
        qty: Decimal,
        price: Decimal,
        stop_price: Decimal,
        reduce_only: bool,
        close_position: bool,
        tif: str,
        working_type: str,
        cid: str,
        source: str,
        now: int,
        algo_id: int | None = None,
        position_side: str = BOTH,
    ) -> Order:
        order = Order(
            order_id=self._next_order_id,
            client_order_id=cid,
            symbol=symbol,
            side=side,
            type=order_type,
            orig_type=orig_type,
            orig_qty=qty,
            price=price,
            stop_price=stop_price,
            reduce_only=reduce_only,
            close_position=close_position,
            time_in_force=tif,
            working_type=working_type,
            time=now,
            update_time=now,
            source=source,
            algo_id=algo_id,
            position_side=position_side,
        )
        self._next_order_id += 1
        self.orders[order.order_id] = order
        self._open_orders[order.order_id] = order
        self._orders_by_cid.setdefault(cid, []).append(order.order_id)
        return order

    def _fill_price(self, symbol: str, side: str) -> Decimal:
        m = self.markets[symbol]
        # trades happen at last; in the calm market last is the mark
        mark = self.last[symbol] if self.harsh.price_series else self.mark[symbol]
        bps = self.config.per_symbol_slippage_bps.get(symbol, self.config.slippage_bps)
        if bps == 0:
            return mark
        if side == "BUY":
            raw = mark * (BPS + bps) / BPS
            ticks = (raw / m.tick_size).to_integral_value(rounding=ROUND_CEILING)
        else:
            raw = mark * (BPS - bps) / BPS
            ticks = (raw / m.tick_size).to_integral_value(rounding=ROUND_FLOOR)
        return max(ticks, Decimal(1)) * m.tick_size

    def _depth_price(self, order: Order, qty: Decimal) -> Decimal:
        """Harsh ``depth_slippage``: the price a taker gets from a thin book.

        Start at the best bid/ask (around last, spread widening with stress), then
        move against the taker by the order's notional / ``depth_usdt_per_bps``
        bps, plus ``slippage_bps``, plus for a triggered stop ``gap_slippage`` times
        how far (bps) its working price went past the trigger. Rounded to the tick
        against the taker (one tick at least)."""
        symbol = order.symbol
        m = self.markets[symbol]
        h = self.harsh
        bid, ask = self.best_bid_ask(symbol)
        buy = order.side == "BUY"
        base = ask if buy else bid
        bps = qty * self.last[symbol] / h.depth_usdt_per_bps
        bps += self.config.per_symbol_slippage_bps.get(symbol, self.config.slippage_bps)
        if order.algo_id is not None and order.stop_price > 0:
            past = self.working_price(symbol, order.working_type) - order.stop_price
            gap = abs(past) / order.stop_price * BPS
            bps += gap * h.gap_slippage
        if buy:
            raw = base * (BPS + bps) / BPS
            ticks = (raw / m.tick_size).to_integral_value(rounding=ROUND_CEILING)
        else:
            raw = base * (BPS - bps) / BPS
            ticks = (raw / m.tick_size).to_integral_value(rounding=ROUND_FLOOR)
        return max(ticks, Decimal(1)) * m.tick_size

    def _order_reduces(self, order: Order) -> bool:
        return order.reduce_only or order.close_position or exits(order.side, order.position_side)

    def _execute_market(self, order: Order, now: int) -> None:
        qty = order.orig_qty - order.executed_qty
        reduces = self._order_reduces(order)
        if reduces:
            qty = min(qty, self._reducible(order.symbol, order.side, order.position_side))
            if qty <= 0:
                self._finish(order, "EXPIRED", now)
                return
        m = self.markets[order.symbol]
        ratio = self.config.market_fill_ratio
        if ratio < 1 and not reduces:
            qty = m.floor_qty(qty * ratio)
            if qty <= 0:
                self._finish(order, "EXPIRED", now)
                return
        parts = max(1, self.config.fill_parts)
        chunk = m.floor_qty(qty / parts) if parts > 1 else qty
        if chunk <= 0:
            chunk = qty
        remaining = qty
        if self.harsh.depth_slippage:
            price = self._depth_price(order, qty)
        else:
            price = self._fill_price(order.symbol, order.side)
        while remaining > 0 and order.is_open:
            q = chunk if remaining - chunk >= chunk else remaining
            self._execute(order, q, price, False, now)
            remaining -= q
        if order.is_open:
            # reduce-only clipped below orig_qty: the rest expires like on Binance
            self._finish(order, "EXPIRED", now)

    def _execute(
        self,
        order: Order,
        qty: Decimal,
        price: Decimal,
        maker: bool,
        now: int,
        exec_type: str = "TRADE",
        fee_free: bool = False,
    ) -> None:
        """Apply one execution of ``qty`` at ``price`` to order, position and wallet."""
        ps = order.position_side
        if order.reduce_only or exits(order.side, ps):
            qty = min(qty, self._reducible(order.symbol, order.side, ps))
            if qty <= 0:
                self._finish(order, "EXPIRED", now)
                return
        pos = self.position(order.symbol, ps)
        delta = qty if order.side == "BUY" else -qty
        old = pos.amt
        realized = ZERO
        if old == 0 or _sign(old) == _sign(delta):
            new_amt = old + delta
            pos.entry_price = (abs(old) * pos.entry_price + qty * price) / abs(new_amt)
        else:
            closing = min(qty, abs(old))
            realized = (closing * (price - pos.entry_price) * _sign(old)).quantize(EIGHT_DP)
            new_amt = old + delta
            if new_amt == 0:
                pos.entry_price = ZERO
            elif _sign(new_amt) != _sign(old):
                pos.entry_price = price
        pos.amt = new_amt
        pos.realized_pnl += realized
        pos.update_time = now
        rate = self.config.maker_fee if maker else self.config.taker_fee
        if fee_free:
            rate = ZERO
        quote = qty * price
        fee = (quote * rate).quantize(EIGHT_DP)
        self.wallet_balance += realized - fee
        self.balance_update_time = now
        fill = Fill(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote,
            commission=fee,
            realized_pnl=realized,
            maker=maker,
            time=now,
            position_side=ps,
        )
        self._next_trade_id += 1
        self.fills.append(fill)
        order.fill_ids.append(fill.trade_id)
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_time = now
        order.status = "FILLED" if order.executed_qty >= order.orig_qty else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._open_orders.pop(order.order_id, None)
            self._books[(order.symbol, "LIMIT")].remove(order.order_id)
        self._emit(OrderEvent(order, exec_type, fill, now))
        sides = [ps] if ps != BOTH else []  # one-way events stay as they were
        self._emit(AccountEvent("ORDER", [order.symbol], now, sides))
        self._position_changed(order.symbol, ps, old, now)

    def _finish(self, order: Order, status: str, now: int) -> None:
        order.status = status
        order.update_time = now
        self._open_orders.pop(order.order_id, None)
        self._books[(order.symbol, "LIMIT")].remove(order.order_id)
        self._emit(OrderEvent(order, status, None, now))

    def poll(self) -> int:
        """Execute delayed market orders that are due; returns how many ran. Harsh
        market: also settles funding and releases algos waiting in TRIGGERING."""
        if self.harsh.funding:
            self._settle_funding(self.clock.now_ms())
        else:
            self._funding_last = self.clock.now_ms()
        if self._triggering:
            self._release_due_triggering(self.clock.now_ms())
        if not self._delayed:
            return 0
        now = self.clock.now_ms()
        due = [d for d in self._delayed if d[0] <= now]
        if not due:
            return 0
        self._delayed = [d for d in self._delayed if d[0] > now]
        for _, order_id in sorted(due):
            order = self.orders[order_id]
            if order.is_open:
                self._execute_market(order, now)
            if order.algo_id is not None:
                algo = self.algos[order.algo_id]
                algo.algo_status = "FINISHED"
                algo.update_time = now
                self._emit(AlgoEvent(algo, now))
        return len(due)

    def find_order(
        self, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> Order:
        """Look an order up by id or (most recent) client id; -2013 when unknown."""
        self.market(symbol)
        order: Order | None = None
        if order_id is not None:
            order = self.orders.get(order_id)
        elif client_order_id is not None:
            order = self._order_by_cid(client_order_id)
        else:
            raise errors.ApiError(-1102, "Either orderId or origClientOrderId must be sent.")
        if order is None or order.symbol != symbol:
            raise errors.order_not_exist()
        return order

    def cancel_order(
        self, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> Order:
        """Cancel an open order; -2011 when unknown or no longer open."""
        try:
            order = self.find_order(symbol, order_id, client_order_id)
        except errors.ApiError as exc:
            if exc.code == -2013:
                raise errors.unknown_order() from None
            raise
        if not order.is_open:
            raise errors.unknown_order()
        self._finish(order, "CANCELED", self.clock.now_ms())
        return order

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self._open_orders.values() if symbol is None or o.symbol == symbol]

    def all_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def cancel_all_orders(self, symbol: str) -> list[Order]:
        self.market(symbol)
        out = []
        now = self.clock.now_ms()
        for order in self.open_orders(symbol):
            self._finish(order, "CANCELED", now)
            out.append(order)
        return out

    # ----------------------------------------------------------------- algos
    def place_algo(
        self,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal | None,
        trigger_price: Decimal | None,
        *,
        reduce_only: bool = False,
        close_position: bool = False,
        working_type: str = "CONTRACT_PRICE",
        client_algo_id: str | None = None,
        price_protect: bool = False,
        source: str = "api",
        position_side: str = BOTH,
    ) -> AlgoOrder:
        """Accept a conditional STOP_MARKET / TAKE_PROFIT_MARKET order.

        Rejections: -2021 would trigger now, -4130 duplicate closePosition stop,
        -2022 reduce-only with nothing to reduce (in hedge mode also an exit-side
        order, or a closePosition order on the entry side), -20132 duplicate open
        clientAlgoId, -4061 position side not matching the mode.
        """
        m = self.market(symbol)
        if side not in ("BUY", "SELL"):
            raise errors.invalid_side()
        ps = self.check_position_side(symbol, position_side)
        reducing = self._reducing(side, ps, reduce_only)
        if order_type not in STOP_TYPES:
            raise errors.invalid_order_type()
        if working_type not in WORKING_TYPES:
            raise errors.bad_param("workingType")
        if trigger_price is None:
            raise errors.mandatory_param("triggerPrice")
        self._check_price(m, trigger_price)
        if close_position:
            if quantity is not None:
                raise errors.ApiError(-1106, "Parameter 'quantity' sent when not required.")
            if reduce_only:
                raise errors.ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        else:
            if quantity is None:
                raise errors.mandatory_param("quantity")
            self._check_qty(m, quantity)
            if not reducing and quantity * trigger_price < m.min_notional:
                raise errors.notional_too_small(str(m.min_notional))
        cid = self._check_cid(client_algo_id, "algo-")
        existing = self._algo_by_cid(cid)
        if existing is not None and existing.is_open:
            raise errors.duplicate_client_algo_id()
        rises = (side == "BUY") == (order_type == "STOP_MARKET")
        current = self.working_price(symbol, working_type)
        if (rises and current >= trigger_price) or (not rises and current <= trigger_price):
            raise errors.would_trigger()
        if close_position:
            if ps != BOTH and not exits(side, ps):
                # a closePosition BUY LONG / SELL SHORT could never close anything
                raise errors.reduce_only_rejected()
            for other in self._open_algos.values():
                if (
                    other.symbol == symbol
                    and other.close_position
                    and other.side == side
                    and other.order_type == order_type
                    and other.position_side == ps
                ):
                    raise errors.close_position_exists()
        elif reducing and self._reducible(symbol, side, ps) == 0:
            raise errors.reduce_only_rejected()
        now = self.clock.now_ms()
        algo = AlgoOrder(
            algo_id=self._next_algo_id,
            client_algo_id=cid,
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity=quantity,
            trigger_price=trigger_price,
            reduce_only=reduce_only,
            close_position=close_position,
            working_type=working_type,
            price_protect=price_protect,
            create_time=now,
            update_time=now,
            source=source,
            position_side=ps,
        )
        self._next_algo_id += 1
        self.algos[algo.algo_id] = algo
        self._open_algos[algo.algo_id] = algo
        self._algos_by_cid.setdefault(cid, []).append(algo.algo_id)
        self._books[(symbol, working_type)].add(algo.algo_id, trigger_price, rises)
        if self._is_protective(algo):
            key = (symbol, ps, side)
            self._protective[key] = self._protective.get(key, 0) + 1
        self._emit(AlgoEvent(algo, now))
        self._refresh_protection(symbol, ps, now)
        return algo

    @staticmethod
    def _is_protective(algo: AlgoOrder) -> bool:
        return algo.order_type in PROTECTIVE_TYPES and (
            algo.reduce_only or algo.close_position or exits(algo.side, algo.position_side)
        )

    def _close_algo(self, algo: AlgoOrder, status: str, now: int, reason: str = "") -> None:
        """Move an open algo to a terminal/triggered status and keep indexes in sync."""
        was_open = algo.is_open
        algo.algo_status = status
        algo.update_time = now
        if reason:
            algo.fail_reason = reason
        if was_open:
            self._open_algos.pop(algo.algo_id, None)
            self._books[(algo.symbol, algo.working_type)].remove(algo.algo_id)
            if self._is_protective(algo):
                self._protective[(algo.symbol, algo.position_side, algo.side)] -= 1
        self._emit(AlgoEvent(algo, now))
        if was_open:
            self._refresh_protection(algo.symbol, algo.position_side, now)

    def _trigger(self, algo: AlgoOrder, now: int) -> None:
        algo.trigger_time = now
        if self.harsh.algo_lifecycle:
            # Binance: the algo service forwards it (TRIGGERING), the matching engine
            # accepts it (TRIGGERED), then it fills (FINISHED)
            self._close_algo(algo, "TRIGGERING", now)
            if self.harsh.triggering_ms > 0:
                self._triggering.append((now + self.harsh.triggering_ms, algo.algo_id))
                return
        self._release_triggered(algo, now)

    def _release_due_triggering(self, now: int) -> None:
        due = [d for d in self._triggering if d[0] <= now]
        if not due:
            return
        self._triggering = [d for d in self._triggering if d[0] > now]
        for _, algo_id in sorted(due):
            algo = self.algos[algo_id]
            if algo.algo_status == "TRIGGERING":
                self._release_triggered(algo, now)

    def _release_triggered(self, algo: AlgoOrder, now: int) -> None:
        """Create and execute the triggered algo's market order."""
        ps = algo.position_side
        if algo.close_position:
            qty = self._reducible(algo.symbol, algo.side, ps)
        else:
            assert algo.quantity is not None
            qty = min(algo.quantity, self._reducible(algo.symbol, algo.side, ps))
            if not self._reducing(algo.side, ps, algo.reduce_only):
                qty = algo.quantity
        if qty <= 0:
            self._close_algo(algo, "EXPIRED", now, "Reduce Only reject")
            return
        order = self._new_order(
            algo.symbol,
            algo.side,
            "MARKET",
            algo.order_type,
            qty,
            ZERO,
            algo.trigger_price,
            algo.reduce_only or algo.close_position,
            algo.close_position,
            "GTC",
            algo.working_type,
            algo.client_algo_id,
            "algo",
            now,
            algo.algo_id,
            position_side=ps,
        )
        algo.actual_order_id = order.order_id
        self._close_algo(algo, "TRIGGERED", now)
        self._emit(OrderEvent(order, "NEW", None, now))
        if self.config.market_fill_delay_ms > 0:
            self._delayed.append((now + self.config.market_fill_delay_ms, order.order_id))
            return
        self._execute_market(order, now)
        algo.update_time = now
        algo.algo_status = "FINISHED"
        self._emit(AlgoEvent(algo, now))

    def amend_algo(
        self,
        algo_id: int,
        *,
        trigger_price: Decimal | None = None,
        quantity: Decimal | None = None,
        working_type: str | None = None,
    ) -> AlgoOrder:
        """Change an open algo order in place: same id, never a moment without it.

        Only the given fields change. Rejections: -2011 when the algo is not
        open, -2021 when the new trigger would fire now, the usual price/qty
        filter errors. Protection bookkeeping is unchanged (the order stays open).
        """
        algo = self.algos.get(algo_id)
        if algo is None or not algo.is_open:
            raise errors.unknown_order()
        m = self.market(algo.symbol)
        trigger = algo.trigger_price if trigger_price is None else trigger_price
        wt = algo.working_type if working_type is None else working_type
        if wt not in WORKING_TYPES:
            raise errors.bad_param("workingType")
        self._check_price(m, trigger)
        if quantity is not None:
            if algo.close_position:
                raise errors.ApiError(-1106, "Parameter 'quantity' sent when not required.")
            self._check_qty(m, quantity)
        rises = algo.rises
        current = self.working_price(algo.symbol, wt)
        if (rises and current >= trigger) or (not rises and current <= trigger):
            raise errors.would_trigger()
        if wt != algo.working_type:
            self._books[(algo.symbol, algo.working_type)].remove(algo.algo_id)
            self._books[(algo.symbol, wt)].add(algo.algo_id, trigger, rises)
        else:
            self._books[(algo.symbol, wt)].move(algo.algo_id, trigger, rises)
        algo.trigger_price = trigger
        algo.working_type = wt
        if quantity is not None:
            algo.quantity = quantity
        algo.update_time = self.clock.now_ms()
        self._emit(AlgoEvent(algo, algo.update_time))
        return algo

    def find_algo(self, algo_id: int | None = None, client_algo_id: str | None = None) -> AlgoOrder:
        """Look an algo order up by id or (most recent) client id; -2013 when unknown."""
        algo: AlgoOrder | None = None
        if algo_id is not None:
            algo = self.algos.get(algo_id)
        elif client_algo_id is not None:
            algo = self._algo_by_cid(client_algo_id)
        else:
            raise errors.ApiError(-1102, "Either algoId or clientAlgoId must be sent.")
        if algo is None:
            raise errors.order_not_exist()
        return algo

    def cancel_algo(
        self, algo_id: int | None = None, client_algo_id: str | None = None
    ) -> AlgoOrder:
        """Cancel an open algo order; -2011 when unknown or not open."""
        try:
            algo = self.find_algo(algo_id, client_algo_id)
        except errors.ApiError as exc:
            if exc.code == -2013:
                raise errors.unknown_order() from None
            raise
        if not algo.is_open:
            raise errors.unknown_order()
        self._close_algo(algo, "CANCELED", self.clock.now_ms())
        return algo

    def open_algos(self, symbol: str | None = None) -> list[AlgoOrder]:
        return [a for a in self._open_algos.values() if symbol is None or a.symbol == symbol]

    def all_algos(self, symbol: str | None = None) -> list[AlgoOrder]:
        return [a for a in self.algos.values() if symbol is None or a.symbol == symbol]

    def cancel_all_algos(self, symbol: str) -> list[AlgoOrder]:
        self.market(symbol)
        now = self.clock.now_ms()
        out = self.open_algos(symbol)
        for algo in out:
            self._close_algo(algo, "CANCELED", now)
        return out

    # -------------------------------------------------------------- positions
    def _position_changed(self, symbol: str, ps: str, old: Decimal, now: int) -> None:
        new = self.position(symbol, ps).amt
        key = (symbol, ps)
        if _sign(old) != _sign(new):
            ep = self._open_episode.pop(key, None)
            if ep is not None:
                if ep.unprotected_since is not None:
                    ep.unprotected_ms += now - ep.unprotected_since
                    ep.unprotected_since = None
                ep.closed_ms = now
            if new != 0:
                ep = Episode(
                    episode_id=len(self.episodes) + 1,
                    symbol=symbol,
                    side="long" if new > 0 else "short",
                    opened_ms=now,
                    position_side=ps,
                )
                self.episodes.append(ep)
                self._open_episode[key] = ep
            # closePosition stops whose side no longer reduces anything are cancelled
            exit_side = "SELL" if new > 0 else ("BUY" if new < 0 else "")
            for algo in list(self._open_algos.values()):
                if (
                    algo.symbol == symbol
                    and algo.position_side == ps
                    and algo.close_position
                    and algo.side != exit_side
                ):
                    # Binance expires them (system cancel); calm market: CANCELED
                    status = "EXPIRED" if self.harsh.algo_lifecycle else "CANCELED"
                    self._close_algo(algo, status, now)
        ep = self._open_episode.get(key)
        if ep is not None and abs(new) > ep.max_abs_qty:
            ep.max_abs_qty = abs(new)
        self._refresh_protection(symbol, ps, now)

    def _refresh_protection(self, symbol: str, ps: str, now: int) -> None:
        ep = self._open_episode.get((symbol, ps))
        if ep is None:
            return
        exit_side = "SELL" if ep.side == "long" else "BUY"
        count = self._protective.get((symbol, ps, exit_side), 0)
        if count > ep.max_stops:
            ep.max_stops = count
        protected = count > 0
        if protected and ep.unprotected_since is not None:
            ep.unprotected_ms += now - ep.unprotected_since
            ep.unprotected_since = None
        elif not protected and ep.unprotected_since is None:
            ep.unprotected_since = now

    # ----------------------------------------------------- harsh: liquidation
    def _isolated_wallet(self, pos: Position) -> Decimal:
        """The margin an isolated position holds: its initial margin at entry."""
        return abs(pos.amt) * pos.entry_price / pos.leverage

    def _maint_margin(self, pos: Position) -> Decimal:
        return abs(pos.amt) * self.mark[pos.symbol] * maint_margin_ratio(self.markets[pos.symbol])

    def _cross_wallet(self) -> Decimal:
        """Wallet balance minus what isolated positions hold."""
        return self.wallet_balance - sum(
            (
                self._isolated_wallet(p)
                for p in self.all_positions()
                if p.amt != 0 and p.margin_type == "ISOLATED"
            ),
            ZERO,
        )

    def liquidation_price(self, pos: Position) -> Decimal:
        """Binance's formula (first bracket, cumB 0): the mark at which the
        position's margin balance meets its maintenance margin. Isolated: the
        position's own margin; cross: the cross wallet plus the other cross
        positions' unrealised PnL less their maintenance margin. 0 when none
        (a cross position the wallet can carry to zero)."""
        if pos.amt == 0:
            return ZERO
        m = self.markets[pos.symbol]
        q = abs(pos.amt)
        side = 1 if pos.amt > 0 else -1
        if pos.margin_type == "ISOLATED":
            wb = self._isolated_wallet(pos)
        else:
            wb = self._cross_wallet()
            for other in self.all_positions():
                if other is pos or other.amt == 0 or other.margin_type == "ISOLATED":
                    continue
                wb += self.unrealized_pnl(other.symbol, other.position_side)
                wb -= self._maint_margin(other)
        denom = q * maint_margin_ratio(m) - side * q
        if denom == 0:
            return ZERO
        lp = (wb - side * q * pos.entry_price) / denom
        return round_tick(m, lp) if lp > 0 else ZERO

    def _check_liquidation(self, symbol: str) -> None:
        """Harsh ``liquidation``: liquidate when margin balance <= maintenance margin
        (isolated: the position's; cross: every cross position together)."""
        if self._liquidating:
            return
        for pos in self.symbol_positions(symbol):
            if pos.amt != 0 and pos.margin_type == "ISOLATED":
                balance = self._isolated_wallet(pos) + self.unrealized_pnl(
                    symbol, pos.position_side
                )
                if balance <= self._maint_margin(pos):
                    self._liquidate([pos])
        cross = [p for p in self.all_positions() if p.amt != 0 and p.margin_type != "ISOLATED"]
        if not any(p.symbol == symbol for p in cross):
            return
        balance = self._cross_wallet() + sum(
            (self.unrealized_pnl(p.symbol, p.position_side) for p in cross), ZERO
        )
        if balance <= sum((self._maint_margin(p) for p in cross), ZERO):
            self._liquidate(cross)

    def _liquidate(self, positions: list[Position]) -> None:
        """Close ``positions`` the way the exchange's liquidation engine does.

        Open orders and algo orders of each position are EXPIRED first (Binance
        expiry reason 5), then an order with client id ``autoclose-<ms><seq>``
        (LIMIT IOC, source ``liquidation``) fills at the mark with no fee; its fill
        is an OrderEvent with exec type CALCULATED. The margin is lost: whatever
        the fill leaves of it (isolated: the position's margin; cross: the cross
        wallet) is taken as an ``INSURANCE_CLEAR`` income (a gap beyond the
        bankruptcy price is covered instead, the wallet never goes below zero)."""
        self._liquidating = True
        try:
            now = self.clock.now_ms()
            cross_clear = False
            for pos in positions:
                if pos.amt == 0:
                    continue
                symbol, ps = pos.symbol, pos.position_side
                for o in list(self._open_orders.values()):
                    if o.symbol == symbol and o.position_side == ps:
                        self._finish(o, "EXPIRED", now)
                for a in list(self._open_algos.values()):
                    if a.symbol == symbol and a.position_side == ps:
                        self._close_algo(a, "EXPIRED", now, "Liquidation")
                isolated = pos.margin_type == "ISOLATED"
                margin = self._isolated_wallet(pos)
                qty = abs(pos.amt)
                side = "SELL" if pos.amt > 0 else "BUY"
                price = self.mark[symbol]
                self._liq_seq += 1
                cid = f"autoclose-{now}{self._liq_seq:06d}"
                order = self._new_order(
                    symbol,
                    side,
                    "LIMIT",
                    "LIMIT",
                    qty,
                    price,
                    ZERO,
                    True,
                    False,
                    "IOC",
                    "CONTRACT_PRICE",
                    cid,
                    "liquidation",
                    now,
                    position_side=ps,
                )
                self._emit(OrderEvent(order, "NEW", None, now))
                before = self.wallet_balance
                self._execute(order, qty, price, False, now, "CALCULATED", fee_free=True)
                realized = self.wallet_balance - before
                if isolated:
                    self._insurance_clear(symbol, ps, -(margin + realized), now)
                else:
                    cross_clear = True
            if cross_clear:
                cw = self._cross_wallet()
                if cw != 0:
                    self._insurance_clear(positions[0].symbol, BOTH, -cw, now)
        finally:
            self._liquidating = False

    def _insurance_clear(self, symbol: str, ps: str, amount: Decimal, now: int) -> None:
        amount = amount.quantize(EIGHT_DP)
        if amount == 0:
            return
        self.wallet_balance += amount
        self.balance_update_time = now
        inc = Income(len(self.incomes) + 1, symbol, "INSURANCE_CLEAR", amount, now)
        inc.position_side = ps
        self.incomes.append(inc)
        self._emit(AccountEvent("INSURANCE_CLEAR", [], now, incomes=[inc], balance_change=amount))

    # -------------------------------------------------------- harsh: funding
    def _settle_funding(self, now: int) -> None:
        """Charge funding at every ``funding_interval_ms`` boundary (epoch aligned,
        so 00:00, 08:00, 16:00 UTC by default) passed since the last settlement."""
        iv = self.harsh.funding_interval_ms
        if iv <= 0:
            return
        nxt = (self._funding_last // iv + 1) * iv
        runs = 0
        while nxt <= now and runs < 1000:
            self._fund(nxt)
            self._funding_last = nxt
            nxt += iv
            runs += 1
        if runs == 1000:
            self._funding_last = now

    def next_funding_ms(self, now: int) -> int:
        iv = self.harsh.funding_interval_ms if self.harsh.funding else 8 * 3_600_000
        iv = iv if iv > 0 else 8 * 3_600_000
        return (now // iv + 1) * iv

    def funding_rate(self) -> Decimal:
        return self.harsh.funding_rate if self.harsh.funding else Decimal("0.0001")

    def _fund(self, at: int) -> None:
        """One funding settlement: every open position pays ``amt * mark * rate``
        (a positive rate: longs pay, shorts receive). The settlement is recorded
        whether or not a position paid: it is the market's rate history."""
        rate = self.harsh.funding_rate
        self.settlements.append(FundingSettlement(at, rate, dict(self.mark)))
        paid: list[Income] = []
        symbols: list[str] = []
        sides: list[str] = []
        for pos in self.all_positions():
            if pos.amt == 0:
                continue
            mark = self.mark[pos.symbol]
            fee = (pos.amt * mark * rate).quantize(EIGHT_DP)
            if fee == 0:
                continue
            self.wallet_balance -= fee
            inc = Income(
                len(self.incomes) + 1,
                pos.symbol,
                "FUNDING_FEE",
                -fee,
                at,
                rate=rate,
                mark=mark,
                qty=pos.amt,
                position_side=pos.position_side,
            )
            self.incomes.append(inc)
            paid.append(inc)
            if pos.margin_type == "ISOLATED":  # Binance lists only isolated positions
                symbols.append(pos.symbol)
                sides.append(pos.position_side)
        if not paid:
            return
        self.balance_update_time = at
        change = sum((i.amount for i in paid), ZERO)
        keep_sides = sides if any(s != BOTH for s in sides) else []
        self._emit(
            AccountEvent(
                "FUNDING_FEE", symbols, at, keep_sides, incomes=paid, balance_change=change
            )
        )

    def unrealized_pnl(self, symbol: str, position_side: str = BOTH) -> Decimal:
        pos = self.position(symbol, position_side)
        if pos.amt == 0:
            return ZERO
        return pos.amt * (self.mark[symbol] - pos.entry_price)

    def total_unrealized(self) -> Decimal:
        return sum(
            (self.unrealized_pnl(p.symbol, p.position_side) for p in self.all_positions()), ZERO
        )

    def set_leverage(
        self, symbol: str, leverage: int, position_side: str | None = None
    ) -> Position:
        """Set the leverage of ``symbol`` (every side, or only ``position_side``)."""
        m = self.market(symbol)
        if leverage < 1 or leverage > m.max_leverage:
            raise errors.invalid_leverage()
        sides = (BOTH, *HEDGE_SIDES) if position_side is None else (position_side,)
        for ps in sides:
            self.position(symbol, ps).leverage = leverage
        return self.position(symbol, sides[0])

    def set_margin_type(self, symbol: str, margin_type: str) -> Position:
        self.market(symbol)
        mt = {"CROSSED": "CROSSED", "CROSS": "CROSSED", "ISOLATED": "ISOLATED"}.get(
            margin_type.upper()
        )
        if mt is None:
            raise errors.bad_param("marginType")
        pos = self.positions[symbol]
        if pos.margin_type == mt:
            raise errors.no_need_margin_type()
        if any(p.amt != 0 for p in self.symbol_positions(symbol)) or self.open_orders(symbol):
            raise errors.ApiError(-4048, "Margin type cannot be changed if there exists position.")
        for ps in (BOTH, *HEDGE_SIDES):
            self.position(symbol, ps).margin_type = mt
        return pos

    # ------------------------------------------------------------ manual ops
    def manual_open(self, symbol: str, side: str, quantity: Decimal) -> Order:
        """A person opens/extends a position in the exchange UI (market order); in
        hedge mode a BUY opens the LONG side, a SELL the SHORT side."""
        ps = BOTH
        if symbol in self.hedge_symbols:
            ps = LONG if side == "BUY" else SHORT
        return self.place_order(symbol, side, "MARKET", quantity, source="manual", position_side=ps)

    def manual_close(self, symbol: str, position_side: str | None = None) -> Order | None:
        """A person closes the whole position in the UI; None when flat. In hedge
        mode every open side (or only ``position_side``) is closed; the last order
        is returned."""
        last: Order | None = None
        for pos in self.symbol_positions(symbol):
            if pos.amt == 0 or position_side not in (None, pos.position_side):
                continue
            side = "SELL" if pos.amt > 0 else "BUY"
            last = self.place_order(
                symbol,
                side,
                "MARKET",
                abs(pos.amt),
                reduce_only=pos.position_side == BOTH,  # hedge mode: the exit side reduces
                source="manual",
                position_side=pos.position_side,
            )
        return last

    def manual_cancel(self, order_id: int) -> Order | AlgoOrder:
        """A person cancels an order or algo order by id in the UI."""
        if order_id in self.algos:
            return self.cancel_algo(algo_id=order_id)
        order = self.orders.get(order_id)
        if order is None:
            raise errors.unknown_order()
        return self.cancel_order(order.symbol, order_id=order_id)

    def deposit(self, amount: Decimal) -> None:
        """Credit (or debit) the USDT wallet, e.g. to top up a demo account."""
        now = self.clock.now_ms()
        self.wallet_balance += amount
        self.balance_update_time = now
        self._emit(AccountEvent("DEPOSIT", [], now))

    def unprotected_ms(self, symbol: str, position_side: str | None = None) -> int:
        """Total unprotected time of all episodes of ``symbol`` (of every position
        side, or only ``position_side``) up to now."""
        now = self.clock.now_ms()
        return sum(
            e.unprotected_at(now)
            for e in self.episodes
            if e.symbol == symbol and position_side in (None, e.position_side)
        )
