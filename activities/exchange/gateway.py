"""The exchange gateway: posguard's only path to an exchange, over ccxt.async_support.

One `ExchangeGateway` per account. It speaks in domain types (`OrderIntent`,
`OrderView`, `ExchangePosition`, canonical symbols like "BTCUSDT") and hides
ccxt's per-exchange parameters; what differs between venues is asked of its
`Venue` (`activities/exchange/venue.py`), never decided here.

Numbers are taken from the exchange's raw strings (`order['info']`) where they
exist, so no price or quantity passes through float; ccxt's parsed floats are
only a fallback, converted through their shortest repr.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from activities.exchange.raw import first as _first
from activities.exchange.raw import flag as _flag
from activities.exchange.raw import to_decimal
from activities.exchange.request_metrics import instrument
from activities.exchange.venue import Venue, venue_for
from domain.client_ids import parse_client_id
from domain.errors import classify_exception
from domain.funding import funding_side
from domain.market import MarketFilters
from domain.orders import (
    Fill,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderView,
    OutsideExit,
    OutsideOrder,
    status_from_ccxt,
)
from domain.position import book_key
from domain.requests import AccountSnapshot, ExchangePosition
from domain.symbols import canonical_from_unified, unified_from_canonical
from domain.types import OrderSide, Side
from domain.volatility import Candle
from domain.wave_io import EntryReadiness

# Executions that traded the position (Bybit's execType; Binance gives none): not
# funding or delivery settlements.
TRADE_EXECUTIONS = frozenset({"Trade", "BustTrade", "AdlTrade", "BlockTrade"})
# How old the market list may be when a wave asks which symbols trade.
MARKETS_MAX_AGE_S = 600
# ccxt's recvWindow when a client sets none (its Binance default; Bybit's is 5000).
DEFAULT_RECV_WINDOW_MS = 10_000
# Beyond the recvWindow: the exchange's clock may lag ours by up to 1 s (it refuses
# a timestamp more than 1 s ahead of its own), plus its time to book what it took.
SEND_WINDOW_MARGIN_S = 1.5  # float ok: seconds


def order_view(order: Mapping[str, Any], symbol: str) -> OrderView:
    """Normalise one ccxt order dict (regular or Binance algo order) to an `OrderView`.

    `close_position` is Binance's `closePosition` (Bybit has no such order: False);
    such an order, and a Bybit `closeOnTrigger` one, is reduce-only by nature and
    reported so, whatever the exchange's own `reduceOnly` says.
    """
    info: Mapping[str, Any] = order.get("info") or {}
    is_algo = "algoId" in info or "algoStatus" in info
    filled = to_decimal(_first(info, "executedQty", "cumExecQty")) or to_decimal(
        order.get("filled")
    )
    qty = to_decimal(_first(info, "origQty", "quantity", "qty")) or to_decimal(order.get("amount"))
    average = to_decimal(_first(info, "avgPrice")) or to_decimal(order.get("average"))
    trigger = to_decimal(_first(info, "triggerPrice", "stopPrice")) or to_decimal(
        order.get("triggerPrice")
    )
    side = order.get("side")
    status = status_from_ccxt(order.get("status"), filled)
    updated = order.get("lastUpdateTimestamp") or order.get("timestamp")
    reduce_only = order.get("reduceOnly")
    if reduce_only is None:
        reduce_only = _flag(info.get("reduceOnly"))
    close_position = _flag(info.get("closePosition")) or False
    if close_position or _flag(info.get("closeOnTrigger")):
        reduce_only = True
    # Bybit's position stop-loss (sent with an entry): no client id of its own.
    position_stop = info.get("stopOrderType") == "StopLoss" and not info.get("orderLinkId")
    # Hedge mode: the position side it belongs to (Binance positionSide, Bybit positionIdx).
    position_side = _HEDGE_SIDES.get(str(_first(info, "positionSide", "positionIdx") or ""))
    if position_side is not None and side in ("buy", "sell"):
        # An order on its side's exit side can only reduce that side (Binance refuses
        # the reduceOnly flag in hedge mode, so the order itself does not say so).
        reduce_only = OrderSide(side) is position_side.exit_order_side
    return OrderView(
        exchange_order_id=str(order.get("id") or _first(info, "algoId", "orderId")),
        client_order_id=order.get("clientOrderId") or _first(info, "clientAlgoId", "clientOrderId"),
        symbol=symbol,
        side=OrderSide(side) if side in ("buy", "sell") else None,
        status=status,
        qty=qty,
        filled_qty=filled or Decimal(0),
        average_price=average if average else None,
        trigger_price=trigger if trigger else None,
        reduce_only=bool(reduce_only) if reduce_only is not None else None,
        close_position=close_position,
        is_conditional=is_algo or bool(trigger),
        updated_at=datetime.fromtimestamp(updated / 1000, UTC) if updated else None,
        position_stop=position_stop,
        position_side=position_side,
    )


_HEDGE_SIDES = {"LONG": Side.LONG, "SHORT": Side.SHORT, "1": Side.LONG, "2": Side.SHORT}


class PositionModeMismatch(Exception):
    """The account's position mode on the exchange (one-way or hedge) is not the one
    its settings say: nothing is sent (error type `PositionModeMismatch`)."""


class ExchangeGateway:
    """Orders, positions and market data of one account, in domain terms."""

    def __init__(
        self,
        exchange: Any,
        *,
        account: str,
        protective: Any | None = None,
        stop_with_entry: bool = True,
        hedge_mode: bool = False,
    ) -> None:
        self.exchange = exchange
        # The account's position mode as its settings say (`hedge_mode`): checked
        # against the exchange before the first order of each symbol.
        self.hedge_mode = hedge_mode
        self._mode_checked: set[str] = set()
        # False: no entry carries its stop, even where the venue could (the account's
        # `stop_with_entry` setting).
        self.stop_with_entry = stop_with_entry
        # Reduce-only placements and cancels go through their own client (and so
        # their own rate-limit queue) when one is given.
        self.protective = protective if protective is not None else exchange
        self.account = account
        instrument(self.exchange, account=account, lane="main")
        if self.protective is not self.exchange:
            instrument(self.protective, account=account, lane="protective")
        self._markets_loaded = asyncio.Lock()
        self._filters: dict[str, MarketFilters] = {}
        self._markets_read_at: float | None = None  # float ok: monotonic time
        self.venue: Venue = venue_for(self.exchange_id)

    @property
    def exchange_id(self) -> str:
        return str(self.exchange.id)

    @property
    def send_window_s(self) -> float:  # float ok: seconds to sleep
        """How long after it was signed a request of ours may still take effect:
        the recvWindow the client signs with, plus `SEND_WINDOW_MARGIN_S`."""
        options = getattr(self.exchange, "options", None) or {}
        window_ms = int(options.get("recvWindow") or DEFAULT_RECV_WINDOW_MS)
        return window_ms / 1000 + SEND_WINDOW_MARGIN_S

    async def probe(self) -> None:
        """One cheap public request (the exchange's time) on each client: proves the
        exchange reachable for `/health` when nothing else is being asked of it."""
        await self.exchange.fetch_time()
        if self.protective is not self.exchange:
            await self.protective.fetch_time()

    async def close(self) -> None:
        await self.exchange.close()
        if self.protective is not self.exchange:
            await self.protective.close()

    # --- markets ----------------------------------------------------------------------

    async def load_markets(self) -> None:
        """Load markets once per process; later calls return at once."""
        async with self._markets_loaded:
            if not self._filters:
                markets = await self.exchange.load_markets()
                if self.protective is not self.exchange:
                    # Same markets for the priority lane, without a second download.
                    self.protective.set_markets(markets, self.exchange.currencies)
                for market in markets.values():
                    if market.get("linear") and market.get("swap"):
                        filters = self.venue.market_filters(market)
                        if filters.entry_carries_stop and not self.stop_with_entry:
                            filters = filters.model_copy(update={"entry_carries_stop": False})
                        self._filters[filters.symbol] = filters

    async def entry_readiness(self, quote: str = "USDT") -> EntryReadiness:
        """The symbols a new entry may use (listed, trading) and the free balance.

        Markets are read again when the last read is older than `MARKETS_MAX_AGE_S`,
        so a symbol the exchange halts or delists stops being selected; the balance
        is read every time (an invalid key or maintenance shows here first).
        """
        now = time.monotonic()  # float ok: a clock reading
        if self._markets_read_at is None or now - self._markets_read_at > MARKETS_MAX_AGE_S:
            await self.exchange.load_markets(reload=self._markets_read_at is not None)
            self._markets_read_at = now
        listed = frozenset(
            canonical_from_unified(m["symbol"])
            for m in self.exchange.markets.values()
            if m.get("linear") and m.get("swap") and m.get("active") is not False
        )
        balance = await self.exchange.fetch_balance()
        free = to_decimal((balance.get("free") or {}).get(quote))
        return EntryReadiness(listed=listed, quote=quote, free_balance=free)

    def check_position_spec(self, hedge_mode: bool | None) -> None:
        """Raise `PositionModeMismatch` for a position whose spec names another mode
        than the account's settings (its workflow id would not name its side)."""
        if hedge_mode is not None and hedge_mode != self.hedge_mode:
            said = "hedge" if hedge_mode else "one-way"
            raise PositionModeMismatch(
                f"the position was started for a {said}-mode account, but account "
                f"{self.account}'s settings say hedge_mode = {str(self.hedge_mode).lower()}: "
                "nothing was sent"
            )

    async def check_position_mode(self, symbol: str) -> None:
        """Raise `PositionModeMismatch` if the exchange holds `symbol` in another position
        mode than the account's settings say; read once per process for the scope the
        venue sets its mode for (Binance: the account; Bybit: the symbol), since the
        exchange refuses a mode change while a position or an order is open."""
        unified = unified_from_canonical(symbol)
        scope = self.venue.position_mode_scope(unified)
        if scope in self._mode_checked:
            return
        hedged = await self.venue.hedge_mode(self.exchange, unified)
        if hedged is not None and hedged != self.hedge_mode:
            on_exchange, settings = ("hedge", "one-way") if hedged else ("one-way", "hedge")
            raise PositionModeMismatch(
                f"account {self.account} holds {symbol} in {on_exchange} mode on "
                f"{self.exchange_id}, but its settings say {settings} (hedge_mode = "
                f"{str(self.hedge_mode).lower()}): change one of them, nothing was sent"
            )
        self._mode_checked.add(scope)

    async def filters(self, symbol: str) -> MarketFilters:
        """Trading filters of a canonical symbol ("BTCUSDT"); KeyError if not listed."""
        await self.load_markets()
        return self._filters[symbol]

    # --- orders ------------------------------------------------------------------------

    async def place(
        self, intent: OrderIntent, *, look_up_first: bool, attached_stop: OrderIntent | None = None
    ) -> OrderView:
        """Place `intent`, never twice.

        With `look_up_first` (any retry), the order is first looked up by its
        client id and returned if the exchange already has it; so an ambiguous
        outcome (accepted, answer lost) never produces a second order. A
        duplicate-client-id rejection is answered the same way.

        An earlier send may also still be on its way (a worker killed while the
        exchange held its request). For a stop the exchange itself refuses a
        second open order with the same client id; an entry fills on arrival and
        leaves no open order to collide with. So before an entry is sent again,
        the send window is waited out (`send_window_s`: the exchange refuses a
        request older than its recvWindow) and the entry looked up once more:
        only then is "not found" final.

        `attached_stop` (an entry only, on a venue whose filters say
        `entry_carries_stop`): the stop-loss sent with the entry, live before it fills.
        """
        await self.load_markets()
        await self.check_position_mode(intent.symbol)
        if look_up_first:
            existing = await self.find(intent.symbol, intent.client_order_id, intent.is_conditional)
            if existing is not None:
                return existing
            if not intent.reduce_only and not intent.is_conditional:
                await asyncio.sleep(self.send_window_s)
                existing = await self.find(
                    intent.symbol, intent.client_order_id, intent.is_conditional
                )
                if existing is not None:
                    return existing
        unified = unified_from_canonical(intent.symbol)
        params: dict[str, Any] = {"clientOrderId": intent.client_order_id}
        if intent.reduce_only:
            params["reduceOnly"] = True
        if self.hedge_mode:
            # ccxt names the position side from the order's side and reduce-only flag:
            # an entry opens its own side, a stop or close only reduces it.
            params["hedged"] = True
        if intent.type is OrderType.STOP_MARKET:
            params["stopLossPrice"] = str(intent.trigger_price)
        elif intent.type is OrderType.TAKE_PROFIT_MARKET:
            params["takeProfitPrice"] = str(intent.trigger_price)
        params.update(self.venue.order_params(intent))
        if attached_stop is not None:
            params.update(self.venue.attached_stop_params(attached_stop))
        try:
            client = self.protective if intent.reduce_only else self.exchange
            order = await client.create_order(
                unified, "market", intent.side.value, str(intent.qty), None, params
            )
        except Exception as exc:
            if "DuplicateClientOrderId" in _classified(exc):
                found = await self.find(
                    intent.symbol, intent.client_order_id, intent.is_conditional
                )
                if found is not None:
                    return found
            raise
        view = order_view(order, intent.symbol)
        if view.status is OrderStatus.UNKNOWN or (
            not intent.is_conditional and view.status is OrderStatus.OPEN
        ):
            # Some exchanges answer before the fill is known (Bybit: id only;
            # Binance: NEW then FILLED); the order's own record is the truth.
            found = await self.find(intent.symbol, intent.client_order_id, intent.is_conditional)
            if found is not None:
                return found
        return view

    async def amend_stop(
        self,
        symbol: str,
        *,
        client_order_id: str,
        exchange_order_id: str | None,
        trigger_price: Decimal,
        position_stop: bool = False,
        side: Side | None = None,
    ) -> OrderView:
        """Move one of our resting stops to `trigger_price` in place; its view after.

        Only on a venue that amends (`MarketFilters.stop_moves_in_place`); the order
        keeps its ids. A stop gone meanwhile (triggered, cancelled) raises ccxt's
        OrderNotFound: the caller looks at what became of it.
        """
        await self.load_markets()
        await self.venue.amend_stop(
            self.protective,
            unified_from_canonical(symbol),
            client_order_id,
            exchange_order_id,
            trigger_price,
            position_stop=position_stop,
            hedge_side=side if self.hedge_mode else None,
        )
        if position_stop and exchange_order_id:  # no client id there: by its id at once
            order = await self.venue.find_by_id(
                self.exchange, unified_from_canonical(symbol), exchange_order_id, True
            )
            if order is not None:
                view = order_view(order, symbol)
                return view.model_copy(update={"client_order_id": client_order_id})
        found = await self.find(symbol, client_order_id, True, exchange_order_id=exchange_order_id)
        if found is None:
            raise RuntimeError(f"stop {client_order_id} amended but not found")
        return found

    async def find(
        self,
        symbol: str,
        client_order_id: str,
        conditional: bool,
        *,
        exchange_order_id: str | None = None,
    ) -> OrderView | None:
        """The order with our client id, open or done, or None if the exchange has none.

        An order the exchange knows without our client id (a position stop) is found by
        `exchange_order_id` when given, and named with `client_order_id`.
        """
        order = await self._find_raw(symbol, client_order_id, conditional, exchange_order_id)
        if order is None:
            return None
        view = order_view(order, symbol)
        if not view.client_order_id:
            view = view.model_copy(update={"client_order_id": client_order_id})
        return view

    async def _find_raw(
        self,
        symbol: str,
        client_order_id: str,
        conditional: bool,
        exchange_order_id: str | None,
    ) -> Mapping[str, Any] | None:
        unified = unified_from_canonical(symbol)
        order: Mapping[str, Any] | None = None
        try:
            order = await self.venue.find(self.exchange, unified, client_order_id, conditional)
        except Exception as exc:
            if "OrderNotFound" not in _classified(exc):
                raise
        if order is not None or not exchange_order_id:
            return order
        try:
            return await self.venue.find_by_id(
                self.exchange, unified, exchange_order_id, conditional
            )
        except Exception as exc:
            if "OrderNotFound" in _classified(exc):
                return None
            raise

    async def position_stop(
        self, symbol: str, *, fired_since: datetime | None = None, side: Side | None = None
    ) -> OrderView | None:
        """The position's own open stop-loss (`OrderView.position_stop`), if any; with
        `fired_since`, else the one that has filled since then (a stop that fired
        before anyone looked), newest first. On a hedge-mode account, `side` names the
        position: the other side's stop is not this one's."""
        unified = unified_from_canonical(symbol)
        hedge_side = side if self.hedge_mode else None

        def of_position(view: OrderView) -> bool:
            return view.position_stop and view.position_side is hedge_side

        listed = await self.venue.open_orders(self.exchange, unified)
        for order, conditional in listed:
            view = _listed_view(order, conditional, symbol)
            if of_position(view) and not view.is_final:
                return view
        if fired_since is None:
            return None
        since_ms = int(fired_since.timestamp() * 1000)
        done = [
            order_view(o, symbol)
            for o in await self.venue.done_orders(self.exchange, unified, since_ms)
        ]
        fired = [v for v in done if of_position(v) and v.filled_qty > 0]
        return max(fired, key=lambda v: v.updated_at or fired_since, default=None)

    async def clear_position_stop(self, symbol: str, side: Side | None) -> OrderView | None:
        """Remove the position's own stop-loss (`OrderView.position_stop`) if it has one;
        its view before it went, or None when there was none. Only on a venue whose
        entries carry their stop; `side` names the position on a hedge-mode account."""
        await self.load_markets()
        stop = await self.position_stop(symbol, side=side)
        if stop is None:
            return None
        await self.venue.clear_position_stop(
            self.protective,
            unified_from_canonical(symbol),
            hedge_side=side if self.hedge_mode else None,
        )
        return stop

    async def fetch(
        self, symbol: str, exchange_order_id: str, conditional: bool
    ) -> OrderView | None:
        """The current view of one order by exchange id, open or done; None if the
        exchange has none (through the venue: ccxt's Bybit `fetch_order` refuses to
        look beyond the last 500 orders unless told, so it looks in the open list and
        the history instead)."""
        try:
            order = await self.venue.find_by_id(
                self.exchange, unified_from_canonical(symbol), exchange_order_id, conditional
            )
        except Exception as exc:
            if "OrderNotFound" in _classified(exc):
                return None
            raise
        return None if order is None else order_view(order, symbol)

    async def cancel(
        self, symbol: str, *, client_order_id: str, exchange_order_id: str | None, conditional: bool
    ) -> OrderView | None:
        """Cancel one order; a missing order counts as done.

        Returns the order's final view when the exchange still knows it (so the
        caller can see whether a stop filled before it could be cancelled), or
        None when the exchange has no such order.
        """
        unified = unified_from_canonical(symbol)
        try:
            await self.load_markets()
            if exchange_order_id is not None:
                params = self.venue.by_id_params(conditional)
                await self.protective.cancel_order(exchange_order_id, unified, params)
            else:
                params = self.venue.by_client_id_params(client_order_id, conditional)
                await self.protective.cancel_order(None, unified, params)
        except Exception as exc:
            if "OrderNotFound" not in _classified(exc):
                raise
        return await self.find(
            symbol, client_order_id, conditional, exchange_order_id=exchange_order_id
        )

    async def cancel_by_exchange_id(
        self, symbol: str, exchange_order_id: str, *, conditional: bool
    ) -> OrderView | None:
        """Cancel an order known only by its exchange id (a foreign order); a missing
        one counts as done. Its final view, or None when the exchange has no such order."""
        unified = unified_from_canonical(symbol)
        params = self.venue.by_id_params(conditional)
        await self.load_markets()
        try:
            await self.protective.cancel_order(exchange_order_id, unified, params)
        except Exception as exc:
            if "OrderNotFound" not in _classified(exc):
                raise
        return await self.fetch(symbol, exchange_order_id, conditional)

    async def all_open_orders(self, symbol: str) -> list[OrderView]:
        """Every open order of one symbol: regular and conditional, each `is_conditional` set.

        Binance keeps conditional orders apart (algo orders): both lists are read,
        each complete for one symbol (neither endpoint pages). Bybit lists every
        kind in one list, paged by cursor.
        """
        listed = await self.venue.open_orders(self.exchange, unified_from_canonical(symbol))
        return _unique([_listed_view(o, conditional, symbol) for o, conditional in listed])

    async def account_orders(self) -> list[OrderView]:
        """Every open order of the account, every symbol, regular and conditional.

        Binance: both account-wide lists (regular and algo), read concurrently;
        neither endpoint pages, each costs weight 40 without a symbol. Bybit: one
        list of every kind, paged by cursor. Symbols are canonical ("BTCUSDT").
        """
        listed = await self.venue.open_orders(self.exchange, None)
        return _unique(
            [
                _listed_view(o, conditional, canonical_from_unified(o["symbol"]))
                for o, conditional in listed
            ]
        )

    async def account_snapshot(self) -> AccountSnapshot:
        """Every non-flat position of the account, then every open order.

        Positions are read first: an order that fills in between is then seen
        gone, never resting on a position that looks flat. On Binance one
        snapshot costs `SNAPSHOT_WEIGHT` of request weight.
        """
        positions = await self.positions()
        orders = await self.account_orders()
        return AccountSnapshot(positions=list(positions.values()), orders=orders)

    async def order_fills(
        self,
        symbol: str,
        client_order_id: str,
        conditional: bool,
        *,
        exchange_order_id: str | None = None,
    ) -> list[Fill]:
        """Executions of our order `client_order_id`, fees in the quote currency.

        A triggered Binance algo stop executes as a new matching-engine order
        (`actualOrderId`); its trades are the stop's fills. A position stop is found
        by `exchange_order_id` (see `find`).
        """
        order = await self._find_raw(symbol, client_order_id, conditional, exchange_order_id)
        executed_id = None if order is None else self.venue.executed_order_id(order, conditional)
        if executed_id is None:
            return []
        return await self.fills(symbol, executed_id, client_order_id)

    async def fills(
        self, symbol: str, exchange_order_id: str, client_order_id: str | None = None
    ) -> list[Fill]:
        """Executions of one matching-engine order, with fees in the quote currency."""
        trades = await self.exchange.fetch_my_trades(
            unified_from_canonical(symbol), None, None, {"orderId": exchange_order_id}
        )
        return [_fill_of(t, client_order_id or t.get("clientOrderId")) for t in trades]

    async def funding(self, symbol: str, since: datetime, side: Side | None = None) -> Decimal:
        """Funding the account received (+) or paid (-) on `symbol` since `since`
        (Binance `/fapi/v1/income` FUNDING_FEE, Bybit executions of type Funding).

        `side` (a hedge-mode position's): only what that side received or paid. The
        venues' funding rows do not name the position, so each payment is given to a
        side by the sign of its settlement's market funding rate (`funding_side`),
        read from the funding-rate history (`_settlement_rates`). Raises
        `FundingUnattributed` when a payment has no settlement rate to tell by.
        None: every payment counts (one-way mode), and no rate is read.
        """
        unified = unified_from_canonical(symbol)
        rows = await self.exchange.fetch_funding_history(
            unified,
            int(since.timestamp() * 1000),
            None,
            {"limit": self.venue.funding_page},
        )
        received = [(row, self.venue.funding_amount(row.get("info") or {})) for row in rows]
        if side is None:
            return sum((amount for _, amount in received), Decimal(0))
        payments = [(_settled_at(row), amount) for row, amount in received if amount != 0]
        rates = await self._settlement_rates(unified, [at for at, _ in payments])
        total = Decimal(0)
        for at, amount in payments:
            rate = rates.at(at)
            owner = funding_side(amount, rate) if rate is not None else None
            if owner is None:
                raise FundingUnattributed(
                    f"{symbol}: the funding of {amount} settled at {at} ms has no non-zero "
                    f"rate in the funding-rate history within {FUNDING_MATCH_MS} ms "
                    f"(found {rate}): its side cannot be told"
                )
            if owner is side:
                total += amount
        return total

    async def _settlement_rates(self, unified: str, times: list[int]) -> _SettlementRates:
        """The market's funding rate of the settlement nearest each of `times` (ms).

        Read from ccxt `fetch_funding_rate_history` (Binance `/fapi/v1/fundingRate`,
        Bybit `/v5/market/funding/history`) over the window the times span. A full
        page is cut at one end (Binance keeps the oldest, Bybit the newest), so the
        window narrows to the times still unmatched and is read again, until all
        match or a read brings nothing new (the caller then finds a time unmatched).
        """
        rates = _SettlementRates()
        for _ in range(MAX_RATE_PAGES):
            missing = [t for t in times if rates.at(t) is None]
            if not missing:
                break
            page = await self.exchange.fetch_funding_rate_history(
                unified,
                min(missing) - FUNDING_MATCH_MS,
                self.venue.funding_rate_page,
                {"until": max(missing) + FUNDING_MATCH_MS},
            )
            if not rates.add(page):
                break
        return rates

    async def outside_exit(self, symbol: str, position_side: Side, since: datetime) -> OutsideExit:
        """The orders posguard did not place that traded on the exit side of a
        `position_side` position in `symbol` since `since`, with their executions:
        what closed it by hand or by liquidation (see `Venue.trade_origin`).

        Trades of posguard's own orders (client ids it makes, `domain.client_ids`)
        are given apart (`own`): the workflow books from its own orders those it
        knows, and from here those it never learned were placed. On a hedge-mode
        account a trade of the other side's position is left out.
        """
        unified = unified_from_canonical(symbol)
        exit_side = "sell" if position_side is Side.LONG else "buy"
        since_ms = int(since.timestamp() * 1000)
        trades = [
            t
            for params in self.venue.trade_history_params
            for t in await self.exchange.fetch_my_trades(unified, since_ms, None, params)
        ]
        origins: dict[str, tuple[str | None, bool]] = {}
        fills: dict[str, list[Fill]] = {}
        own: dict[str, list[Fill]] = {}
        for t in trades:
            info = t.get("info") or {}
            order_id = t.get("order")
            if t.get("side") != exit_side or order_id in (None, ""):
                continue
            if str(_first(info, "execType") or "Trade") not in TRADE_EXECUTIONS:
                continue  # Bybit lists funding and settlements among executions
            hedge_side = str(_first(info, "positionSide") or "").upper()
            if self.hedge_mode and hedge_side in ("LONG", "SHORT"):
                if hedge_side != position_side.value.upper():
                    continue
            order_id = str(order_id)
            if order_id not in origins:
                origins[order_id] = await self.venue.trade_origin(self.exchange, unified, t)
            ours = parse_client_id(origins[order_id][0]) is not None
            (own if ours else fills).setdefault(order_id, []).append(
                _fill_of(t, origins[order_id][0])
            )

        def listed(by_order: dict[str, list[Fill]]) -> tuple[OutsideOrder, ...]:
            return tuple(
                OutsideOrder(
                    exchange_order_id=order_id,
                    client_order_id=origins[order_id][0],
                    side=OrderSide(exit_side),
                    liquidation=origins[order_id][1],
                    fills=tuple(order_fills),
                )
                for order_id, order_fills in by_order.items()
            )

        return OutsideExit(orders=listed(fills), own=listed(own))

    # --- positions and prices -----------------------------------------------------------

    async def position(self, symbol: str, side: Side | None = None) -> ExchangePosition:
        """The account's position in `symbol`; flat (qty 0) when there is none. On a
        hedge-mode account, the position of `side` (a long and a short are two)."""
        if self.hedge_mode and side is None:
            # Which of the two? Answering "flat" could let a workflow end while its
            # side is held: a caller that names no side is a bug, said loudly.
            raise ValueError(f"hedge-mode account {self.account}: name the side of {symbol}")
        positions = await self.positions([symbol])
        if self.hedge_mode:
            key = book_key(symbol, side)
            return positions.get(key) or ExchangePosition(
                symbol=symbol, side=side, qty=Decimal(0), hedged=True
            )
        return positions.get(symbol) or ExchangePosition(symbol=symbol, side=None, qty=Decimal(0))

    async def positions(self, symbols: list[str] | None = None) -> dict[str, ExchangePosition]:
        """Non-flat positions by `domain.position.book_key` (all symbols when `symbols`
        is None): by canonical symbol, and on a hedge-mode symbol by symbol and side."""
        unified = [unified_from_canonical(s) for s in symbols] if symbols else None
        raw = await self.exchange.fetch_positions(unified)
        result: dict[str, ExchangePosition] = {}
        for p in raw:
            info = p.get("info") or {}
            amount = to_decimal(_first(info, "positionAmt", "size"))
            if amount is None:
                amount = to_decimal(p.get("contracts")) or Decimal(0)
            if amount == 0:
                continue
            side_raw = p.get("side")
            side = Side(side_raw) if side_raw in ("long", "short") else None
            if side is None:
                side = Side.LONG if amount > 0 else Side.SHORT
            symbol = canonical_from_unified(p["symbol"])
            hedged = _HEDGE_SIDES.get(str(_first(info, "positionSide", "positionIdx") or ""))
            if hedged is not None:
                side = hedged
            result[book_key(symbol, hedged)] = ExchangePosition(
                symbol=symbol,
                side=side,
                qty=abs(amount),
                hedged=hedged is not None,
                entry_price=to_decimal(_first(info, "entryPrice", "avgPrice"))
                or to_decimal(p.get("entryPrice")),
                mark_price=to_decimal(_first(info, "markPrice")) or to_decimal(p.get("markPrice")),
                unrealized_pnl=to_decimal(_first(info, "unRealizedProfit", "unrealisedPnl")),
            )
        return result

    async def mark_price(self, symbol: str) -> Decimal:
        """Current mark price (the price stops trigger on)."""
        price = await self.venue.mark_price(self.exchange, unified_from_canonical(symbol))
        if price is None:
            raise ValueError(f"no mark price for {symbol}")
        return price

    async def candles(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """The last `limit` candles of `symbol` (oldest first, the last one forming),
        prices exact from the exchange's raw strings (ccxt's fetch_ohlcv gives floats)."""
        rows = await self.venue.klines(self.exchange, symbol, timeframe, limit)
        return [
            Candle(
                open_time_ms=int(row[0]),
                open=Decimal(str(row[1])),
                high=Decimal(str(row[2])),
                low=Decimal(str(row[3])),
                close=Decimal(str(row[4])),
            )
            for row in rows
        ]


class FundingUnattributed(Exception):
    """A hedge-mode position's funding payment could not be given to a side: its
    settlement's funding rate is not in the exchange's history (or is zero while
    money moved). Retryable (the history may lag): nothing is guessed."""


# A funding payment and its settlement's rate row are matched by time: the two
# differ (Binance's `fundingTime` carries a few ms past the hour, and income `time`
# has been seen a second past it), so the nearest row within this margin is the
# payment's settlement. Settlements are an hour or more apart on both venues, so a
# neighbour is never within it, even when the payment's own row is missing.
FUNDING_MATCH_MS = 30_000
# Reads of the funding-rate history for one close (each narrows the window).
MAX_RATE_PAGES = 10


class _SettlementRates:
    """Funding-rate history rows by settlement time (ms), looked up by nearest time."""

    def __init__(self) -> None:
        self._times: list[int] = []  # sorted
        self._rates: dict[int, Decimal] = {}

    def add(self, rows: list[Mapping[str, Any]]) -> bool:
        """Add ccxt funding-rate history rows (rate from the raw `fundingRate` string);
        True if any was new."""
        added = False
        for row in rows:
            at = row.get("timestamp")
            rate = to_decimal(_first(row.get("info") or {}, "fundingRate")) or to_decimal(
                row.get("fundingRate")
            )
            if at is None or rate is None or int(at) in self._rates:
                continue
            self._rates[int(at)] = rate
            bisect.insort(self._times, int(at))
            added = True
        return added

    def at(self, ms: int) -> Decimal | None:
        """The rate of the settlement nearest `ms`, if one is within `FUNDING_MATCH_MS`."""
        i = bisect.bisect_left(self._times, ms)
        near = [t for t in self._times[max(i - 1, 0) : i + 1] if abs(t - ms) <= FUNDING_MATCH_MS]
        if not near:
            return None
        return self._rates[min(near, key=lambda t: abs(t - ms))]


def _settled_at(row: Mapping[str, Any]) -> int:
    """When a ccxt funding-history row was settled (ms; Binance `time`, Bybit `execTime`)."""
    at = row.get("timestamp")
    if at is None:
        raise FundingUnattributed(f"a funding row without a time: {row.get('info')}")
    return int(at)


# Binance USD-M's request weight for one `account_snapshot` (a per-minute budget
# of 2400 per IP by default): GET /fapi/v3/positionRisk without a symbol 5, plus
# GET /fapi/v1/openOrders and GET /fapi/v1/openAlgoOrders without a symbol, 40
# each. ccxt's one-off reads (exchangeInfo, leverageBracket) are not counted.
SNAPSHOT_WEIGHT = 5 + 40 + 40


def _fill_of(trade: Mapping[str, Any], client_order_id: str | None) -> Fill:
    """One ccxt trade as a Fill: quantity, price and fee from the exchange's strings."""
    info = trade.get("info") or {}
    fee = trade.get("fee") or {}
    at = trade.get("timestamp")
    return Fill(
        trade_id=str(trade["id"]),
        client_order_id=client_order_id,
        qty=to_decimal(_first(info, "qty", "execQty")) or to_decimal(trade["amount"]) or Decimal(0),
        price=to_decimal(_first(info, "price", "execPrice"))
        or to_decimal(trade["price"])
        or Decimal(0),
        fee=to_decimal(_first(info, "commission", "execFee"))
        or to_decimal(fee.get("cost"))
        or Decimal(0),
        at=datetime.fromtimestamp(at / 1000, UTC) if at else None,
    )


def _listed_view(order: Mapping[str, Any], conditional: bool, symbol: str) -> OrderView:
    view = order_view(order, symbol)
    return view.model_copy(update={"is_conditional": True}) if conditional else view


def _unique(views: list[OrderView]) -> list[OrderView]:
    """`views` without repeats (the same order listed twice), first seen kept.

    Keyed by symbol too: Binance order ids are only unique within a symbol.
    """
    unique: dict[tuple[str, bool, str], OrderView] = {}
    for view in views:
        unique.setdefault((view.symbol, view.is_conditional, view.exchange_order_id), view)
    return list(unique.values())


def _classified(exc: BaseException) -> str:
    return classify_exception(exc).type.value
