"""Messages between workflows and exchange activities (pure data).

They live in `domain/` so a workflow can build them without importing the
activity code (and so without ccxt in the workflow sandbox).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.journal import JournalEntry
from domain.market import MarketFilters, Price
from domain.orders import OrderIntent, OrderView
from domain.sizing import StopRule
from domain.types import Side


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str


class PlaceOrderRequest(_Request):
    """Place `intent`; `look_up_first` when a previous attempt's outcome is unknown.

    `position_id` (the workflow sets it: f"{workflow_id}/{first_execution_run_id}")
    makes the activity journal the order before sending it (domain.journal); a
    caller that is not a position workflow leaves it None and nothing is journaled.
    """

    intent: OrderIntent
    look_up_first: bool = False
    position_id: str | None = None
    # The position's mode (`PositionSpec.hedge_mode`): refused, nothing sent, when it
    # is not the account's (None: not a position's order, not checked).
    hedge_mode: bool | None = None
    # A stop on a venue whose entries carry their stop, after an unsure placement: the
    # stop-loss the position already has (its entry's, whose answer was lost) is taken
    # as this stop, moved to its level, instead of a second one beside it.
    take_position_stop: bool = False
    # With `take_position_stop`: when the entry filled, on the exchange's clock. A
    # stop-loss of the position's that has fired since then (before the workflow found
    # the entry) is this stop, filled; the position is then flat, closed by it.
    position_stop_fired_since: AwareDatetime | None = None


class OrderRequest(_Request):
    """Find, cancel or read fills of one of our orders, by client id (and exchange id)."""

    symbol: str
    client_order_id: str
    exchange_order_id: str | None = None
    conditional: bool = False


class AmendStopRequest(_Request):
    """Move one of our resting stops to `trigger_price` in place (same order, same
    client id): only on a venue whose filters say `stop_moves_in_place`."""

    symbol: str
    client_order_id: str
    exchange_order_id: str | None = None
    trigger_price: Price
    # The position's own stop (`OrderRef.position_stop`): moved through the position.
    position_stop: bool = False
    # The position's side (names the position on a hedge-mode account).
    side: Side | None = None


class ExchangeOrderRequest(_Request):
    """Cancel one order known by its exchange id only (an order that is not ours)."""

    symbol: str
    exchange_order_id: str
    conditional: bool = False


class AccountRequest(_Request):
    """Anything about the account as a whole (every symbol)."""


class SymbolRequest(_Request):
    """Anything about one symbol of the account. `side`: the position's side, which
    names the position on a hedge-mode account (one-way: the symbol's, whatever
    its side)."""

    symbol: str
    side: Side | None = None


class OutsideExitRequest(SymbolRequest):
    """What closed a `position_side` position outside posguard since `since` (the
    position's open): by hand on the exchange, or by liquidation."""

    position_side: Side
    since: AwareDatetime


class FundingRequest(SymbolRequest):
    """Funding received or paid on the symbol since `since` (the position's open).

    `position_side`: on a hedge-mode account, the position's side; only that side's
    funding is summed (the long and the short of a symbol each pay their own). None
    (one-way mode): every funding payment of the symbol counts.
    """

    since: AwareDatetime
    position_side: Side | None = None


class CandlesRequest(SymbolRequest):
    """The last `limit` candles of one symbol on `timeframe` (e.g. "5m")."""

    timeframe: str
    limit: int


class ExchangePosition(BaseModel):
    """A position as the exchange reports it; qty 0 means flat.

    `hedged`: one side of a hedge-mode symbol (a long and a short may both be held,
    each its own position); `side` then names the slot, whatever its quantity.
    """

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: Side | None
    qty: Decimal
    hedged: bool = False
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None

    @property
    def is_flat(self) -> bool:
        return self.qty == 0


class AccountSnapshot(BaseModel):
    """One exchange account read whole: every position, then every open order.

    `positions` holds the non-flat positions only (a symbol not listed is flat);
    `orders` every open order of every symbol, regular and conditional
    (`is_conditional` set on Binance algo orders). Positions are read first, so
    an order that fills between the two reads is seen gone, never resting on a
    position that looks flat.
    """

    model_config = ConfigDict(frozen=True)

    positions: list[ExchangePosition]
    orders: list[OrderView]


class EntryWithStopRequest(_Request):
    """Place the entry and, as soon as it fills, its stop for the filled quantity.

    Both client ids are chosen by the workflow beforehand, so a retry looks both
    up instead of placing anything twice. The stop price is derived from the
    fill price with `domain.sizing.stop_level`, exactly as the workflow would.
    """

    entry: OrderIntent
    stop_client_order_id: str
    stop: StopRule
    filters: MarketFilters
    look_up_first: bool = False
    # Journal both orders before sending them (see PlaceOrderRequest.position_id).
    position_id: str | None = None
    # See PlaceOrderRequest.hedge_mode.
    hedge_mode: bool | None = None
    # After the fill, how long the activity itself keeps retrying a transient
    # failure of the stop (200 ms doubling to 2 s) before returning it as stop_error.
    stop_retry_for_s: float = Field(default=20, ge=0)  # float ok: seconds
    # How long an entry the exchange still reports unfilled is polled for its fill.
    entry_fill_wait_s: float = Field(default=5, ge=0)  # float ok: seconds


class EntryWithStopResult(BaseModel):
    """The entry as the exchange reports it, and what became of its stop.

    `stop` is None when no stop was placed: then `stop_error` says why (an
    `ErrorType` value), or both are None when the entry had not filled yet.
    """

    model_config = ConfigDict(frozen=True)

    entry: OrderView
    stop: OrderView | None = None
    stop_price: Decimal | None = None
    stop_error: str | None = None
    stop_ambiguous: bool = False
    # With stop_error "ClientIdReused": the order journaled under the stop's client id.
    stop_conflict: JournalEntry | None = None
