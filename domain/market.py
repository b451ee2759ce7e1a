"""Exchange trading filters and directional rounding of prices and quantities.

Every price and quantity is a `Decimal`. Rounding is always *directional* and
chosen by what is safe, never "to nearest" (ccxt's `price_to_precision` rounds to
nearest, which can move a stop towards the market; see notes/ccxt.md §4).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from domain.types import Side


def _reject_float(value: object) -> object:
    """Refuse binary floats before pydantic converts them: 0.1 is not 0.1."""
    if isinstance(value, float):
        raise ValueError(
            "float is not accepted for prices, quantities or money; use Decimal or str"
        )
    return value


Amount = Annotated[Decimal, BeforeValidator(_reject_float), Field(allow_inf_nan=False)]
"""Any finite money amount (PnL, fees); may be negative."""

Price = Annotated[Amount, Field(gt=0)]
"""A strictly positive, finite price."""

Quantity = Annotated[Amount, Field(ge=0)]
"""A non-negative, finite quantity (contracts) or value."""

PositiveQuantity = Annotated[Amount, Field(gt=0)]
"""A strictly positive, finite quantity (contracts)."""


class FilterViolation(StrEnum):
    """Why an order would be refused by the exchange's filters."""

    QTY_NOT_POSITIVE = "qty_not_positive"
    PRICE_NOT_POSITIVE = "price_not_positive"
    QTY_OFF_STEP = "qty_off_step"
    BELOW_MIN_QTY = "below_min_qty"
    ABOVE_MAX_QTY = "above_max_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"


class MarketFilters(BaseModel):
    """One symbol's trading rules, as loaded from the exchange's market info.

    `tick_size` and `step_size` are the price and quantity increments; notional is
    `qty * price * contract_size` in the quote currency.
    """

    model_config = ConfigDict(frozen=True)

    symbol: str = Field(min_length=1)
    tick_size: Price
    step_size: PositiveQuantity
    min_qty: Quantity
    max_qty: PositiveQuantity | None = None
    min_notional: Quantity = Decimal(0)
    contract_size: Price = Decimal(1)
    # How the venue moves a resting stop. True: its trigger is amended in place, so
    # the position has one stop throughout (Bybit). False: a move places the new
    # stop before cancelling the old (Binance, whose conditional orders cannot be
    # amended). Runs recorded before this field read it as False.
    stop_moves_in_place: bool = False
    # Whether an entry is sent with its stop-loss attached, live before the entry
    # fills, so the position is never without a stop (Bybit's position TP/SL). False:
    # the stop follows the fill as an order of its own (Binance).
    entry_carries_stop: bool = False

    @model_validator(mode="after")
    def _max_above_min(self) -> MarketFilters:
        if self.max_qty is not None and self.max_qty < self.min_qty:
            raise ValueError("max_qty must not be below min_qty")
        return self

    def notional(self, qty: Decimal, price: Decimal) -> Decimal:
        """Quote value of `qty` contracts at `price`."""
        return qty * price * self.contract_size


def _snap(value: Decimal, increment: Decimal, rounding: str) -> Decimal:
    if increment <= 0:
        raise ValueError(f"increment must be positive, got {increment}")
    # quotient is exact or correctly rounded at 28 digits; only its integral part
    # matters, so the snap is exact for any realistic price.
    steps = (value / increment).to_integral_value(rounding=rounding)
    return steps * increment


def round_price_down(price: Decimal, tick: Decimal) -> Decimal:
    """Largest multiple of `tick` that is <= `price`."""
    return _snap(price, tick, ROUND_FLOOR)


def round_price_up(price: Decimal, tick: Decimal) -> Decimal:
    """Smallest multiple of `tick` that is >= `price`."""
    return _snap(price, tick, ROUND_CEILING)


def round_qty_down(qty: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of `step` that is <= `qty`: never order more than sized."""
    return _snap(qty, step, ROUND_FLOOR)


def is_multiple(value: Decimal, increment: Decimal) -> bool:
    """True when `value` is an exact multiple of `increment`."""
    return value % increment == 0


def stop_price_for(side: Side, raw_price: Decimal, filters: MarketFilters) -> Decimal:
    """Snap a protective stop to the tick, rounding *away from the market*.

    A long's stop sells below the price, so it rounds down; a short's stop buys
    above the price, so it rounds up. The result never lies closer to the market
    than `raw_price`, so rounding can never make a stop trigger early.
    """
    if side is Side.LONG:
        return round_price_down(raw_price, filters.tick_size)
    return round_price_up(raw_price, filters.tick_size)


def check_order(
    qty: Decimal,
    price: Decimal,
    filters: MarketFilters,
    *,
    reduce_only: bool = False,
) -> FilterViolation | None:
    """First filter the order `qty` at (trigger or expected) `price` breaks, or None.

    `price` only values the order: a market order's reference price (mark) need
    not lie on the tick, so it is not tick-checked; snap trigger prices with
    `stop_price_for` before calling.

    The min-notional rule is skipped for reduce-only orders: Binance exempts them
    (-4164 "... unless you choose reduce only") and a stop or close must never be
    refused for being small.
    """
    if qty <= 0:
        return FilterViolation.QTY_NOT_POSITIVE
    if price <= 0:
        return FilterViolation.PRICE_NOT_POSITIVE
    if not is_multiple(qty, filters.step_size):
        return FilterViolation.QTY_OFF_STEP
    if qty < filters.min_qty:
        return FilterViolation.BELOW_MIN_QTY
    if filters.max_qty is not None and qty > filters.max_qty:
        return FilterViolation.ABOVE_MAX_QTY
    if not reduce_only and filters.notional(qty, price) < filters.min_notional:
        return FilterViolation.BELOW_MIN_NOTIONAL
    return None
