"""What differs between exchanges, in one place per venue.

The gateway (`activities/exchange/gateway.py`) holds what every venue shares: the
never-twice placement, the order, fill and position normalisation, the markets
cache. A `Venue` answers the questions whose answer is venue-specific: the
parameters ccxt needs, how an order is found by client id, how open orders are
listed, where the mark price and candles are read. One implementation per venue
(`binance_venue.py`, `bybit_venue.py`); `venue_for` picks it from ccxt's id. No
other module asks which exchange it talks to.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from domain.market import MarketFilters
from domain.orders import OrderIntent
from domain.types import Side


class Venue(Protocol):
    """The venue-specific half of the gateway; every method is stateless."""

    def market_filters(self, market: Mapping[str, Any]) -> MarketFilters:
        """Trading filters of one loaded ccxt market, exact where the venue allows."""
        ...

    def order_params(self, intent: OrderIntent) -> dict[str, Any]:
        """Venue parameters for `create_order(intent)`, beyond client id, reduce-only
        and the trigger price (which the gateway sets the unified way)."""
        ...

    async def amend_stop(
        self,
        exchange: Any,
        unified: str,
        client_order_id: str,
        exchange_order_id: str | None,
        trigger_price: Decimal,
        *,
        position_stop: bool = False,
        hedge_side: Side | None = None,
    ) -> None:
        """Move a resting stop's trigger in place (only where `market_filters` sets
        `stop_moves_in_place`); `position_stop`: the position's own stop-loss, of the
        `hedge_side` position on a hedge-mode account. An amend that changes nothing
        (a retry after an answer was lost) counts as done; any other refusal raises
        ccxt's error."""
        ...

    async def clear_position_stop(
        self, exchange: Any, unified: str, *, hedge_side: Side | None = None
    ) -> None:
        """Remove the position's own stop-loss (only where `market_filters` sets
        `entry_carries_stop`); of the `hedge_side` position on a hedge-mode account."""
        ...

    async def hedge_mode(self, exchange: Any, unified: str) -> bool | None:
        """Whether the exchange holds `unified` in hedge mode (True) or one-way mode
        (False); None when the venue's answer does not tell."""
        ...

    def position_mode_scope(self, unified: str) -> str:
        """What one answer of `hedge_mode` holds for: "*" where the mode is the whole
        account's (read once), else the symbol (read once per symbol)."""
        ...

    def attached_stop_params(self, stop: OrderIntent) -> dict[str, Any]:
        """Parameters that send `stop` with its entry (only where `market_filters` sets
        `entry_carries_stop`)."""
        ...

    async def done_orders(
        self, exchange: Any, unified: str, since_ms: int
    ) -> list[Mapping[str, Any]]:
        """The symbol's orders that ended (filled, cancelled) since `since_ms`, as ccxt
        parses them (only where `market_filters` sets `entry_carries_stop`)."""
        ...

    async def find_by_id(
        self, exchange: Any, unified: str, exchange_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """The ccxt order with this exchange id, open or done; None (or ccxt's
        OrderNotFound) if the venue has none."""
        ...

    def by_id_params(self, conditional: bool) -> dict[str, Any]:
        """Parameters to fetch or cancel an order by exchange id."""
        ...

    def by_client_id_params(self, client_order_id: str, conditional: bool) -> dict[str, Any]:
        """Parameters naming an order by our client id (to cancel it)."""
        ...

    async def find(
        self, exchange: Any, unified: str, client_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """The ccxt order with our client id, open or done; None if the venue has none.
        May raise ccxt's OrderNotFound (the caller maps it to None)."""
        ...

    def executed_order_id(self, order: Mapping[str, Any], conditional: bool) -> str | None:
        """The id of the matching-engine order whose trades are this order's fills."""
        ...

    async def open_orders(
        self, exchange: Any, unified: str | None
    ) -> list[tuple[Mapping[str, Any], bool]]:
        """Every open order of a symbol (None: of the account), each with whether the
        venue lists it as conditional (`True`) or leaves it to the order (`False`)."""
        ...

    async def mark_price(self, exchange: Any, unified: str) -> Decimal | None:
        """The mark price of one symbol, exact; None if the venue gave none."""
        ...

    trade_history_params: tuple[dict[str, Any], ...]
    """`fetch_my_trades` params, one call each, that together list every execution
    that traded a position (ccxt's Bybit asks for `execType` Trade only)."""

    funding_page: int
    """Funding rows read in one call at a close (the venue's most)."""

    funding_rate_page: int
    """Rows of the market's funding-rate history (ccxt `fetch_funding_rate_history`)
    read in one call (the venue's most)."""

    def funding_amount(self, income: Mapping[str, Any]) -> Decimal:
        """One funding settlement of ccxt's `fetch_funding_history` (its `info`), as
        the account received it: positive received, negative paid."""
        ...

    async def trade_origin(
        self, exchange: Any, unified: str, trade: Mapping[str, Any]
    ) -> tuple[str | None, bool]:
        """Who placed the order of one of the account's trades (a ccxt trade): its
        client order id (None if the exchange gives none) and whether it is the
        exchange's liquidation of the position."""
        ...

    async def klines(
        self, exchange: Any, symbol: str, timeframe: str, limit: int
    ) -> list[list[Any]]:
        """The last `limit` raw candles [open time ms, open, high, low, close, ...],
        oldest first, prices as the venue wrote them."""
        ...


def venue_for(exchange_id: str) -> Venue:
    """The `Venue` of a ccxt exchange id ("binanceusdm", "bybit"); ValueError if unknown."""
    from activities.exchange.binance_venue import BinanceVenue
    from activities.exchange.bybit_venue import BybitVenue

    if exchange_id.startswith("binance"):
        return BinanceVenue()
    if exchange_id.startswith("bybit"):
        return BybitVenue()
    raise ValueError(f"no venue for exchange {exchange_id!r}: binance and bybit are supported")
