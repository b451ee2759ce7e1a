"""Orders as posguard intends them and as the exchange reports them.

An `OrderIntent` is what the workflow asks the gateway to place: built only by
the constructors below, so an exit can never be sent on the entry side and every
exit is reduce-only. An `OrderView` is the gateway's normalised answer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from domain.market import Amount, PositiveQuantity, Price, Quantity
from domain.types import OrderSide, Side


class OrderKind(StrEnum):
    """The role an order plays in a position's life."""

    ENTRY = "entry"
    STOP = "stop"
    EMERGENCY_STOP = "emergency_stop"
    CLOSE = "close"
    TAKE_PROFIT = "take_profit"


class OrderType(StrEnum):
    """Order types posguard sends (ccxt type plus trigger param, see ccxt.md §1)."""

    MARKET = "market"
    STOP_MARKET = "stop_market"
    TAKE_PROFIT_MARKET = "take_profit_market"


class WorkingType(StrEnum):
    """Price that fires a conditional order; Bybit calls it `triggerBy`."""

    MARK_PRICE = "MARK_PRICE"
    CONTRACT_PRICE = "CONTRACT_PRICE"


_TYPE_OF_KIND: dict[OrderKind, OrderType] = {
    OrderKind.ENTRY: OrderType.MARKET,
    OrderKind.CLOSE: OrderType.MARKET,
    OrderKind.STOP: OrderType.STOP_MARKET,
    OrderKind.EMERGENCY_STOP: OrderType.STOP_MARKET,
    OrderKind.TAKE_PROFIT: OrderType.TAKE_PROFIT_MARKET,
}


class OrderIntent(BaseModel):
    """One order the workflow wants on the exchange, identified by its client id.

    Invariants (checked on construction and on deserialisation): the type matches
    the kind; conditional types carry a trigger price and market orders do not;
    every order except the entry is reduce-only; qty is positive.
    """

    model_config = ConfigDict(frozen=True)

    client_order_id: str = Field(min_length=1, max_length=36)
    kind: OrderKind
    symbol: str = Field(min_length=1)
    side: OrderSide
    type: OrderType
    qty: PositiveQuantity
    trigger_price: Price | None = None
    reduce_only: bool
    working_type: WorkingType = WorkingType.MARK_PRICE

    @model_validator(mode="after")
    def _consistent(self) -> OrderIntent:
        if self.type is not _TYPE_OF_KIND[self.kind]:
            raise ValueError(f"{self.kind} orders are {_TYPE_OF_KIND[self.kind]}, not {self.type}")
        if (self.type is OrderType.MARKET) != (self.trigger_price is None):
            raise ValueError("trigger_price is required for conditional orders only")
        if self.reduce_only != (self.kind is not OrderKind.ENTRY):
            raise ValueError("every order except the entry must be reduce-only")
        return self

    def under_client_id(self, client_order_id: str) -> OrderIntent:
        """The same order under another client id (its first id named another order)."""
        return self.model_copy(update={"client_order_id": client_order_id})

    @property
    def is_conditional(self) -> bool:
        """True for orders that rest until a trigger price (Binance algo orders)."""
        return self.trigger_price is not None


def entry_intent(client_order_id: str, symbol: str, side: Side, qty: Decimal) -> OrderIntent:
    """Market order opening `qty` of a `side` position."""
    return OrderIntent(
        client_order_id=client_order_id,
        kind=OrderKind.ENTRY,
        symbol=symbol,
        side=side.entry_order_side,
        type=OrderType.MARKET,
        qty=qty,
        reduce_only=False,
    )


def close_intent(client_order_id: str, symbol: str, side: Side, qty: Decimal) -> OrderIntent:
    """Reduce-only market order closing `qty` of a `side` position."""
    return OrderIntent(
        client_order_id=client_order_id,
        kind=OrderKind.CLOSE,
        symbol=symbol,
        side=side.exit_order_side,
        type=OrderType.MARKET,
        qty=qty,
        reduce_only=True,
    )


def stop_intent(
    client_order_id: str,
    symbol: str,
    side: Side,
    qty: Decimal,
    trigger_price: Decimal,
    *,
    emergency: bool = False,
) -> OrderIntent:
    """Reduce-only stop-market on mark price protecting `qty` of a `side` position.

    `trigger_price` must already be snapped with `market.stop_price_for`.
    """
    return OrderIntent(
        client_order_id=client_order_id,
        kind=OrderKind.EMERGENCY_STOP if emergency else OrderKind.STOP,
        symbol=symbol,
        side=side.exit_order_side,
        type=OrderType.STOP_MARKET,
        qty=qty,
        trigger_price=trigger_price,
        reduce_only=True,
    )


def take_profit_intent(
    client_order_id: str, symbol: str, side: Side, qty: Decimal, trigger_price: Decimal
) -> OrderIntent:
    """Reduce-only take-profit-market on mark price for `qty` of a `side` position."""
    return OrderIntent(
        client_order_id=client_order_id,
        kind=OrderKind.TAKE_PROFIT,
        symbol=symbol,
        side=side.exit_order_side,
        type=OrderType.TAKE_PROFIT_MARKET,
        qty=qty,
        trigger_price=trigger_price,
        reduce_only=True,
    )


class OrderStatus(StrEnum):
    """Normalised order status across exchanges."""

    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """True when the order can no longer fill or change."""
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)


def status_from_ccxt(status: str | None, filled: Decimal | None) -> OrderStatus:
    """Map a ccxt unified order status (plus filled qty) to `OrderStatus`.

    ccxt says "closed" for fully done orders; for Binance algo stops "closed" means
    triggered and the executed qty lives on the triggered order. An "open" order
    with a fill is partially filled. Bybit's create answer has status None, which
    is UNKNOWN: the caller must fetch the order to learn more.
    """
    match status:
        case "open":
            if filled is not None and filled > 0:
                return OrderStatus.PARTIALLY_FILLED
            return OrderStatus.OPEN
        case "closed":
            return OrderStatus.FILLED
        case "canceled" | "cancelled":
            return OrderStatus.CANCELED
        case "expired":
            return OrderStatus.EXPIRED
        case "rejected":
            return OrderStatus.REJECTED
        case _:
            return OrderStatus.UNKNOWN


class OrderView(BaseModel):
    """The exchange's current view of one order, normalised by the gateway.

    `client_order_id` is None for orders placed without one (foreign orders).
    `fee` is in the quote currency (the gateway converts or reports 0).
    """

    model_config = ConfigDict(frozen=True)

    exchange_order_id: str = Field(min_length=1)
    client_order_id: str | None = None
    symbol: str = Field(min_length=1)
    side: OrderSide | None = None
    status: OrderStatus
    qty: Quantity | None = None
    filled_qty: Quantity = Decimal(0)
    average_price: Price | None = None
    fee: Amount = Decimal(0)
    trigger_price: Price | None = None
    reduce_only: bool | None = None
    # A Binance closePosition stop: closes whatever is held, reduce-only by nature.
    close_position: bool = False
    is_conditional: bool = False
    updated_at: AwareDatetime | None = None
    # A stop-loss that lives on the position rather than as an order of its own
    # (Bybit's position TP/SL, sent with the entry): the exchange gives it no client
    # id, closes the whole position when it fires, and drops it when the position
    # closes. The gateway names it with the client id posguard journaled for it.
    position_stop: bool = False
    # Hedge mode: the side of the position the order belongs to (Binance
    # `positionSide` LONG/SHORT, Bybit `positionIdx` 1/2). None in one-way mode.
    position_side: Side | None = None

    @property
    def is_final(self) -> bool:
        """True when the order can no longer fill or change."""
        return self.status.is_final


class OrderRef(BaseModel):
    """What a position remembers about one of its live orders."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str = Field(min_length=1)
    exchange_order_id: str | None = None
    qty: PositiveQuantity
    trigger_price: Price | None = None
    # The position's own stop-loss (see `OrderView.position_stop`): found by its
    # exchange id, moved through the position. Runs recorded before it read False.
    position_stop: bool = False

    def with_exchange_id(self, exchange_order_id: str) -> OrderRef:
        """The same order, now known on the exchange under `exchange_order_id`."""
        return self.model_copy(update={"exchange_order_id": exchange_order_id})

    def covering(self, qty: Decimal) -> OrderRef:
        """The same order, now covering `qty` (a position stop covers whatever is held)."""
        return self.model_copy(update={"qty": qty})


class Fill(BaseModel):
    """One execution (trade) of an order; `fee` is in the quote currency.

    `trade_id` identifies the execution on the exchange, so a fill reported twice
    (REST and stream) is counted once.
    """

    model_config = ConfigDict(frozen=True)

    trade_id: str = Field(min_length=1)
    client_order_id: str | None = None
    qty: PositiveQuantity
    price: Price
    fee: Amount = Decimal(0)
    at: AwareDatetime | None = None


class OutsideOrder(BaseModel):
    """An order posguard did not place that reduced one of its positions: a close by
    hand on the exchange, or the exchange's own liquidation (`liquidation`), with its
    executions. `client_order_id` is the exchange's (Binance names a liquidation
    `autoclose-...`), or None when the exchange gives none."""

    model_config = ConfigDict(frozen=True)

    exchange_order_id: str = Field(min_length=1)
    client_order_id: str | None = None
    side: OrderSide
    liquidation: bool = False
    fills: tuple[Fill, ...] = ()

    @property
    def record_id(self) -> str:
        """Its key in the `orders` table: the exchange's client id, else one made of
        its exchange id (never one of posguard's own ids, which carry its prefix)."""
        return self.client_order_id or f"outside-{self.exchange_order_id}"


class OutsideExit(BaseModel):
    """What closed a position outside posguard, as the exchange's trade history shows
    it: the outside orders on the exit side since the position opened."""

    model_config = ConfigDict(frozen=True)

    orders: tuple[OutsideOrder, ...] = ()
    # posguard's own orders (its client ids) that traded on the exit side since: the
    # workflow books those of its own position it has not booked (an order whose
    # placement's outcome it never learned, then filled)
    own: tuple[OutsideOrder, ...] = ()

    def since(self, at: datetime) -> OutsideExit:
        """The same, with the outside orders' fills before `at` left out (a fill
        without a time is kept)."""
        kept = (
            o.model_copy(update={"fills": tuple(f for f in o.fills if f.at is None or f.at >= at)})
            for o in self.orders
        )
        return self.model_copy(update={"orders": tuple(o for o in kept if o.fills)})

    @property
    def liquidation(self) -> bool:
        """True when the exchange liquidated the position (any of it)."""
        return any(o.liquidation for o in self.orders)

    @property
    def fills(self) -> list[Fill]:
        return [f for o in self.orders for f in o.fills]
